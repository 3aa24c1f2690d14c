#include "runtime/shards.hpp"

#include <boost/asio/post.hpp>

namespace iothub::runtime {

shard_set::shard_set(unsigned count) {
    if (count == 0) count = std::max(1u, std::thread::hardware_concurrency());
    for (unsigned i = 0; i < count; ++i) {
        // Concurrency hint 1: each context is run by exactly one thread, so Asio can skip locking.
        contexts_.push_back(std::make_unique<boost::asio::io_context>(1));
        guards_.emplace_back(contexts_.back()->get_executor());
    }
}

shard_set::~shard_set() {
    stop();
}

boost::asio::io_context& shard_set::next() {
    return *contexts_[next_.fetch_add(1, std::memory_order_relaxed) % contexts_.size()];
}

void shard_set::start() {
    for (auto& ctx : contexts_) threads_.emplace_back([c = ctx.get()] { c->run(); });
}

void shard_set::stop() {
    for (auto& g : guards_) g.reset();
    for (auto& ctx : contexts_) ctx->stop();
    for (auto& t : threads_)
        if (t.joinable()) t.join();
    threads_.clear();
}

}  // namespace iothub::runtime
