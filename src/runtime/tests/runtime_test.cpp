#include "common/thread_role.hpp"
#include "runtime/await.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <gtest/gtest.h>

#include <atomic>
#include <functional>
#include <future>
#include <stdexcept>
#include <thread>

namespace iothub::runtime {
namespace {
namespace asio = boost::asio;

// Runs `io` until `done` holds (the pool posts its answers there), for five seconds at most.
bool run_until(asio::io_context& io, const std::function<bool()>& done) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (!done() && std::chrono::steady_clock::now() < deadline) {
        io.restart();
        io.run_for(std::chrono::milliseconds(5));
    }
    return done();
}

TEST(BlockingPool, RunReturnsTheResultOnTheCallersExecutor) {
    // The context outlives the pool: a pool thread may still be signalling it after its last post.
    asio::io_context io;
    blocking_pool pool(2);
    std::thread::id worker, answered;
    int got = 0;
    pool.run(
        [&] {
            worker = std::this_thread::get_id();
            return 42;
        },
        io.get_executor(),
        [&](int v) {
            answered = std::this_thread::get_id();
            got = v;
        });
    ASSERT_TRUE(run_until(io, [&] { return got != 0; }));
    EXPECT_EQ(got, 42);
    EXPECT_NE(worker, std::this_thread::get_id());
    EXPECT_EQ(answered, std::this_thread::get_id());
}

TEST(BlockingPool, AnExceptionBecomesAnErrorAndTheThreadLivesOn) {
    // The context outlives the pool: a pool thread may still be signalling it after its last post.
    asio::io_context io;
    blocking_pool pool(1);
    std::optional<result<int>> first, second;
    pool.run([]() -> result<int> { throw std::runtime_error("a corrupt record"); },
             io.get_executor(), [&](result<int> r) { first = r; });
    pool.run([]() -> result<int> { return 7; }, io.get_executor(),
             [&](result<int> r) { second = r; });
    ASSERT_TRUE(run_until(io, [&] { return first && second; }));
    ASSERT_FALSE(*first);
    EXPECT_EQ(first->error().code(), errc::server_error);
    EXPECT_EQ(**second, 7) << "the same single thread ran the next job";
}

TEST(BlockingPool, ACoroutineAwaitsItsWork) {
    // The context outlives the pool: a pool thread may still be signalling it after its last post.
    asio::io_context io;
    blocking_pool pool(2);
    std::optional<result<std::string>> got;
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
            got = co_await async_run(pool, [] { return result<std::string>("done"); });
        },
        asio::detached);
    ASSERT_TRUE(run_until(io, [&] { return got.has_value(); }));
    ASSERT_TRUE(*got);
    EXPECT_EQ(**got, "done");
}

TEST(Shards, ShardThreadsAreNetworkThreadsAndAThrowingHandlerDoesNotStopThem) {
    shard_set shards(1);
    std::promise<bool> seen;
    asio::post(shards.at(0), [] { throw std::runtime_error("a bug in a handler"); });
    asio::post(shards.at(0), [&] { seen.set_value(on_network_thread()); });
    shards.start();
    auto f = seen.get_future();
    ASSERT_EQ(f.wait_for(std::chrono::seconds(5)), std::future_status::ready);
    EXPECT_TRUE(f.get()) << "and it ran after the throwing one";
    shards.stop();
    EXPECT_FALSE(on_network_thread());
}

}  // namespace
}  // namespace iothub::runtime
