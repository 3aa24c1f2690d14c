// One suite, run against every engine, so that they cannot drift apart.
#include "common/crypto.hpp"
#include "common/encoding.hpp"
#include "nats/tests/nats_server.hpp"
#include "storage/engine.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <thread>

namespace iothub::storage {
namespace {

struct temp_dir {
    std::filesystem::path path =
        std::filesystem::temp_directory_path() / ("iothub-kv-" + hex_encode(random_bytes(6)));
    ~temp_dir() { std::filesystem::remove_all(path); }
};

class KvStore : public ::testing::TestWithParam<std::string> {
  protected:
    void SetUp() override { reopen(); }

    void reopen() {
        engine_.reset();
        if (GetParam() == "memory") {
            engine_ = open_memory();
        } else if (GetParam() == "jetstream") {
            if (!nats_) nats_ = std::make_unique<nats::testing::nats_server>();
            ASSERT_FALSE(nats_->url().empty()) << "nats-server did not start";
            jetstream_settings js;
            js.connection.servers = {nats_->url()};
            auto e = open_jetstream(js);
            ASSERT_TRUE(e) << e.error().message();
            engine_ = std::move(*e);
        } else {
            auto e = open_rocksdb({dir_.path, true, 2});
            ASSERT_TRUE(e) << e.error().message();
            engine_ = std::move(*e);
        }
    }
    kv_store& kv() { return engine_->kv(); }

