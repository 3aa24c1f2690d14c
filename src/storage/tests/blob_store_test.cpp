// The blob store over its three engines (files, memory, JetStream with a real nats-server): whole
// values replaced whole, values larger than one JetStream message, listing by prefix, removal,
// keys that are not safe paths, and a value written through one JetStream engine read through
// another (two nodes).
#include "storage/blob_store.hpp"

#include "common/crypto.hpp"
#include "nats/tests/nats_server.hpp"
#include "storage/engine.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>

namespace iothub::storage {
namespace {

class BlobStore : public ::testing::TestWithParam<std::string> {
  protected:
    void SetUp() override {
        const auto& kind = GetParam();
        if (kind == "memory") {
            store_ = open_memory_blobs();
        } else if (kind == "files") {
            dir_ = std::filesystem::temp_directory_path() / ("iothub-blobs-" + random_uuid());
            auto s = open_file_blobs(dir_);
            ASSERT_TRUE(s) << s.error().message();
            store_ = std::move(*s);
        } else {
            nats_ = std::make_unique<nats::testing::nats_server>();
            ASSERT_FALSE(nats_->url().empty()) << "nats-server did not start";
            auto e = open_jetstream(settings());
            ASSERT_TRUE(e) << e.error().message();
            engine_ = std::move(*e);
        }
    }
    void TearDown() override {
        engine_.reset();
        store_.reset();
        if (!dir_.empty()) std::filesystem::remove_all(dir_);
    }
    jetstream_settings settings() const {
        jetstream_settings js;
        js.connection.servers = {nats_->url()};
        js.prefix = "T";
        return js;
    }
    blob_store& store() { return engine_ ? *engine_->shared_blobs() : *store_; }

    std::filesystem::path dir_;
    std::unique_ptr<nats::testing::nats_server> nats_;
    std::unique_ptr<engine> engine_;
    std::unique_ptr<blob_store> store_;
};

// The value, or the error's words, so a failure reads as a mismatch.
std::string value(blob_store& s, std::string_view key) {
    auto v = s.get(key);
    return v ? *v : "<" + v.error().message() + ">";
}

std::vector<std::string> keys(const std::vector<blob_entry>& entries) {
    std::vector<std::string> out;
    for (const auto& e : entries) out.push_back(e.key);
    std::sort(out.begin(), out.end());
    return out;
}

TEST_P(BlobStore, ValuesAreReplacedWhole) {
    auto& s = store();
    EXPECT_EQ(s.get("c/d/a.txt").error().code(), errc::not_found);
    ASSERT_TRUE(s.put("c/d/a.txt", "first"));
    EXPECT_EQ(value(s, "c/d/a.txt"), "first");
    ASSERT_TRUE(s.put("c/d/a.txt", "second, longer"));
    EXPECT_EQ(value(s, "c/d/a.txt"), "second, longer");
    ASSERT_TRUE(s.put("c/d/empty", ""));
    EXPECT_EQ(value(s, "c/d/empty"), "");
}

TEST_P(BlobStore, LargeValuesRoundTrip) {
    auto& s = store();
    std::string big(700 * 1024 + 13, '\0');
    for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 7 % 251);
    ASSERT_TRUE(s.put("big/one", big));
    auto back = s.get("big/one");
    ASSERT_TRUE(back) << back.error().message();
    EXPECT_TRUE(*back == big) << "sizes " << back->size() << " and " << big.size();
    // Rewritten smaller: nothing of the old value remains in the new one.
    ASSERT_TRUE(s.put("big/one", "small"));
    EXPECT_EQ(value(s, "big/one"), "small");
    auto listed = s.list("big/");
    ASSERT_TRUE(listed);
    ASSERT_EQ(listed->size(), 1u);
    EXPECT_EQ((*listed)[0].size, 5u);
}

TEST_P(BlobStore, ListsByPrefixAndRemoves) {
    auto& s = store();
    ASSERT_TRUE(s.put(".staging/abc/01", "x"));
    ASSERT_TRUE(s.put(".staging/abc/02", "yy"));
    ASSERT_TRUE(s.put(".staging/def/01", "z"));
    ASSERT_TRUE(s.put("files/c/dev/name with spaces.bin", "w"));
    auto staged = s.list(".staging/abc/");
    ASSERT_TRUE(staged) << staged.error().message();
    EXPECT_EQ(keys(*staged), (std::vector<std::string>{".staging/abc/01", ".staging/abc/02"}));
    for (const auto& e : *staged) {
        EXPECT_EQ(e.size, e.key.ends_with("02") ? 2u : 1u);
        EXPECT_LT(std::chrono::abs(e.modified - now()), std::chrono::minutes(1));
    }
    auto all = s.list("");
    ASSERT_TRUE(all) << all.error().message();
    EXPECT_EQ(keys(*all),
              (std::vector<std::string>{".staging/abc/01", ".staging/abc/02", ".staging/def/01",
                                        "files/c/dev/name with spaces.bin"}));
    ASSERT_TRUE(s.remove(".staging/abc/01"));
    ASSERT_TRUE(s.remove(".staging/abc/01"));  // absent is fine
    auto rest = s.list(".staging/");
    ASSERT_TRUE(rest) << rest.error().message();
    EXPECT_EQ(keys(*rest), (std::vector<std::string>{".staging/abc/02", ".staging/def/01"}));
    EXPECT_EQ(s.get(".staging/abc/01").error().code(), errc::not_found);
}

TEST_P(BlobStore, RefusesKeysThatAreNotSafePaths) {
    auto& s = store();
    for (std::string_view bad : {"", "/a", "a/", "a//b", "../a", "a/./b", "a\\b"})
        EXPECT_EQ(s.put(bad, "x").error().code(), errc::argument_invalid) << bad;
    EXPECT_EQ(s.put(std::string_view("a\0b", 3), "x").error().code(), errc::argument_invalid);
}

TEST_P(BlobStore, AnotherNodeReadsWhatOneWrote) {
    if (!engine_) GTEST_SKIP() << "only the JetStream engine is shared";
    auto other = open_jetstream(settings());
    ASSERT_TRUE(other) << other.error().message();
    std::string big(300 * 1024, 'b');
    ASSERT_TRUE(store().put("shared/blob", big));
    auto back = (*other)->shared_blobs()->get("shared/blob");
    ASSERT_TRUE(back) << back.error().message();
    EXPECT_EQ(back->size(), big.size());
    ASSERT_TRUE((*other)->shared_blobs()->remove("shared/blob"));
    EXPECT_EQ(store().get("shared/blob").error().code(), errc::not_found);
}

INSTANTIATE_TEST_SUITE_P(Engines, BlobStore, ::testing::Values("memory", "files", "jetstream"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace iothub::storage
