#include "session/connect_limiter.hpp"

#include <algorithm>
#include <limits>

namespace iothub::session {

connect_limiter::connect_limiter(std::uint32_t per_second, std::uint32_t burst)
    : per_second_(per_second),
      burst_(std::max<std::uint32_t>(1, burst ? burst : per_second)),
      next_(std::numeric_limits<std::int64_t>::min()) {
    if (per_second_ == 0) return;
    interval_ns_ = std::max<std::int64_t>(1, 1'000'000'000 / per_second_);
    tolerance_ns_ = interval_ns_ * (static_cast<std::int64_t>(burst_) - 1);
}

bool connect_limiter::try_acquire(clock::time_point now) {
    if (unlimited()) return true;
    const std::int64_t t =
        std::chrono::duration_cast<std::chrono::nanoseconds>(now.time_since_epoch()).count();
    auto next = next_.load(std::memory_order_relaxed);
    for (;;) {
        const std::int64_t from = std::max(next, t);  // an idle bucket is full, no fuller
        if (from - t > tolerance_ns_) {
            refused_.fetch_add(1, std::memory_order_relaxed);
            return false;
        }
        if (next_.compare_exchange_weak(next, from + interval_ns_, std::memory_order_relaxed))
            return true;
    }
}

bool connect_limiter::report_due(clock::time_point now) {
    const std::int64_t t =
        std::chrono::duration_cast<std::chrono::nanoseconds>(now.time_since_epoch()).count();
    auto last = last_report_ns_.load(std::memory_order_relaxed);
    if (last != std::numeric_limits<std::int64_t>::min() && t - last < 1'000'000'000) return false;
    return last_report_ns_.compare_exchange_strong(last, t, std::memory_order_relaxed);
}

}  // namespace iothub::session
