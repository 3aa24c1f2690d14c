#include "hub_events/hub_events.hpp"

#include "common/crypto.hpp"

#include <spdlog/spdlog.h>

#include <cstdio>

namespace iothub::hub_events {
namespace {

storage::event_record envelope(std::string_view hub, subject who, std::string_view source,
                               std::string_view schema, std::string_view op, std::string body,
                               sys_time at) {
    storage::event_record e;
    e.body = std::move(body);
    e.application_properties = {{"hubName", std::string(hub)},
                                {"deviceId", std::string(who.device_id)},
                                {"operationTimestamp", format_iso8601(at)},
                                {"iothub-message-schema", std::string(schema)},
                                {"opType", std::string(op)}};
    if (!who.module_id.empty()) e.application_properties.emplace_back("moduleId", who.module_id);
    auto id = random_uuid();
    e.system_properties = {{"message-id", id},
                           {"correlation-id", id},
                           {"user-id", std::string(hub)},
                           {"content-type", "application/json"},
                           {"content-encoding", "utf-8"},
                           {"iothub-connection-device-id", std::string(who.device_id)},
                           {"iothub-message-source", std::string(source)}};
    if (!who.module_id.empty())
        e.system_properties.emplace_back("iothub-connection-module-id", who.module_id);
    return e;
}

}  // namespace

storage::event_record twin_change(std::string_view hub, subject who, std::string_view op,
                                  std::string body, sys_time at) {
    return envelope(hub, who, twin_change_source, "twinChangeNotification", op, std::move(body),
                    at);
}

storage::event_record lifecycle(std::string_view hub, subject who, bool created, std::string twin,
                                sys_time at) {
    return envelope(hub, who, lifecycle_source, "deviceLifecycleNotification",
                    created ? created_op : deleted_op, std::move(twin), at);
}

storage::event_record connection_state(std::string_view hub, subject who, bool connected,
                                       std::string_view sequence_number, sys_time at) {
    std::string body = "{\"sequenceNumber\":\"";
    body += sequence_number;
    body += "\"}";
    return envelope(hub, who, connection_state_source, "deviceConnectionStateNotification",
                    connected ? connected_op : disconnected_op, std::move(body), at);
}

publisher::publisher(storage::event_log& log, std::string hub_name, std::function<sys_time()> clock)
    : log_(log), hub_name_(std::move(hub_name)), clock_(std::move(clock)) {}

std::string publisher::next_sequence_number() {
    // Ticks never go back, even if the clock does; the counter breaks ties within a tick.
    const auto now_ticks = static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(clock_().time_since_epoch()).count() /
        100);
    std::uint64_t ticks = last_ticks_.load();
    while (ticks < now_ticks && !last_ticks_.compare_exchange_weak(ticks, now_ticks)) {
    }
    ticks = std::max(ticks, now_ticks);
    const std::uint64_t n = ++counter_;
    char out[65];
    std::snprintf(out, sizeof out, "%032llx%032llx", static_cast<unsigned long long>(ticks),
                  static_cast<unsigned long long>(n));
    return out;
}

unsigned interest::bit(std::string_view source) {
    if (source == twin_change_source) return 1u << 0;
    if (source == lifecycle_source) return 1u << 1;
    if (source == connection_state_source) return 1u << 2;
    if (source == job_lifecycle_source) return 1u << 3;
    return 0;
}

bool interest::wants(std::string_view source) const {
    const auto b = bit(source);
    return b == 0 || (bits_.load(std::memory_order_relaxed) & b) != 0;
}

void interest::set(std::string_view source, bool wanted) {
    if (wanted)
        bits_.fetch_or(bit(source), std::memory_order_relaxed);
    else
        bits_.fetch_and(~bit(source), std::memory_order_relaxed);
}

void publisher::device_lifecycle(subject who, bool created, std::string twin) {
    if (!interest_.wants(lifecycle_source)) return;
    raise(who, lifecycle(hub_name_, who, created, std::move(twin), clock_()));
}

void publisher::connection_state(subject who, bool connected) {
    if (!interest_.wants(connection_state_source)) return;
    raise(who, hub_events::connection_state(hub_name_, who, connected, next_sequence_number(),
                                            clock_()));
}

void publisher::raise(subject who, storage::event_record event) {
    const int partition = storage::partition_for(who.device_id, log_.partition_count());
    std::vector<storage::event_record> events;
    events.push_back(std::move(event));
    log_.append(partition, std::move(events),
                [device = std::string(who.device_id)](result<std::vector<std::uint64_t>> r) {
                    if (!r)
                        spdlog::warn("hub events: an event about {} was not stored: {}", device,
                                     r.error().message());
                });
}

}  // namespace iothub::hub_events
