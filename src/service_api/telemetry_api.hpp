// The service-side telemetry streaming API over HTTPS (ServiceConnect), which `iothub monitor`
// uses and which serves until clients can use the Event Hubs-compatible AMQP endpoint.
//
//   GET  /telemetry/partitions
//        -> {"partitionCount":4,"partitions":[{"partitionId":"0","beginSequenceNumber":0,
//            "lastEnqueuedSequenceNumber":-1,"lastEnqueuedTimeUtc":null,"isEmpty":true},...]}
//   GET  /telemetry/events?from=SPEC[&partitions=0,2][&cursor=C][&max=N][&wait=S]
//             [&consumerGroup=CG]
//        SPEC: earliest | latest | sequence:N (from N on) | time:ISO-8601 (enqueued after) |
//              checkpoint (the consumer group's stored cursor, else earliest).
//        `cursor` ("0:15,1:7": next sequence number per partition) continues a previous read and
//        overrides `from`. Returns {"events":[...],"cursor":"..."}; with wait > 0 (at most 60)
//        and nothing to read, it answers as soon as an event arrives or after `wait` seconds.
//        max: 1-1000 (default 100).
//   GET/PUT/DELETE /telemetry/consumergroups/{name}, GET /telemetry/consumergroups
//        ($Default always exists and cannot be deleted; at most 20 groups).
//   GET/PUT /telemetry/consumergroups/{name}/checkpoint   body/answer {"cursor":"0:15,1:7"}
//
// An event: {"partition":"0","sequenceNumber":12,"offset":"12","enqueuedTimeUtc":"...",
//            "body":"...","bodyEncoding":"utf-8"|"base64","properties":{..},
//            "systemProperties":{"message-id":..,"iothub-connection-device-id":..,...}}
#pragma once

#include "auth/policy.hpp"
#include "http/router.hpp"
#include "storage/event_log.hpp"
#include "storage/kv_store.hpp"
#include "telemetry/consumer_groups.hpp"

#include <chrono>
#include <functional>

namespace iothub::service_api {

struct telemetry_context {
    const auth::policy_set& policies;
    const auth::host_names& hosts;
    storage::event_log& events;
    telemetry::consumer_groups& groups;
    // Runs blocking work (storage reads) off the network shards.
    std::function<void(std::function<void()>)> offload;
    // Calls `fn` once after `delay`, from some thread.
    std::function<void(std::chrono::milliseconds delay, std::function<void()> fn)> after;
};

void add_telemetry_routes(http::router& routes, telemetry_context ctx);

// Cursor text <-> next sequence per partition; exposed for tests.
std::string format_cursor(const std::vector<std::pair<int, std::uint64_t>>& cursor);
result<std::vector<std::pair<int, std::uint64_t>>> parse_cursor(std::string_view text,
                                                                int partitions);

}  // namespace iothub::service_api
