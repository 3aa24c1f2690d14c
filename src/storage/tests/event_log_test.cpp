// One event-log suite for every engine.
#include "common/crypto.hpp"
#include "common/encoding.hpp"
#include "nats/tests/nats_server.hpp"
#include "storage/detail/event_codec.hpp"
#include "storage/detail/jetstream.hpp"
#include "storage/engine.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <future>
#include <thread>

namespace iothub::storage {
namespace {

event_record make(std::string body, std::string device = "dev") {
    event_record e;
    e.body = std::move(body);
    e.application_properties = {{"k", "v"}, {"empty", ""}};
    e.system_properties = {{"iothub-connection-device-id", std::move(device)}, {"message-id", "m"}};
    return e;
}

class EventLog : public ::testing::TestWithParam<std::string> {
  protected:
    void SetUp() override { open({4, {std::chrono::hours(24), 0}}); }
    // The log's clock: tests move it instead of sleeping.
    sys_time clock_ = sys_time(std::chrono::seconds(1700000000));
    void TearDown() override {
        engine_.reset();
        std::filesystem::remove_all(dir_);
    }
    void open(event_log_settings s) {
        s.clock = [this] { return clock_; };
        engine_.reset();
        if (GetParam() == "memory") {
            engine_ = open_memory(s);
        } else if (GetParam() == "jetstream") {
            if (!nats_) nats_ = std::make_unique<nats::testing::nats_server>();
            ASSERT_FALSE(nats_->url().empty()) << "nats-server did not start";
            jetstream_settings js;
            js.connection.servers = {nats_->url()};
            js.events = s;
            auto e = open_jetstream(js);
            ASSERT_TRUE(e) << e.error().message();
            engine_ = std::move(*e);
        } else {
            rocksdb_settings rs{dir_, true, 2, s};
            auto e = open_rocksdb(rs);
            ASSERT_TRUE(e) << e.error().message();
            engine_ = std::move(*e);
        }
    }
    event_log& log() { return engine_->events(); }

    std::vector<std::uint64_t> append(int p, std::vector<event_record> events) {
        std::promise<result<std::vector<std::uint64_t>>> done;
        log().append(p, std::move(events), [&](auto r) { done.set_value(std::move(r)); });
        auto r = done.get_future().get();
        EXPECT_TRUE(r) << (r ? "" : r.error().message());
        return r ? *r : std::vector<std::uint64_t>{};
    }

