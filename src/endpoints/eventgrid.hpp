// Event Grid subscriptions, as Azure IoT Hub's Event Grid integration offers them, without Event
// Grid: the hub keeps the subscriptions (ARM's Microsoft.EventGrid/eventSubscriptions shape) and
// delivers to their WebHook endpoints itself.
//
//  - Event types: Microsoft.Devices.DeviceCreated, DeviceDeleted (lifecycle events),
//    DeviceConnected, DeviceDisconnected (connection-state events), and DeviceTelemetry for the
//    device messages a route sends to the built-in endpoint name `eventgrid`, as in Azure.
//  - Each subscription is a routing tap: its own cursors, health and retries, so a slow receiver
//    holds back only itself. It starts with what happens after it was created.
//  - Before anything else, the validation handshake: a
//  Microsoft.EventGrid.SubscriptionValidationEvent
//    POSTed with `aeg-event-type: SubscriptionValidation`, answered by a 2xx whose body is
//    {"validationResponse": <the code>}. Until then the subscription is not active: its events are
//    not sent (they are dropped and counted), and the handshake is retried with backoff.
//  - Delivery as Event Grid does it: a JSON array POSTed with `aeg-event-type: Notification`, in
//    the Event Grid or CloudEvents 1.0 schema; non-2xx answers and timeouts are retried with
//    backoff (the first retry within a second) until `maxDeliveryAttempts` or the event's
//    `eventTimeToLiveInMinutes` runs out, then the event is dropped and counted.
#pragma once

#include "http/client.hpp"
#include "routing/router.hpp"
#include "storage/kv_store.hpp"

#include <boost/json/object.hpp>

#include <atomic>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace iothub::endpoints {

struct event_subscription {
    std::string name;
    std::string endpoint_url;
    std::vector<std::string> included_event_types;  // empty: all
    std::string subject_begins_with;
    std::string subject_ends_with;
    bool cloud_events = false;  // CloudEventSchemaV1_0, else EventGridSchema
    std::uint32_t max_delivery_attempts = 30;
    std::uint32_t event_ttl_minutes = 1440;
    std::uint32_t max_events_per_batch = 1;
    // Kept by the hub.
    bool validated = false;
    std::uint64_t delivered = 0;
    std::uint64_t dropped = 0;
};

// The body of PUT /eventSubscriptions/{name}: {"properties": {...}} or the properties alone.
// errc::argument_invalid names the fault.
result<event_subscription> parse_subscription(std::string_view name, std::string_view body);
// As GET shows it: ARM's resource with properties.provisioningState ("AwaitingManualAction" until
// validated, then "Succeeded") and the hub's counts.
boost::json::object to_json(const event_subscription& s);

// The Event Grid type of a routed message or hub event, or empty when it has none.
std::string event_type_of(const storage::event_record& r);
// `devices/{deviceId}` (`/modules/{moduleId}` for a module).
std::string subject_of(const storage::event_record& r);

class event_grid {
  public:
    event_grid(storage::kv_store& kv, routing::router& router, std::string hub_name,
               http::client_options client = {});
    // Takes its taps out of the router first: their sinks refer to it.
    ~event_grid();
    event_grid(const event_grid&) = delete;
    event_grid& operator=(const event_grid&) = delete;

    // Loads the stored subscriptions and puts them in force.
    result<void> start();
    // Reads the stored subscriptions again (cluster mode: another node changed one).
    result<void> reload();

    // Creates or replaces; the handshake follows (a changed subscription validates again).
    result<event_subscription> put(event_subscription s);
    result<event_subscription> get(std::string_view name);
    result<std::vector<event_subscription>> list();
    result<void> remove(std::string_view name);

    // The event as a subscription of the given schema receives it.
    boost::json::object event_for(const storage::event_record& r, bool cloud_events) const;

  private:
    class sink;
    result<void> publish();
    result<void> save(const event_subscription& s);
    void counted(const std::string& name, bool validated, std::uint64_t delivered,
                 std::uint64_t dropped);

    storage::kv_store& kv_;
    routing::router& router_;
    std::string hub_name_;
    std::string topic_;
    http::client_options client_;
    std::mutex publish_mutex_;
    std::mutex mutex_;
    std::map<std::string, event_subscription> subscriptions_;  // by lower-case name
};

}  // namespace iothub::endpoints
