#include "runtime/shards.hpp"

#include "common/thread_role.hpp"

#include <boost/asio/post.hpp>
#include <spdlog/spdlog.h>

#include <string>

namespace iothub::runtime {
bool on_shard_thread() noexcept {
    return on_network_thread();
}

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
    for (std::size_t i = 0; i < contexts_.size(); ++i)
        threads_.emplace_back([c = contexts_[i].get(), i] {
            mark_network_thread();
            name_this_thread("shard-" + std::to_string(i));
            // A handler that throws is a bug; it is logged and the shard goes on serving its
            // other connections instead of taking the process down.
            for (;;) {
                try {
                    c->run();
                    return;
                } catch (const std::exception& e) {
                    spdlog::error("a network thread caught an exception: {}", e.what());
                } catch (...) {
                    spdlog::error("a network thread caught an unknown exception");
                }
            }
        });
}

void shard_set::stop() {
    for (auto& g : guards_) g.reset();
    for (auto& ctx : contexts_) ctx->stop();
    for (auto& t : threads_)
        if (t.joinable()) t.join();
    threads_.clear();
}

}  // namespace iothub::runtime