    std::unique_ptr<nats::testing::nats_server> nats_;
    std::filesystem::path dir_ =
        std::filesystem::temp_directory_path() / ("iothub-log-" + hex_encode(random_bytes(6)));
    std::unique_ptr<engine> engine_;
};

TEST_P(EventLog, AppendsAssignDenseSequenceNumbersPerPartition) {
    EXPECT_EQ(append(1, {make("a"), make("b")}), (std::vector<std::uint64_t>{0, 1}));
    EXPECT_EQ(append(1, {make("c")}), (std::vector<std::uint64_t>{2}));
    EXPECT_EQ(append(2, {make("x")}), (std::vector<std::uint64_t>{0}));
    auto info = log().info(1);
    EXPECT_EQ(info.begin_sequence_number, 0u);
    EXPECT_EQ(info.next_sequence_number, 3u);
    EXPECT_TRUE(log().info(0).empty());
}

TEST_P(EventLog, ReadsBackEverythingThatWasWritten) {
    append(0, {make("first"), make("second", "dev2")});
    auto events = log().read(0, 0, 10);
    ASSERT_TRUE(events);
    ASSERT_EQ(events->size(), 2u);
    EXPECT_EQ((*events)[0].record.body, "first");
    EXPECT_EQ((*events)[1].sequence_number, 1u);
    EXPECT_EQ((*events)[1].record.system_properties[0].second, "dev2");
    EXPECT_EQ((*events)[1].record.application_properties,
              (property_list{{"k", "v"}, {"empty", ""}}));
    EXPECT_LE((*events)[0].enqueued_time, (*events)[1].enqueued_time);
    EXPECT_EQ(log().read(0, 1, 10)->size(), 1u);
    EXPECT_EQ(log().read(0, 1, 0)->size(), 0u);
    EXPECT_TRUE(log().read(0, 5, 10)->empty());
    EXPECT_FALSE(log().read(9, 0, 10));
}

TEST_P(EventLog, ResolvesEveryKindOfPosition) {
    append(0, {make("a"), make("b")});
    clock_ += std::chrono::milliseconds(2);
    append(0, {make("c")});
    // The times the log gave (the engine's clock, or the JetStream stream's).
    auto times = *log().read(0, 0, 3);
    ASSERT_EQ(times.size(), 3u);
    ASSERT_LT(times[1].enqueued_time, times[2].enqueued_time);
    auto middle = times[1].enqueued_time;
    EXPECT_EQ(log().resolve(0, read_position::earliest()), 0u);
    EXPECT_EQ(log().resolve(0, read_position::latest()), 3u);
    EXPECT_EQ(log().resolve(0, read_position::after_sequence(0)), 1u);
    EXPECT_EQ(log().resolve(0, read_position::at_sequence(1)), 1u);
    EXPECT_EQ(log().resolve(0, read_position::at_sequence(99)), 3u);
    EXPECT_EQ(log().resolve(0, read_position::after_time(middle)), 2u);
    EXPECT_EQ(log().resolve(0, read_position::after_time(middle - std::chrono::hours(1))), 0u);
    EXPECT_EQ(
        log().resolve(0, read_position::after_time(times[2].enqueued_time + std::chrono::hours(1))),
        3u);
}

TEST_P(EventLog, WatchFiresOnceTheSequenceArrives) {
    std::promise<void> fired;
    bool immediate = false;
    log().watch(3, 0, [&] { fired.set_value(); });
    append(3, {make("wake")});
    EXPECT_EQ(fired.get_future().wait_for(std::chrono::seconds(5)), std::future_status::ready);
    log().watch(3, 0, [&] { immediate = true; });
    EXPECT_TRUE(immediate) << "an already present sequence notifies at once";
    bool never = false;
    auto token = log().watch(3, 5, [&] { never = true; });
    log().unwatch(token);
    append(3, {make("1"), make("2"), make("3"), make("4"), make("5")});
    EXPECT_FALSE(never);
}

TEST_P(EventLog, ConcurrentAppendersAllLandInOrderPerAppender) {
    constexpr int threads = 4, per_thread = 200;
    std::vector<std::thread> pool;
    std::atomic<int> failures{0};
    for (int t = 0; t < threads; ++t) {
        pool.emplace_back([&, t] {
            std::mutex m;
            std::condition_variable cv;
            int outstanding = 0;
            for (int i = 0; i < per_thread; ++i) {
                {
                    std::lock_guard lock(m);
                    ++outstanding;
                }
                log().append(0, {make(std::to_string(t) + ":" + std::to_string(i))}, [&](auto r) {
                    if (!r) ++failures;
                    std::lock_guard lock(m);
                    --outstanding;
                    cv.notify_one();
                });
            }
            std::unique_lock lock(m);
            cv.wait(lock, [&] { return outstanding == 0; });
        });
    }
    for (auto& th : pool) th.join();
    EXPECT_EQ(failures.load(), 0);
    auto all = log().read(0, 0, 10000);
    ASSERT_TRUE(all);
    ASSERT_EQ(all->size(), static_cast<std::size_t>(threads * per_thread));
    std::vector<int> last(threads, -1);
    for (const auto& e : *all) {
        auto colon = e.record.body.find(':');
        int t = std::stoi(e.record.body.substr(0, colon)),
            i = std::stoi(e.record.body.substr(colon + 1));
        EXPECT_EQ(i, last[static_cast<std::size_t>(t)] + 1) << "each appender's order is kept";
        last[static_cast<std::size_t>(t)] = i;
    }
}

TEST_P(EventLog, RetentionByAgeKeepsNumbersAndResumesReadersAtTheOldest) {
    if (GetParam() == "jetstream")
        GTEST_SKIP() << "the streams age events by the servers' clock (StreamsAgeEventsOut)";
    append(0, {make("old1"), make("old2")});
    auto later = clock_ + std::chrono::hours(25);  // as if a day passed
    append(0, {make("new")});
    log().enforce_retention(later);
    auto info = log().info(0);
    EXPECT_EQ(info.begin_sequence_number, 3u) << "the new event is also older than a day by then";
    EXPECT_TRUE(info.empty());
    EXPECT_TRUE(log().read(0, 0, 10)->empty());
    EXPECT_EQ(append(0, {make("after")}), (std::vector<std::uint64_t>{3}))
        << "numbers are not reused";
    log().enforce_retention(clock_);
    auto rest = log().read(0, 0, 10);
    ASSERT_EQ(rest->size(), 1u);
    EXPECT_EQ(rest->front().record.body, "after");
}

// JetStream removes events by age itself, by its own clock; the engine learns where each
// partition now begins.
TEST_P(EventLog, StreamsAgeEventsOut) {
    if (GetParam() != "jetstream") GTEST_SKIP() << "the other engines follow the hub's clock";
    open({4, {std::chrono::seconds(1), 0}});
    append(0, {make("old1"), make("old2")});
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (log().info(0).begin_sequence_number < 2 && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        log().enforce_retention(std::chrono::system_clock::now());
    }
    EXPECT_EQ(log().info(0).begin_sequence_number, 2u);
    EXPECT_TRUE(log().read(0, 0, 10)->empty());
    EXPECT_EQ(append(0, {make("new")}), (std::vector<std::uint64_t>{2}));
}

TEST_P(EventLog, RetentionByAgeDropsOnlyWhatIsOld) {
    if (GetParam() == "jetstream")
        GTEST_SKIP() << "the streams age events by the servers' clock (StreamsAgeEventsOut)";
    append(1, {make("a"), make("b")});
    clock_ += std::chrono::milliseconds(5);
    auto boundary = clock_;
    clock_ += std::chrono::milliseconds(5);
    append(1, {make("c")});
    log().enforce_retention(boundary + std::chrono::hours(24));
    auto left = log().read(1, 0, 10);
    ASSERT_EQ(left->size(), 1u);
    EXPECT_EQ(left->front().record.body, "c");
    EXPECT_EQ(log().info(1).begin_sequence_number, 2u);
}

TEST_P(EventLog, RetentionBySizeDropsTheOldestFirst) {
    open({4, {std::chrono::hours(24), 64 * 1024}});
    ASSERT_TRUE(engine_);
    const std::string payload(1024, 'x');
    // Twice: the first pass sums what the log holds, the next counts what came since.
    for (int round = 1; round <= 2; ++round) {
        for (int i = 0; i < 200; ++i) append(0, {make(payload + std::to_string(i))});
        log().enforce_retention(clock_);
        auto info = log().info(0);
        EXPECT_EQ(info.next_sequence_number, 200u * static_cast<unsigned>(round));
        auto left = log().read(0, 0, 1000);
        ASSERT_FALSE(left->empty());
        EXPECT_EQ(left->back().record.body, payload + "199") << "the newest events stay";
        EXPECT_EQ(left->front().sequence_number, info.begin_sequence_number);
        // 64 KiB holds at most 63 of these; what each engine adds per event leaves 40 or more.
        EXPECT_LE(left->size(), 63u) << "round " << round;
        EXPECT_GE(left->size(), 40u) << "round " << round;
    }
}

TEST_P(EventLog, SurvivesReopen) {
    if (GetParam() == "memory") GTEST_SKIP() << "the memory engine keeps nothing by design";
    if (GetParam() == "jetstream") {
        append(2, {make("kept1"), make("kept2")});
        open({4, {std::chrono::hours(24), 0}});
        EXPECT_EQ(log().info(2).next_sequence_number, 2u);
        EXPECT_EQ(log().read(2, 0, 10)->front().record.body, "kept1");
        EXPECT_EQ(append(2, {make("next")}), (std::vector<std::uint64_t>{2}));
        return;
    }
    append(2, {make("kept1"), make("kept2")});
    log().enforce_retention(clock_ + std::chrono::hours(48));
    append(2, {make("kept3")});
    open({4, {std::chrono::hours(24), 0}});
    auto info = log().info(2);
    EXPECT_EQ(info.begin_sequence_number, 2u);
    EXPECT_EQ(info.next_sequence_number, 3u);
    EXPECT_EQ(log().read(2, 0, 10)->front().record.body, "kept3");
    EXPECT_EQ(append(2, {make("next")}), (std::vector<std::uint64_t>{3}));
}

TEST_P(EventLog, NamedLogsAreSeparateSurviveReopenAndCanBeDropped) {
    auto named = engine_->log("ep.hot");
    ASSERT_TRUE(named) << named.error().message();
    std::promise<result<std::vector<std::uint64_t>>> done;
    (*named)->append(1, {make("routed")}, [&](auto r) { done.set_value(std::move(r)); });
    ASSERT_TRUE(done.get_future().get());
    EXPECT_EQ((*named)->info(1).next_sequence_number, 1u);
    EXPECT_TRUE(log().info(1).empty()) << "the telemetry log does not see it";
    EXPECT_EQ(*engine_->log("ep.hot"), *named) << "opened once";
    for (auto bad : {"", "events", "hub", "a/b", "a b"}) EXPECT_FALSE(engine_->log(bad)) << bad;

    if (GetParam() != "memory") {
        open({4, {std::chrono::hours(24), 0}});
        auto again = engine_->log("ep.hot");
        ASSERT_TRUE(again);
        auto read = (*again)->read(1, 0, 10);
        ASSERT_TRUE(read);
        ASSERT_EQ(read->size(), 1u);
        EXPECT_EQ(read->front().record.body, "routed");
        engine_->enforce_retention(clock_);  // every open log, without harm
    }
    ASSERT_TRUE(engine_->drop_log("ep.hot"));
    auto fresh = engine_->log("ep.hot");
    ASSERT_TRUE(fresh);
    EXPECT_TRUE((*fresh)->read(1, 0, 10)->empty()) << "dropping removed its events";
    EXPECT_TRUE(engine_->drop_log("never-opened"));
}

TEST_P(EventLog, PartitionCountIsFixedPerDataDirectory) {
    if (GetParam() == "memory") GTEST_SKIP();
    engine_.reset();
    if (GetParam() == "jetstream") {
        jetstream_settings js;
        js.connection.servers = {nats_->url()};
        js.events.partitions = 8;
        auto e = open_jetstream(js);
        ASSERT_FALSE(e);
        EXPECT_NE(e.error().message().find("cannot change"), std::string::npos)
            << e.error().message();
        return;
    }
    rocksdb_settings rs{dir_, true, 2, {8, {}}};
    auto e = open_rocksdb(rs);
    ASSERT_FALSE(e);
    EXPECT_NE(e.error().message().find("cannot change"), std::string::npos);
}

TEST(PartitionFor, IsStableAndSpreads) {
    EXPECT_EQ(partition_for("device-1", 4), partition_for("device-1", 4));
    std::vector<int> counts(4, 0);
    for (int i = 0; i < 1000; ++i)
        ++counts[static_cast<std::size_t>(partition_for("dev" + std::to_string(i), 4))];
    for (int c : counts) EXPECT_GT(c, 150);
    EXPECT_EQ(partition_for("abc", 1), 0);
}

TEST_P(EventLog, AppendWithCommitsTheRecordAndItsEventTogetherOrNeither) {
    auto with = [&](std::vector<kv_write> writes, std::string body) {
        std::promise<result<appended>> done;
        engine_->hub_events().append_with(0, {make(std::move(body))}, std::move(writes),
                                          [&](auto r) { done.set_value(std::move(r)); });
        return done.get_future().get();
    };
    auto& kv = engine_->kv();
    auto first = with({{kv_write::op::put, "rec", "v1", precondition::absent()}}, "created");
    ASSERT_TRUE(first) << first.error().message();
    EXPECT_EQ(first->sequences, std::vector<std::uint64_t>{0});
    ASSERT_EQ(first->versions.size(), 1u);
    EXPECT_EQ((*kv.get("rec"))->version, first->versions[0]);

    // A condition that does not hold: no record change and no event.
    auto stale =
        with({{kv_write::op::put, "rec", "v2", precondition::version(first->versions[0] + 7)},
              {kv_write::op::put, "other", "x", precondition::none()}},
             "refused");
    ASSERT_FALSE(stale);
    EXPECT_EQ(stale.error().code(), errc::precondition_failed);
    EXPECT_EQ((*kv.get("rec"))->value, "v1");
    EXPECT_FALSE(*kv.get("other")) << "all or nothing";
    EXPECT_EQ(engine_->hub_events().info(0).next_sequence_number, 1u);

    auto second = with(
        {{kv_write::op::put, "rec", "v2", precondition::version(first->versions[0])}}, "updated");
    ASSERT_TRUE(second);
    auto events = engine_->hub_events().read(0, 0, 10);
    ASSERT_EQ(events->size(), 2u);
    EXPECT_EQ(events->back().record.body, "updated");
    EXPECT_EQ((*kv.get("rec"))->value, "v2");
}

TEST_P(EventLog, ConcurrentAppendWithOnOneRecordLetsEachConditionSeeTheOther) {
    // Writers racing on one record with compare-and-set: every success has its event, and no
    // two successes were based on the same version.
    auto& kv = engine_->kv();
    ASSERT_TRUE(kv.put("counter", "0"));
    std::atomic<int> won{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t)
        threads.emplace_back([&] {
            for (int i = 0; i < 25; ++i) {
                auto cur = *kv.get("counter");
                auto n = std::stoi((*cur).value);
                std::promise<result<appended>> done;
                engine_->hub_events().append_with(
                    1, {make(std::to_string(n + 1))},
                    {{kv_write::op::put, "counter", std::to_string(n + 1),
                      precondition::version((*cur).version)}},
                    [&](auto r) { done.set_value(std::move(r)); });
                if (done.get_future().get()) ++won;
            }
        });
    for (auto& t : threads) t.join();
    const auto final_value = std::stoi((*kv.get("counter"))->value);
    EXPECT_EQ(final_value, won.load());
    auto events = engine_->hub_events().read(1, 0, 1000);
    ASSERT_EQ(events->size(), static_cast<std::size_t>(won.load()));
    for (std::size_t i = 0; i < events->size(); ++i)
        EXPECT_EQ((*events)[i].record.body, std::to_string(i + 1)) << "in commit order";
}

INSTANTIATE_TEST_SUITE_P(Engines, EventLog, ::testing::Values("memory", "rocksdb", "jetstream"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace iothub::storage

namespace iothub::storage {
namespace {

// A writer that dies between committing append_with's batch and copying its events: another
// node copies them from the outbox, once.
TEST(JetStreamOutbox, AnotherNodeCopiesTheEventsOfAWriterThatDied) {
    nats::testing::nats_server nats;
    ASSERT_FALSE(nats.url().empty()) << "nats-server did not start";
    jetstream_settings js;
    js.connection.servers = {nats.url()};
    {
        auto link = detail::jetstream_link::connect(js);
        ASSERT_TRUE(link) << link.error().message();
        detail::jetstream_kv kv(**link);
        ASSERT_TRUE(kv.start());
        detail::outbox_entry entry;
        entry.log = "hub";
        entry.partition = 1;
        entry.events.emplace_back();
        detail::encode_record(entry.events.back(), make("orphan"));
        std::vector<kv_write> writes{{kv_write::op::put, "record", "v1", precondition::absent()}};
        auto committed = kv.apply_all(writes, entry);
        ASSERT_TRUE(committed) << committed.error().message();
        // ...and the writer is gone before copying anything.
    }
    auto survivor = open_jetstream(js);
    ASSERT_TRUE(survivor) << survivor.error().message();
    auto& log = (*survivor)->hub_events();
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (log.info(1).next_sequence_number == 0 && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    auto events = log.read(1, 0, 10);
    ASSERT_TRUE(events);
    ASSERT_EQ(events->size(), 1u);
    EXPECT_EQ(events->front().record.body, "orphan");
    EXPECT_EQ((*(*survivor)->kv().get("record"))->value, "v1");
}

}  // namespace
}  // namespace iothub::storage
