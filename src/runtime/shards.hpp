// The hub's threads: a fixed set of shards, each an io_context run by exactly one thread, and a
// small pool for calls that block (storage). A connection is owned by one shard for its life, so
// per-connection code needs no locks; work reaches another shard by posting to its executor.
//
// Lifecycle: construct, start() spawns the threads, stop() lets in-flight handlers finish, stops
// the contexts and joins. The destructor stops if needed.
#pragma once

#include "common/error.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <spdlog/spdlog.h>

#include <atomic>
#include <exception>
#include <memory>
#include <thread>
#include <type_traits>
#include <vector>

namespace iothub::runtime {

// Whether the calling thread is one of the shards' network threads, where nothing may block.
// Storage engines check it in debug builds.
bool on_shard_thread() noexcept;

class shard_set {
  public:
    explicit shard_set(unsigned count);
    ~shard_set();
    shard_set(const shard_set&) = delete;
    shard_set& operator=(const shard_set&) = delete;

    unsigned size() const { return static_cast<unsigned>(contexts_.size()); }
    boost::asio::io_context& at(unsigned index) { return *contexts_[index]; }
    // Round-robin choice for a new connection.
    boost::asio::io_context& next();

    void start();
    void stop();

  private:
    using guard = boost::asio::executor_work_guard<boost::asio::io_context::executor_type>;
    std::vector<std::unique_ptr<boost::asio::io_context>> contexts_;
    std::vector<guard> guards_;
    std::vector<std::thread> threads_;
    std::atomic<unsigned> next_{0};
};

namespace detail {
template <class T>
struct is_result : std::false_type {};
template <class T>
struct is_result<result<T>> : std::true_type {};

// Calls `work`, turning an exception (a bug: a corrupt record, a broken invariant) into a
// server_error result, or a log line for work that returns nothing, so that it never ends the
// thread that runs it.
template <class Work>
auto guarded(Work& work) -> std::invoke_result_t<Work&> {
    using R = std::invoke_result_t<Work&>;
    try {
        return work();
    } catch (const std::exception& e) {
        spdlog::error("blocking work failed: {}", e.what());
        if constexpr (is_result<R>::value) return error(errc::server_error, e.what());
    } catch (...) {
        spdlog::error("blocking work failed with an unknown exception");
    }
    if constexpr (is_result<R>::value)
        return error(errc::server_error, "unknown failure");
    else if constexpr (!std::is_void_v<R>)
        return R{};
}
}  // namespace detail

// Runs blocking calls (RocksDB with fsync, file I/O) off the network shards.
class blocking_pool {
  public:
    explicit blocking_pool(unsigned threads) : pool_(threads) {}
    ~blocking_pool() { stop(); }

    // Runs `f` on the pool; an exception it throws is logged, not propagated.
    template <class F>
    void post(F&& f) {
        boost::asio::post(pool_, [f = std::forward<F>(f)]() mutable { detail::guarded(f); });
    }

    // Runs `work` on the pool, then `then(what work returned)` on `ex`: the way a network thread
    // gets a blocking call done without waiting for it.
    template <class Work, class Then>
    void run(Work work, boost::asio::any_io_executor ex, Then then) {
        boost::asio::post(
            pool_, [work = std::move(work), ex = std::move(ex), then = std::move(then)]() mutable {
                if constexpr (std::is_void_v<std::invoke_result_t<Work&>>) {
                    detail::guarded(work);
                    boost::asio::post(ex, std::move(then));
                } else {
                    auto r = detail::guarded(work);
                    boost::asio::post(ex, [r = std::move(r), then = std::move(then)]() mutable {
                        then(std::move(r));
                    });
                }
            });
    }
    boost::asio::thread_pool::executor_type executor() { return pool_.get_executor(); }
    void stop() { pool_.join(); }

  private:
    boost::asio::thread_pool pool_;
};

}  // namespace iothub::runtime
