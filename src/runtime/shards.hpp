// The hub's threads: a fixed set of shards, each an io_context run by exactly one thread, and a
// small pool for calls that block (storage). A connection is owned by one shard for its life, so
// per-connection code needs no locks; work reaches another shard by posting to its executor.
//
// Lifecycle: construct, start() spawns the threads, stop() lets in-flight handlers finish, stops
// the contexts and joins. The destructor stops if needed.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

namespace iothub::runtime {

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

// Runs blocking calls (RocksDB with fsync, file I/O) off the network shards.
class blocking_pool {
  public:
    explicit blocking_pool(unsigned threads) : pool_(threads) {}
    ~blocking_pool() { stop(); }

    template <class F>
    void post(F&& f) {
        boost::asio::post(pool_, std::forward<F>(f));
    }
    boost::asio::thread_pool::executor_type executor() { return pool_.get_executor(); }
    void stop() { pool_.join(); }

  private:
    boost::asio::thread_pool pool_;
};

}  // namespace iothub::runtime
