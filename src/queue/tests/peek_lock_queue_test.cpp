#include "queue/peek_lock_queue.hpp"

#include "common/encoding.hpp"
#include "storage/engine.hpp"

#include <gtest/gtest.h>

#include <condition_variable>
#include <future>
#include <thread>

namespace iothub::queue {
namespace {
using namespace std::chrono_literals;

const sys_time t0 = sys_time(std::chrono::seconds(1700000000));

// Items are strings; the layout is `q/<lane>/<seq>` -> "<deliveries>|<enqueued>|<expiry>|<text>".
using text_queue = peek_lock_queue<std::string>;

text_queue::traits traits(std::string prefix = "q/") {
    return {prefix,
            [prefix](std::string_view lane, std::uint64_t seq) {
                return prefix + std::string(lane) + "/" + hex16(seq);
            },
            [prefix](std::string_view key) -> std::optional<std::pair<std::string, std::uint64_t>> {
                key.remove_prefix(prefix.size());
                auto slash = key.rfind('/');
                auto seq = parse_hex16(key.substr(slash + 1));
                if (!seq) return std::nullopt;
                return std::pair{std::string(key.substr(0, slash)), *seq};
            },
            [](const std::string& item, const meta& m) {
                return std::to_string(m.deliveries) + "|" +
                       std::to_string(m.enqueued.time_since_epoch().count()) + "|" +
                       std::to_string(m.expiry.time_since_epoch().count()) + "|" + item;
            },
            [](std::string_view v) -> std::optional<std::pair<std::string, meta>> {
                meta m;
                auto next = [&]() {
                    auto bar = v.find('|');
                    auto n = std::stoll(std::string(v.substr(0, bar)));
                    v.remove_prefix(bar + 1);
                    return n;
                };
                m.deliveries = static_cast<std::uint32_t>(next());
                m.enqueued = sys_time(sys_time::duration(next()));
                m.expiry = sys_time(sys_time::duration(next()));
                return std::pair{std::string(v), m};
            }};
}

// A kv_store whose apply() can be held until the test lets it go, to show what happens while a
// commit is in progress (an fsync, in real life).
class gated_kv final : public storage::kv_store {
  public:
    explicit gated_kv(storage::kv_store& inner) : inner_(inner) {}
    result<std::optional<storage::versioned_value>> get(std::string_view key) override {
        return inner_.get(key);
    }
    std::vector<result<std::uint64_t>> apply(std::span<const storage::kv_write> writes) override {
        std::unique_lock lock(mutex_);
        if (closed_) {
            waiting_ = true;
            cv_.notify_all();
            cv_.wait(lock, [&] { return !closed_; });
            waiting_ = false;
        }
        lock.unlock();
        return inner_.apply(writes);
    }
    result<std::vector<storage::kv_entry>> scan(std::string_view prefix,
                                                std::string_view start_after,
                                                std::size_t limit) override {
        return inner_.scan(prefix, start_after, limit);
    }
    void close() {
        std::lock_guard lock(mutex_);
        closed_ = true;
    }
    void wait_until_held() {
        std::unique_lock lock(mutex_);
        cv_.wait(lock, [&] { return waiting_; });
    }
    void open() {
        std::lock_guard lock(mutex_);
        closed_ = false;
        cv_.notify_all();
    }

  private:
    storage::kv_store& inner_;
    std::mutex mutex_;
    std::condition_variable cv_;
    bool closed_ = false, waiting_ = false;
};

class PeekLockQueue : public ::testing::Test {
  protected:
    text_queue::settings settings(std::size_t lease = 1, std::size_t depth = 0) {
        return {60s, 3, lease, depth, {}, {}};
    }
    text_queue::hooks hooks() {
        return {[this](change&, const text_queue::view& v, ending why, sys_time) {
                    endings.emplace_back(v.item, why);
                },
                [this](const std::vector<std::string>& lanes) {
                    for (const auto& l : lanes) available.push_back(l);
                }};
    }
    std::unique_ptr<text_queue> make(std::size_t lease = 1, std::size_t depth = 0) {
        return std::make_unique<text_queue>(engine_->kv(), traits(), settings(lease, depth),
                                            hooks());
    }
    void put(text_queue& q, const std::string& lane, const std::string& text,
             sys_time expiry = t0 + 1h) {
        std::vector<text_queue::incoming> in{
            {lane, std::make_shared<const std::string>(text), expiry}};
        auto r = q.enqueue(std::move(in), t0);
        ASSERT_TRUE(r.front()) << r.front().error().message();
    }
    std::size_t stored() { return engine_->kv().scan("q/", "", 100)->size(); }