    temp_dir dir_;
    std::unique_ptr<nats::testing::nats_server> nats_;
    std::unique_ptr<engine> engine_;
};

TEST_P(KvStore, PutGetRemove) {
    EXPECT_FALSE(*kv().get("a"));
    auto v1 = kv().put("a", "one");
    ASSERT_TRUE(v1);
    auto got = kv().get("a");
    ASSERT_TRUE(got && *got);
    EXPECT_EQ((*got)->value, "one");
    EXPECT_EQ((*got)->version, *v1);
    ASSERT_TRUE(kv().remove("a"));
    EXPECT_FALSE(*kv().get("a"));
    auto again = kv().remove("a");
    ASSERT_FALSE(again);
    EXPECT_EQ(again.error().code(), errc::not_found);
}

TEST_P(KvStore, VersionsIncreaseAcrossKeysAndNeverRepeatAfterDelete) {
    auto a1 = *kv().put("a", "1");
    auto b1 = *kv().put("b", "1");
    auto a2 = *kv().put("a", "2");
    EXPECT_LT(a1, b1);
    EXPECT_LT(b1, a2);
    ASSERT_TRUE(kv().remove("a"));
    auto a3 = *kv().put("a", "3");
    EXPECT_GT(a3, a2);
}

TEST_P(KvStore, ConditionsFailWithDistinctCodesAndChangeNothing) {
    auto v = *kv().put("k", "v", precondition::absent());
    auto dup = kv().put("k", "w", precondition::absent());
    ASSERT_FALSE(dup);
    EXPECT_EQ(dup.error().code(), errc::already_exists);

    auto stale = kv().put("k", "w", precondition::version(v + 100));
    ASSERT_FALSE(stale);
    EXPECT_EQ(stale.error().code(), errc::precondition_failed);

    auto missing = kv().put("nope", "w", precondition::exists());
    ASSERT_FALSE(missing);
    EXPECT_EQ(missing.error().code(), errc::not_found);
    auto missing_v = kv().put("nope", "w", precondition::version(1));
    ASSERT_FALSE(missing_v);
    EXPECT_EQ(missing_v.error().code(), errc::not_found);

    auto stale_rm = kv().remove("k", precondition::version(v + 1));
    ASSERT_FALSE(stale_rm);
    EXPECT_EQ(stale_rm.error().code(), errc::precondition_failed);

    EXPECT_EQ((*kv().get("k"))->value, "v");
    EXPECT_FALSE(*kv().get("nope"));
    auto v2 = kv().put("k", "x", precondition::version(v));
    ASSERT_TRUE(v2);
    EXPECT_TRUE(kv().put("k", "y", precondition::exists()));
}

TEST_P(KvStore, ApplyCommitsTheWritesWhoseConditionsHold) {
    ASSERT_TRUE(kv().put("exists", "x"));
    std::vector<kv_write> writes{
        {kv_write::op::put, "new1", "a", precondition::absent()},
        {kv_write::op::put, "exists", "b", precondition::absent()},
        {kv_write::op::remove, "missing", "", precondition::none()},
        {kv_write::op::put, "new2", "c", precondition::none()},
    };
    auto results = kv().apply(writes);
    ASSERT_EQ(results.size(), 4u);
    EXPECT_TRUE(results[0]);
    EXPECT_EQ(results[1].error().code(), errc::already_exists);
    EXPECT_EQ(results[2].error().code(), errc::not_found);
    EXPECT_TRUE(results[3]);
    EXPECT_EQ((*kv().get("new1"))->value, "a");
    EXPECT_EQ((*kv().get("exists"))->value, "x");
    EXPECT_EQ((*kv().get("new2"))->value, "c");
}

TEST_P(KvStore, ScanPagesThroughAPrefixInKeyOrder) {
    for (auto k : {"d/c", "d/a", "d/b", "e/a", "c/z", "d/d"}) ASSERT_TRUE(kv().put(k, k));
    auto page1 = kv().scan("d/", "", 2);
    ASSERT_TRUE(page1);
    ASSERT_EQ(page1->size(), 2u);
    EXPECT_EQ((*page1)[0].key, "d/a");
    EXPECT_EQ((*page1)[1].key, "d/b");
    auto page2 = kv().scan("d/", page1->back().key, 10);
    ASSERT_TRUE(page2);
    ASSERT_EQ(page2->size(), 2u);
    EXPECT_EQ((*page2)[0].key, "d/c");
    EXPECT_EQ((*page2)[1].key, "d/d");
    EXPECT_EQ((*page2)[1].data.value, "d/d");
    EXPECT_TRUE(kv().scan("x/", "", 10)->empty());
}

TEST_P(KvStore, ConcurrentCompareAndSetLetsExactlyOneWriterWinEachRound) {
    ASSERT_TRUE(kv().put("counter", "0"));
    std::atomic<int> wins{0};
    constexpr int threads = 4, rounds = 50;
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
        pool.emplace_back([&] {
            for (int r = 0; r < rounds; ++r) {
                for (;;) {
                    auto cur = *kv().get("counter");
                    int n = std::stoi((*cur).value);
                    if (kv().put("counter", std::to_string(n + 1),
                                 precondition::version((*cur).version))) {
                        ++wins;
                        break;
                    }
                }
            }
        });
    }
    for (auto& th : pool) th.join();
    EXPECT_EQ(wins.load(), threads * rounds);
    EXPECT_EQ((*kv().get("counter"))->value, std::to_string(threads * rounds));
}

TEST_P(KvStore, SurvivesReopenWithVersionsStillIncreasing) {
    if (GetParam() == "memory") GTEST_SKIP() << "the memory engine keeps nothing by design";
    auto v = *kv().put("persist", "yes");
    ASSERT_TRUE(kv().put("gone", "x"));
    ASSERT_TRUE(kv().remove("gone"));
    reopen();
    auto got = *kv().get("persist");
    ASSERT_TRUE(got);
    EXPECT_EQ(got->value, "yes");
    EXPECT_EQ(got->version, v);
    EXPECT_FALSE(*kv().get("gone"));
    EXPECT_GT(*kv().put("after", "z"), v) << "the version counter must survive a restart";
}

INSTANTIATE_TEST_SUITE_P(Engines, KvStore, ::testing::Values("memory", "rocksdb", "jetstream"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace iothub::storage
