// The hub-wide device connect rate: Azure IoT Hub's "device connections per second" throttle. A
// token bucket holding `burst` connects, refilled at `per_second`; every live device session
// (MQTT, AMQP, over TCP or WebSockets) takes one before anything else of its open is done, so a
// refused connect costs one atomic operation.
//
// Kept as one atomic time (GCRA, the virtual-scheduling form of a token bucket): `next_` is when
// the bucket would be full again. A connect at `now` is allowed while that lies no more than
// burst - 1 intervals ahead, and moves it one interval on. Lock-free; called from every shard.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <limits>

namespace iothub::session {

class connect_limiter {
  public:
    using clock = std::chrono::steady_clock;

    // per_second = 0: unlimited. burst = 0: the same as per_second; never less than one.
    explicit connect_limiter(std::uint32_t per_second, std::uint32_t burst = 0);

    bool unlimited() const { return per_second_ == 0; }
    std::uint32_t per_second() const { return per_second_; }
    std::uint32_t burst() const { return burst_; }

    // Takes one connect if the bucket has one at `now`.
    bool try_acquire(clock::time_point now);
    bool try_acquire() { return unlimited() || try_acquire(clock::now()); }

    // Connects refused so far.
    std::uint64_t refused() const { return refused_.load(std::memory_order_relaxed); }
    // True for at most one caller per second: refusals come in storms, and the log gets a line
    // a second, not one per device.
    bool report_due(clock::time_point now);

  private:
    std::uint32_t per_second_;
    std::uint32_t burst_;
    std::int64_t interval_ns_ = 0;   // between two tokens
    std::int64_t tolerance_ns_ = 0;  // (burst - 1) intervals
    std::atomic<std::int64_t> next_;
    std::atomic<std::uint64_t> refused_{0};
    std::atomic<std::int64_t> last_report_ns_{std::numeric_limits<std::int64_t>::min()};
};

}  // namespace iothub::session
