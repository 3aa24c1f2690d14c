// The connect rate's token bucket, on a clock the test moves.
#include "session/connect_limiter.hpp"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

namespace iothub::session {
namespace {
using namespace std::chrono_literals;
using clock = connect_limiter::clock;

int taken(connect_limiter& l, clock::time_point at, int tries) {
    int n = 0;
    for (int i = 0; i < tries; ++i) n += l.try_acquire(at) ? 1 : 0;
    return n;
}

TEST(ConnectLimiter, ZeroIsUnlimited) {
    connect_limiter l(0);
    EXPECT_TRUE(l.unlimited());
    const auto t = clock::time_point{} + 1h;
    EXPECT_EQ(taken(l, t, 100000), 100000);
    EXPECT_TRUE(l.try_acquire());
}

TEST(ConnectLimiter, AFullBucketAllowsTheBurstAtOnceThenNothing) {
    connect_limiter l(1, 2);
    const auto t = clock::time_point{} + 1h;
    EXPECT_TRUE(l.try_acquire(t));
    EXPECT_TRUE(l.try_acquire(t));
    EXPECT_FALSE(l.try_acquire(t));
    EXPECT_FALSE(l.try_acquire(t + 999ms));
}

TEST(ConnectLimiter, TheBurstDefaultsToTheRateAndIsNeverBelowOne) {
    connect_limiter l(5);
    EXPECT_EQ(l.burst(), 5u);
    EXPECT_EQ(taken(l, clock::time_point{} + 1h, 10), 5);
    connect_limiter one(1, 0);
    EXPECT_EQ(one.burst(), 1u);
    EXPECT_EQ(taken(one, clock::time_point{} + 1h, 3), 1);
}

TEST(ConnectLimiter, RefillsAtTheRateAndNoFurtherThanTheBurst) {
    connect_limiter l(10, 3);  // one every 100 ms
    const auto t = clock::time_point{} + 1h;
    EXPECT_EQ(taken(l, t, 5), 3);
    EXPECT_FALSE(l.try_acquire(t + 99ms));
    EXPECT_TRUE(l.try_acquire(t + 100ms));
    EXPECT_FALSE(l.try_acquire(t + 100ms));
    EXPECT_EQ(taken(l, t + 300ms, 5), 2);
    // Idle for a long while: full again, and only full.
    EXPECT_EQ(taken(l, t + 1h, 10), 3);
    // Steady arrivals at the rate are all let through.
    for (int i = 1; i <= 50; ++i) EXPECT_TRUE(l.try_acquire(t + 1h + i * 100ms)) << i;
}

TEST(ConnectLimiter, ConcurrentTakersGetExactlyTheBurst) {
    connect_limiter l(1, 1000);
    const auto t = clock::time_point{} + 1h;
    std::atomic<int> got{0};
    std::vector<std::thread> threads;
    for (int i = 0; i < 8; ++i) threads.emplace_back([&] { got += taken(l, t, 500); });
    for (auto& th : threads) th.join();
    EXPECT_EQ(got.load(), 1000);
}

TEST(ConnectLimiter, CountsRefusalsAndReportsThemAtMostOnceASecond) {
    connect_limiter l(10, 10);
    const auto t = clock::time_point{} + 1h;
    EXPECT_EQ(taken(l, t, 25), 10);
    EXPECT_EQ(l.refused(), 15u);
    EXPECT_TRUE(l.report_due(t));
    EXPECT_FALSE(l.report_due(t + 999ms));
    EXPECT_TRUE(l.report_due(t + 1s));
    EXPECT_FALSE(l.report_due(t + 1s));
}

}  // namespace
}  // namespace iothub::session