    std::unique_ptr<storage::engine> engine_ = storage::open_memory();
    std::vector<std::pair<std::string, ending>> endings;
    std::vector<std::string> available;
};

TEST_F(PeekLockQueue, LanesAreFifoAndALeaseLocksUntilSettled) {
    auto q = make();
    put(*q, "a", "a1");
    put(*q, "a", "a2");
    put(*q, "b", "b1");
    EXPECT_EQ(available, (std::vector<std::string>{"a", "a", "b"}));
    auto first = q->receive("a", t0);
    ASSERT_TRUE(first);
    EXPECT_EQ(*first->items.front().item, "a1");
    EXPECT_EQ(first->items.front().m.deliveries, 1u);
    auto second = q->receive("a", t0);
    ASSERT_TRUE(second);
    EXPECT_EQ(*second->items.front().item, "a2");
    EXPECT_FALSE(q->receive("a", t0)) << "both locked";
    ASSERT_TRUE(q->settle("a", first->lock_token, settlement::complete, t0));
    EXPECT_EQ(q->depth("a"), 1u);
    EXPECT_EQ(stored(), 2u);
    EXPECT_EQ(endings, (std::vector<std::pair<std::string, ending>>{{"a1", ending::completed}}));
    ASSERT_TRUE(q->settle("a", second->lock_token, settlement::reject, t0));
    EXPECT_EQ(endings.back(), (std::pair<std::string, ending>{"a2", ending::rejected}));
    EXPECT_EQ(q->depth("a"), 0u);
}

TEST_F(PeekLockQueue, AWrongLaneAWrongTokenOrAnExpiredLockIsLockLost) {
    auto q = make();
    put(*q, "a", "x");
    auto l = q->receive("a", t0);
    ASSERT_TRUE(l);
    for (auto [lane, token] :
         {std::pair<std::string, std::string>{"b", l->lock_token}, {"a", "not-a-token"}}) {
        auto r = q->settle(lane, token, settlement::complete, t0);
        ASSERT_FALSE(r);
        EXPECT_EQ(r.error().code(), errc::message_lock_lost);
    }
    auto late = q->settle("a", l->lock_token, settlement::complete, t0 + 61s);
    ASSERT_FALSE(late);
    EXPECT_EQ(late.error().code(), errc::message_lock_lost);
}

TEST_F(PeekLockQueue, AbandonAndLockTimeoutRedeliverAndTheCountSurvivesARestart) {
    auto q = make();
    put(*q, "a", "x");
    auto l = q->receive("a", t0);
    ASSERT_TRUE(q->settle("a", l->lock_token, settlement::abandon, t0));
    auto again = q->receive("a", t0);
    ASSERT_TRUE(again);
    EXPECT_EQ(again->items.front().m.deliveries, 2u);
    q->sweep(t0 + 61s);  // the lock times out: an abandon
    q = make();
    ASSERT_TRUE(q->load());
    auto after_restart = q->receive("a", t0 + 62s);
    ASSERT_TRUE(after_restart);
    EXPECT_EQ(after_restart->items.front().m.deliveries, 3u) << "two abandoned deliveries kept";
    ASSERT_TRUE(q->settle("a", after_restart->lock_token, settlement::abandon, t0 + 62s));
    EXPECT_EQ(endings, (std::vector<std::pair<std::string, ending>>{{"x", ending::exhausted}}))
        << "the third delivery was the last";
    EXPECT_EQ(stored(), 0u);
}

TEST_F(PeekLockQueue, ExpiredItemsAreSkippedThenEndedBySweep) {
    auto q = make();
    put(*q, "a", "old", t0 + 1s);
    put(*q, "a", "new");
    auto l = q->receive("a", t0 + 2s);
    ASSERT_TRUE(l);
    EXPECT_EQ(*l->items.front().item, "new");
    // A node without the sweep duty leaves expiry to the one that has it.
    q->sweep(t0 + 2s, false);
    EXPECT_TRUE(endings.empty());
    EXPECT_EQ(q->depth("a"), 2u);
    q->sweep(t0 + 2s);
    EXPECT_EQ(endings, (std::vector<std::pair<std::string, ending>>{{"old", ending::expired}}));
    EXPECT_EQ(q->depth("a"), 1u);
}

TEST_F(PeekLockQueue, ASweepWithoutExpiryStillTimesOutLocks) {
    auto q = make();
    put(*q, "a", "x");
    auto l = q->receive("a", t0);
    ASSERT_TRUE(l);
    q->sweep(t0 + 61s, false);
    auto again = q->receive("a", t0 + 61s);
    ASSERT_TRUE(again) << "the timed-out lock was not released";
    EXPECT_EQ(*again->items.front().item, "x");
}

TEST_F(PeekLockQueue, LeasesTakeSeveralItemsAndSettleThemTogether) {
    auto q = make(3);
    for (auto t : {"1", "2", "3", "4"}) put(*q, "", t);
    auto l = q->receive("", t0);
    ASSERT_TRUE(l);
    ASSERT_EQ(l->items.size(), 3u);
    auto rest = q->receive("", t0);
    ASSERT_TRUE(rest);
    EXPECT_EQ(rest->items.size(), 1u);
    ASSERT_TRUE(q->settle("", l->lock_token, settlement::complete, t0));
    EXPECT_EQ(q->size(), 1u);
}

TEST_F(PeekLockQueue, TheDepthLimitCountsWhatPruningLeaves) {
    auto q = make(1, 2);
    put(*q, "a", "stale");
    put(*q, "a", "kept");
    std::vector<text_queue::incoming> in{
        {"a", std::make_shared<const std::string>("new"), t0 + 1h},
        {"a", std::make_shared<const std::string>("over"), t0 + 1h}};
    auto r = q->enqueue(std::move(in), t0, [](const text_queue::view& v) -> std::optional<ending> {
        if (v.item == "stale") return ending::dropped;
        return std::nullopt;
    });
    EXPECT_TRUE(r[0]);
    ASSERT_FALSE(r[1]);
    EXPECT_EQ(r[1].error().code(), errc::queue_depth_exceeded);
    EXPECT_EQ(endings, (std::vector<std::pair<std::string, ending>>{{"stale", ending::dropped}}));
    EXPECT_EQ(q->depth("a"), 2u);
}

TEST_F(PeekLockQueue, WhatAnEndingStagesIntoAnotherQueueCommitsWithIt) {
    text_queue second(engine_->kv(), traits("s/"), settings(), {});
    text_queue first(engine_->kv(), traits(), settings(),
                     {[&](change& c, const text_queue::view& v, ending, sys_time now) {
                          second.stage(c, "", "about " + v.item, meta{now, now + 1h, 0});
                      },
                      {}});
    put(first, "a", "x");
    auto l = first.receive("a", t0);
    ASSERT_TRUE(first.settle("a", l->lock_token, settlement::complete, t0));
    auto fb = second.receive("", t0);
    ASSERT_TRUE(fb);
    EXPECT_EQ(*fb->items.front().item, "about x");
    text_queue reloaded(engine_->kv(), traits("s/"), settings(), {});
    ASSERT_TRUE(reloaded.load());
    EXPECT_EQ(reloaded.size(), 1u) << "durable with the settlement";
}

TEST_F(PeekLockQueue, ACommitInProgressHoldsNoLockOnTheOtherLanes) {
    gated_kv gate(engine_->kv());
    text_queue q(gate, traits(), settings(), {});
    for (auto lane : {"a", "b"}) {
        std::vector<text_queue::incoming> in{
            {lane, std::make_shared<const std::string>(lane), t0 + 1h}};
        ASSERT_TRUE(q.enqueue(std::move(in), t0).front());
    }
    auto held = q.receive("a", t0);
    ASSERT_TRUE(held);
    gate.close();
    auto settling = std::async(std::launch::async, [&] {
        return q.settle("a", held->lock_token, settlement::complete, t0);
    });
    gate.wait_until_held();
    // The settlement's commit is stuck in "storage"; lane b is served all the same, and a sweep
    // that has nothing to write does not wait either.
    auto other = q.receive("b", t0);
    ASSERT_TRUE(other);
    EXPECT_EQ(*other->items.front().item, "b");
    q.sweep(t0);
    EXPECT_EQ(q.depth("a"), 1u) << "not removed until committed";
    gate.open();
    EXPECT_TRUE(settling.get());
    EXPECT_EQ(q.depth("a"), 0u);
}

TEST_F(PeekLockQueue, ReleaseAbandonsEveryLeaseOfALane) {
    auto q = make();
    put(*q, "a", "1");
    put(*q, "a", "2");
    ASSERT_TRUE(q->receive("a", t0));
    ASSERT_TRUE(q->receive("a", t0));
    q->release("a", t0);
    auto l = q->receive("a", t0);
    ASSERT_TRUE(l);
    EXPECT_EQ(*l->items.front().item, "1");
    EXPECT_EQ(l->items.front().m.deliveries, 2u);
}

}  // namespace
}  // namespace iothub::queue
