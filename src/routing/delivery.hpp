// What the router's two ways of delivering share: its endpoint workers, which read the ingest
// log, and the appender, which decides each device message's routes as the message arrives and
// writes it once, to its endpoints. An endpoint's health, every route's outcome for a message and
// the copy an endpoint receives are each made in one place. Internal to the module.
#pragma once

#include "common/time.hpp"
#include "routing/evaluation.hpp"
#include "routing/router.hpp"

#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace iothub::routing {

// One endpoint's health: its worker's and, while routes are decided as device messages arrive,
// the appends made for it then. Shared, so an append finishing after its worker was replaced
// reports to a cell that still exists.
struct router::health_cell {
    health_cell(std::string name, std::chrono::seconds dead)
        : display(std::move(name)), dead_after(dead) {
        health_.endpoint = display;
    }
    endpoint_health get() const {
        std::lock_guard lock(m_);
        return health_;
    }

    void attempted() {
        std::lock_guard lock(m_);
        health_.last_attempt_time = iothub::now();
    }
    void succeeded(std::size_t count) {
        std::lock_guard lock(m_);
        if (health_.status == health_status::unhealthy || health_.status == health_status::dead)
            spdlog::info("routing: endpoint '{}' is healthy again", display);
        health_.status = health_status::healthy;
        health_.last_success_time = iothub::now();
        health_.delivered += count;
    }
    // Unhealthy for longer than the settings allow: Azure's `dead`.
    bool dead() {
        std::lock_guard lock(m_);
        return health_.status == health_status::dead;
    }
    void dropped(std::size_t count, const std::string& why) {
        std::lock_guard lock(m_);
        health_.dropped += count;
        health_.last_error = why;
        health_.last_error_time = health_.last_attempt_time = iothub::now();
    }
    void failed(const std::string& why) {
        std::lock_guard lock(m_);
        const auto now = iothub::now();
        if (health_.status != health_status::unhealthy && health_.status != health_status::dead)
            unhealthy_since_ = now;
        if (health_.status != health_status::dead && now - unhealthy_since_ >= dead_after) {
            spdlog::error("routing: endpoint '{}' is dead after failing since {}: {}", display,
                          format_iso8601(unhealthy_since_), why);
            health_.status = health_status::dead;
        }
        if (health_.status == health_status::dead) {
            health_.last_error = why;
            health_.last_error_time = health_.last_attempt_time = now;
            return;
        }
        if (health_.status != health_status::unhealthy || health_.last_error != why)
            spdlog::warn("routing: endpoint '{}' is unhealthy: {}", display, why);
        health_.status = health_status::unhealthy;
        health_.last_error = why;
        health_.last_error_time = iothub::now();
        health_.last_attempt_time = health_.last_error_time;
    }

    const std::string display;
    const std::chrono::seconds dead_after;

  private:
    mutable std::mutex m_;
    endpoint_health health_;
    sys_time unhealthy_since_{};
};

namespace delivery {

// Every route's outcome for a message of `from` (nullopt: a hub event of no routing source), and
// the fallback's last: false for a disabled route or one of another source. Undefined outcomes
// are counted in `undefined`.
std::vector<query::truth> outcomes(const routing_config& config, std::optional<source> from,
                                   message_view& view, std::atomic<std::uint64_t>& undefined);

// The names every condition of `config` reads (query::condition::roots()), once each: the row a
// message's outcomes are worked out on needs only these.
std::vector<std::string> condition_roots(const routing_config& config);

// The enrichments that apply to `endpoint` (names compared ignoring case), in document order.
std::vector<const enrichment*> enrichments_for(const routing_config& config,
                                               std::string_view endpoint);

// Makes `out` the copy an endpoint receives: `iothub-enqueuedtime` when it has none, then the
// endpoint's enrichments as application properties (`view` made on first need). False, counted
// in `too_large`, when the copy is over `max_bytes`: Azure drops it.
bool finish_copy(storage::event_record& out, sys_time enqueued,
                 std::span<const enrichment* const> enrichments,
                 const std::function<message_view&()>& view, std::string_view hub_name,
                 std::size_t max_bytes, std::atomic<std::uint64_t>& too_large);

}  // namespace delivery
}  // namespace iothub::routing
