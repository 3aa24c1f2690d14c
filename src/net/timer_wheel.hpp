// Deadlines for many connections at the cost of one timer per shard: a hashed timing wheel
// (ticks of `resolution`, a ring of slots, entries further out than one turn wait for their
// round). An entry is a few pointers inside its owner; scheduling, moving and cancelling are
// O(1) and allocate nothing, so a connection's keep-alive or handshake deadline costs nothing
// while it waits. Deadlines fire up to one tick late, never early.
//
// Threading: a wheel belongs to one io_context (one shard) and is touched only from its thread.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include <array>
#include <bitset>
#include <chrono>
#include <cstdint>

namespace iothub::net {

class timer_wheel;

// Embed in the object whose deadline it is; the owner must outlive its scheduling or cancel it.
class wheel_entry {
  public:
    wheel_entry() = default;
    wheel_entry(const wheel_entry&) = delete;
    wheel_entry& operator=(const wheel_entry&) = delete;
    bool scheduled() const { return wheel_ != nullptr; }

  protected:
    ~wheel_entry();
    // The deadline came. The entry is no longer scheduled.
    virtual void expired() = 0;

  private:
    friend class timer_wheel;
    timer_wheel* wheel_ = nullptr;
    wheel_entry* prev_ = nullptr;
    wheel_entry* next_ = nullptr;
    std::int64_t due_tick_ = 0;
};

class timer_wheel : public boost::asio::execution_context::service {
  public:
    using clock = std::chrono::steady_clock;
    static constexpr auto resolution = std::chrono::milliseconds(50);
    static constexpr std::size_t slots = 1024;  // one turn: 51.2 s

    using key_type = timer_wheel;
    static inline boost::asio::execution_context::id id;

    explicit timer_wheel(boost::asio::execution_context& ctx);
    // The wheel of `ctx`, made on first use.
    static timer_wheel& of(boost::asio::io_context& ctx);
    static timer_wheel& of(const boost::asio::any_io_executor& ex);

    // Schedules (or moves) `e` to fire at `due`; time_point::max() cancels.
    void schedule(wheel_entry& e, clock::time_point due);
    void cancel(wheel_entry& e);
    std::size_t size() const { return count_; }

  private:
    void shutdown() override;
    std::int64_t tick_of(clock::time_point t) const;
    void link(wheel_entry& e);
    void unlink(wheel_entry& e);
    void arm_at(std::int64_t tick);
    void advance();

    clock::time_point origin_;
    boost::asio::steady_timer timer_;
    std::array<wheel_entry*, slots> heads_{};
    wheel_entry* firing_ = nullptr;  // due now, being expired one by one
    std::bitset<slots> busy_;
    std::int64_t current_ = 0;  // every tick before this one has been processed
    std::int64_t armed_for_ = -1;
    std::size_t count_ = 0;
    bool down_ = false;
};

}  // namespace iothub::net
