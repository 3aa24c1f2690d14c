#include "net/timer_wheel.hpp"

#include "net_test_support.hpp"

#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace iothub::net {
namespace {
using namespace std::chrono_literals;
using testing::run_for;
using testing::run_until;
using steady = timer_wheel::clock;

// Every expiry is checked against this: at most about a tick late, with room for a slow CI
// machine. Only "fired", "not early" and this bound are asserted, never exact timing.
constexpr auto late_bound = 1s;

// An entry that records when it fired and can act from inside expired().
class probe final : public wheel_entry {
  public:
    int fired = 0;
    steady::time_point fired_at{};
    steady::time_point due{};  // what the test scheduled it for, to check "not early"
    std::function<void(probe&)> on_expired;

    void schedule(timer_wheel& w, steady::time_point at) {
        due = at;
        w.schedule(*this, at);
    }

  private:
    void expired() override {
        ++fired;
        fired_at = steady::now();
        EXPECT_FALSE(scheduled()) << "an expiring entry is no longer scheduled";
        if (on_expired) on_expired(*this);
    }
};

void expect_on_time(const probe& p) {
    ASSERT_EQ(p.fired, 1);
    EXPECT_GE(p.fired_at, p.due)
        << "fired " << std::chrono::duration<double, std::milli>(p.due - p.fired_at).count()
        << " ms early";
    EXPECT_LT(p.fired_at - p.due, late_bound);
}

TEST(NetTimerWheel, IsOneServicePerIoContext) {
    boost::asio::io_context a, b;
    auto& wa = timer_wheel::of(a);
    EXPECT_EQ(&wa, &timer_wheel::of(a));
    EXPECT_EQ(&wa, &timer_wheel::of(boost::asio::any_io_executor(a.get_executor())));
    EXPECT_NE(&wa, &timer_wheel::of(b));
}

TEST(NetTimerWheel, EntriesFireNotBeforeTheirDeadlineAndAboutATickLate) {
    boost::asio::io_context io;
    auto& wheel = timer_wheel::of(io);
    // Offsets that fall on, just after and between 50 ms ticks.
    const std::vector<std::chrono::milliseconds> offsets = {0ms,  1ms,   30ms,  49ms, 50ms,
                                                            51ms, 120ms, 333ms, 700ms};
    std::vector<std::unique_ptr<probe>> probes;
    const auto now = steady::now();
    for (auto d : offsets) {
        probes.push_back(std::make_unique<probe>());
        probes.back()->schedule(wheel, now + d);
        EXPECT_TRUE(probes.back()->scheduled());
    }
    EXPECT_EQ(wheel.size(), offsets.size());

    ASSERT_TRUE(run_until(io, [&] {
        for (auto& p : probes)
            if (p->fired == 0) return false;
        return true;
    }));
    for (std::size_t i = 0; i < probes.size(); ++i) {
        SCOPED_TRACE("offset " + std::to_string(offsets[i].count()) + " ms");
        expect_on_time(*probes[i]);
        EXPECT_FALSE(probes[i]->scheduled());
    }
    EXPECT_EQ(wheel.size(), 0u);
}

TEST(NetTimerWheel, ADeadlineInThePastFiresOnTheNextTick) {
    boost::asio::io_context io;
    auto& wheel = timer_wheel::of(io);
    probe p;
    p.schedule(wheel, steady::now() - 10s);
    ASSERT_TRUE(run_until(io, [&] { return p.fired > 0; }));
    EXPECT_EQ(p.fired, 1);
    EXPECT_LT(p.fired_at - p.due, 10s + late_bound);
}

TEST(NetTimerWheel, ReschedulingEarlierMovesTheEntry) {
    boost::asio::io_context io;
    auto& wheel = timer_wheel::of(io);
    probe p;
    p.schedule(wheel, steady::now() + 30s);
    run_for(io, 60ms);  // the wheel is armed for 30 s by now
    p.schedule(wheel, steady::now() + 100ms);
    EXPECT_EQ(wheel.size(), 1u) << "moved, not added twice";

    ASSERT_TRUE(run_until(
        io, [&] { return p.fired > 0; }, 10s));
    expect_on_time(p);
    EXPECT_EQ(wheel.size(), 0u);
}

TEST(NetTimerWheel, ReschedulingLaterMovesTheEntry) {
    boost::asio::io_context io;
    auto& wheel = timer_wheel::of(io);
    probe p, marker;
    const auto now = steady::now();
    p.schedule(wheel, now + 50ms);
    p.schedule(wheel, now + 400ms);
    // Due between the two: once it fired, the wheel has been past the first deadline.
    marker.schedule(wheel, now + 200ms);
    EXPECT_EQ(wheel.size(), 2u);

    ASSERT_TRUE(run_until(io, [&] { return marker.fired > 0; }));
    EXPECT_EQ(p.fired, 0) << "the old deadline must be gone";
    EXPECT_TRUE(p.scheduled());
    ASSERT_TRUE(run_until(io, [&] { return p.fired > 0; }));
    expect_on_time(p);  // not before the later deadline
    run_for(io, 120ms);
    EXPECT_EQ(p.fired, 1) << "fires once";
}

TEST(NetTimerWheel, ReschedulingToTheSameTickKeepsOneEntry) {
    boost::asio::io_context io;
    auto& wheel = timer_wheel::of(io);
    probe p;
    const auto at = steady::now() + 100ms;
    p.schedule(wheel, at);
    p.schedule(wheel, at);
    p.schedule(wheel, at + 1ms);  // most likely the same tick; either way one entry
    EXPECT_EQ(wheel.size(), 1u);
    ASSERT_TRUE(run_until(io, [&] { return p.fired > 0; }));
    expect_on_time(p);
    run_for(io, 120ms);
    EXPECT_EQ(p.fired, 1);
}

TEST(NetTimerWheel, CancelledEntriesDoNotFire) {
    boost::asio::io_context io;
    auto& wheel = timer_wheel::of(io);
    probe cancelled, by_max, marker;
    const auto now = steady::now();
    cancelled.schedule(wheel, now + 50ms);
    by_max.schedule(wheel, now + 60ms);
    marker.schedule(wheel, now + 250ms);
    wheel.cancel(cancelled);
    wheel.schedule(by_max, steady::time_point::max());  // also cancels
    EXPECT_FALSE(cancelled.scheduled());
    EXPECT_FALSE(by_max.scheduled());
    EXPECT_EQ(wheel.size(), 1u);
    wheel.cancel(cancelled);  // cancelling twice is harmless
    EXPECT_EQ(wheel.size(), 1u);

    // The wheel fires in deadline order, so by the time the later marker fired the cancelled ones
    // would have.
    ASSERT_TRUE(run_until(io, [&] { return marker.fired > 0; }));
    EXPECT_EQ(cancelled.fired, 0);
    EXPECT_EQ(by_max.fired, 0);
    EXPECT_EQ(wheel.size(), 0u);
}

TEST(NetTimerWheel, ACancelledEntryCanBeScheduledAgain) {
    boost::asio::io_context io;
    auto& wheel = timer_wheel::of(io);
    probe p;
    p.schedule(wheel, steady::now() + 50ms);
    wheel.cancel(p);
    p.schedule(wheel, steady::now() + 150ms);
    ASSERT_TRUE(run_until(io, [&] { return p.fired > 0; }));
    expect_on_time(p);
}

TEST(NetTimerWheel, DestroyingAScheduledEntryCancelsIt) {
    boost::asio::io_context io;
    auto& wheel = timer_wheel::of(io);
    probe marker;
    auto doomed = std::make_unique<probe>();
    doomed->schedule(wheel, steady::now() + 50ms);
    marker.schedule(wheel, steady::now() + 150ms);
    doomed.reset();
    EXPECT_EQ(wheel.size(), 1u);
    // Under ASan a dangling entry in the slot would show here.
    ASSERT_TRUE(run_until(io, [&] { return marker.fired > 0; }));
    EXPECT_EQ(wheel.size(), 0u);
}

TEST(NetTimerWheel, EntriesBeyondOneTurnWaitForTheirRound) {
    boost::asio::io_context io;
    auto& wheel = timer_wheel::of(io);
    const auto turn = timer_wheel::resolution * timer_wheel::slots;  // 51.2 s
    ASSERT_EQ(turn, 51200ms);
    probe near, same_slot_next_turn, sixty, after;
    const auto now = steady::now();
    near.schedule(wheel, now + 300ms);
    // Exactly one turn after `near`: the same slot, so the wheel visits it when `near` is due
    // and must leave it there.
    same_slot_next_turn.schedule(wheel, now + 300ms + turn);
    sixty.schedule(wheel, now + 60s);
    after.schedule(wheel, now + 600ms);
    EXPECT_EQ(wheel.size(), 4u);

    ASSERT_TRUE(run_until(io, [&] { return near.fired > 0 && after.fired > 0; }));
    expect_on_time(near);
    expect_on_time(after);
    EXPECT_EQ(same_slot_next_turn.fired, 0);
    EXPECT_EQ(sixty.fired, 0);
    EXPECT_TRUE(same_slot_next_turn.scheduled());
    EXPECT_TRUE(sixty.scheduled());
    EXPECT_EQ(wheel.size(), 2u);

    wheel.cancel(same_slot_next_turn);
    wheel.cancel(sixty);
    EXPECT_EQ(wheel.size(), 0u);
}

TEST(NetTimerWheel, TenThousandEntriesAllFireOnce) {
    boost::asio::io_context io;
    auto& wheel = timer_wheel::of(io);
    constexpr std::size_t n = 10'000;
    auto probes = std::make_unique<probe[]>(n);
    std::size_t fired = 0;
    const auto now = steady::now();
    for (std::size_t i = 0; i < n; ++i) {
        probes[i].on_expired = [&](probe&) { ++fired; };
        // Spread over about 2 s, many per tick, some in the same tick at different offsets.
        probes[i].schedule(wheel, now + std::chrono::milliseconds((i * 7919) % 2000));
    }
    EXPECT_EQ(wheel.size(), n);

    ASSERT_TRUE(run_until(
        io, [&] { return fired == n; }, 30s))
        << fired << " of " << n;
    EXPECT_EQ(wheel.size(), 0u);
    std::size_t early = 0, late = 0, twice = 0;
    for (std::size_t i = 0; i < n; ++i) {
        if (probes[i].fired != 1) ++twice;
        if (probes[i].fired_at < probes[i].due) ++early;
        if (probes[i].fired_at - probes[i].due >= late_bound) ++late;
    }
    EXPECT_EQ(twice, 0u);
    EXPECT_EQ(early, 0u);
    EXPECT_EQ(late, 0u);
}

TEST(NetTimerWheel, AnEntryCanRescheduleItselfFromExpired) {
    boost::asio::io_context io;
    auto& wheel = timer_wheel::of(io);
    probe p;
    std::vector<steady::duration> lateness;  // fired_at - due of each round
    p.on_expired = [&](probe& self) {
        lateness.push_back(self.fired_at - self.due);
        if (self.fired < 4) self.schedule(wheel, steady::now() + 60ms);
    };
    p.schedule(wheel, steady::now() + 60ms);
    ASSERT_TRUE(run_until(io, [&] { return p.fired == 4; }));
    EXPECT_FALSE(p.scheduled());
    EXPECT_EQ(wheel.size(), 0u);
    for (auto l : lateness) {
        EXPECT_GE(l, steady::duration::zero());
        EXPECT_LT(l, late_bound);
    }
}

TEST(NetTimerWheel, AnEntryRescheduledIntoThePastFromExpiredFiresAgainNextTick) {
    // No endless loop within one tick: the wheel has moved on, the entry waits for the next.
    boost::asio::io_context io;
    auto& wheel = timer_wheel::of(io);
    probe p;
    p.on_expired = [&](probe& self) {
        if (self.fired < 3) wheel.schedule(self, steady::now() - 1s);
    };
    p.schedule(wheel, steady::now());
    ASSERT_TRUE(run_until(io, [&] { return p.fired == 3; }));
    EXPECT_EQ(wheel.size(), 0u);
}

// Two entries due in the same tick; whichever the wheel expires first acts on the other. Which
// one goes first is not specified, so both are set up alike.
struct due_together {
    probe a, b;
    void arm(timer_wheel& w, std::chrono::milliseconds in = 100ms) {
        const auto at = steady::now() + in;
        a.schedule(w, at);
        b.schedule(w, at);
    }
};

TEST(NetTimerWheel, ExpiredCanCancelAnotherEntryDueInTheSameTick) {
    boost::asio::io_context io;
    auto& wheel = timer_wheel::of(io);
    due_together t;
    t.a.on_expired = [&](probe&) { wheel.cancel(t.b); };
    t.b.on_expired = [&](probe&) { wheel.cancel(t.a); };
    probe marker;
    t.arm(wheel);
    marker.schedule(wheel, steady::now() + 400ms);
    ASSERT_TRUE(run_until(io, [&] { return marker.fired > 0; }));
    EXPECT_EQ(t.a.fired + t.b.fired, 1) << "the cancelled one must not fire";
    EXPECT_FALSE(t.a.scheduled());
    EXPECT_FALSE(t.b.scheduled());
    EXPECT_EQ(wheel.size(), 0u);
}

TEST(NetTimerWheel, ExpiredCanMoveAnotherEntryDueInTheSameTickLater) {
    boost::asio::io_context io;
    auto& wheel = timer_wheel::of(io);
    due_together t;
    auto move_other = [&](probe& other) {
        if (other.fired == 0) other.schedule(wheel, steady::now() + 300ms);
    };
    t.a.on_expired = [&](probe&) { move_other(t.b); };
    t.b.on_expired = [&](probe&) { move_other(t.a); };
    t.arm(wheel);
    ASSERT_TRUE(run_until(io, [&] { return t.a.fired > 0 && t.b.fired > 0; }));
    run_for(io, 120ms);
    expect_on_time(t.a);  // each against its latest deadline
    expect_on_time(t.b);
    const auto& moved = t.a.fired_at > t.b.fired_at ? t.a : t.b;
    const auto& first = t.a.fired_at > t.b.fired_at ? t.b : t.a;
    EXPECT_GE(moved.fired_at - first.fired_at, 300ms);
    EXPECT_EQ(wheel.size(), 0u);
}

TEST(NetTimerWheel, ExpiredCanDestroyAnotherEntryDueInTheSameTick) {
    boost::asio::io_context io;
    auto& wheel = timer_wheel::of(io);
    auto a = std::make_unique<probe>();
    auto b = std::make_unique<probe>();
    int fired = 0;
    // The destructor takes the other out of the list being expired (ASan checks the rest).
    a->on_expired = [&](probe&) {
        ++fired;
        b.reset();
    };
    b->on_expired = [&](probe&) {
        ++fired;
        a.reset();
    };
    const auto at = steady::now() + 100ms;
    a->schedule(wheel, at);
    b->schedule(wheel, at);
    probe marker;
    marker.schedule(wheel, at + 300ms);
    ASSERT_TRUE(run_until(io, [&] { return marker.fired > 0; }));
    EXPECT_EQ(fired, 1);
    EXPECT_TRUE(!a != !b) << "exactly one survives";
    EXPECT_EQ(wheel.size(), 0u);
}

TEST(NetTimerWheel, ExpiredCanScheduleANewEntry) {
    boost::asio::io_context io;
    auto& wheel = timer_wheel::of(io);
    probe first, second;
    first.on_expired = [&](probe&) { second.schedule(wheel, steady::now() + 100ms); };
    first.schedule(wheel, steady::now() + 50ms);
    ASSERT_TRUE(run_until(io, [&] { return second.fired > 0; }));
    expect_on_time(first);
    expect_on_time(second);
}

TEST(NetTimerWheel, SizeCountsScheduledEntries) {
    boost::asio::io_context io;
    auto& wheel = timer_wheel::of(io);
    probe a, b, c;
    EXPECT_EQ(wheel.size(), 0u);
    const auto now = steady::now();
    a.schedule(wheel, now + 10s);
    b.schedule(wheel, now + 20s);
    c.schedule(wheel, now + 100s);
    EXPECT_EQ(wheel.size(), 3u);
    a.schedule(wheel, now + 5s);  // moved
    EXPECT_EQ(wheel.size(), 3u);
    wheel.cancel(b);
    EXPECT_EQ(wheel.size(), 2u);
    wheel.schedule(c, steady::time_point::max());
    EXPECT_EQ(wheel.size(), 1u);
    wheel.cancel(a);
    EXPECT_EQ(wheel.size(), 0u);
}

TEST(NetTimerWheel, AnEntryMovedToAnotherWheelLeavesTheFirst) {
    boost::asio::io_context one, two;
    auto& w1 = timer_wheel::of(one);
    auto& w2 = timer_wheel::of(two);
    probe p;
    p.schedule(w1, steady::now() + 50ms);
    p.schedule(w2, steady::now() + 100ms);
    EXPECT_EQ(w1.size(), 0u);
    EXPECT_EQ(w2.size(), 1u);
    ASSERT_TRUE(run_until(two, [&] { return p.fired > 0; }));
    run_for(one, 150ms);
    EXPECT_EQ(p.fired, 1);
}

TEST(NetTimerWheel, DestroyingTheContextWithEntriesScheduledOrphansThem) {
    // The entries outlive the context, as a connection held elsewhere may.
    probe never_ran, armed, soon;
    {
        boost::asio::io_context io;
        auto& wheel = timer_wheel::of(io);
        never_ran.schedule(wheel, steady::now() + 10s);
        armed.schedule(wheel, steady::now() + 30s);
        soon.schedule(wheel, steady::now());
        ASSERT_TRUE(run_until(io, [&] { return soon.fired > 0; }));  // the wheel's timer is armed
        soon.schedule(wheel, steady::now() + 5s);
        EXPECT_EQ(wheel.size(), 3u);
    }
    EXPECT_FALSE(never_ran.scheduled());
    EXPECT_FALSE(armed.scheduled());
    EXPECT_FALSE(soon.scheduled());
    EXPECT_EQ(never_ran.fired, 0);
    EXPECT_EQ(armed.fired, 0);
    EXPECT_EQ(soon.fired, 1);
    // Their destructors run after the wheel is gone: they must not reach for it (ASan).
}

TEST(NetTimerWheel, DestroyingTheContextDestroysEntriesOwnedByItsHandlers) {
    // An entry owned by a pending handler (as a connection is by its pending wait) dies while the
    // context shuts down, after the wheel let go of it.
    auto owned = std::make_shared<probe>();
    std::weak_ptr<probe> watch = owned;
    {
        boost::asio::io_context io;
        timer_wheel::of(io).schedule(*owned, steady::now() + 10s);
        boost::asio::steady_timer t(io, 1h);
        t.async_wait([keep = std::move(owned)](error_code) {});
    }
    EXPECT_TRUE(watch.expired());
}

}  // namespace
}  // namespace iothub::net
