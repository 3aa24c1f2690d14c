// What follows a change to an identity in the registry, in one place rather than in the wiring:
//
//  - deleted: its live connection (and, for a device, its modules' connections) ends, its twin
//    record, cloud-to-device queue and lastActivityTime record go;
//  - disabled, or its credentials changed (keys, thumbprints, authentication kind, a new
//    generation): its live connections end;
//  - in both cases, whatever else holds a grant for the identity (an AMQP connection's put-token)
//    hears that its access ended, so a later attach with the old token fails.
//
// The registry tells observers synchronously after each commit, on the thread that wrote; the
// storage work this causes goes to `offload` (the blocking pool). The lifecycle hub events
// (created, deleted, with the twin as it is or was) are raised here, synchronously on the writing
// thread (a storage thread), so a device's events keep the order of its changes.
//
// Thread safety: observers may be added before the hub serves; changes arrive from any thread.
#pragma once

#include "c2d/c2d.hpp"
#include "connections/activity.hpp"
#include "connections/connections.hpp"
#include "hub_events/hub_events.hpp"
#include "registry/registry.hpp"
#include "twin/twin.hpp"

#include <functional>
#include <string>
#include <vector>

namespace iothub::lifecycle {

struct targets {
    twin::twin_service& twins;
    c2d::c2d_service& c2d;
    connections::connection_table& connections;
    connections::activity_records& activity;
    // Runs storage work off the thread that changed the registry.
    std::function<void(std::function<void()>)> offload;
    // Where created and deleted events are raised; none: not raised.
    hub_events::publisher* events = nullptr;
};

// Why an identity's connections end, as the device hears it; nullopt when they do not.
std::optional<std::string> ending_reason(const registry::identity_change& change);

class lifecycle_service {
  public:
    lifecycle_service(registry::device_registry& registry, targets t);

    using access_observer =
        std::function<void(const std::string& device_id, const std::string& module_id)>;
    // Called when an identity's access ends (deleted, disabled, new credentials).
    void on_access_ended(access_observer observer);

    // The same change, made on another cluster node, which already raised its events and changed
    // storage: here only this node's connections of the identity end (and what holds its grants
    // hears), and a deleted identity's lastActivityTime leaves this node's memory.
    void remote_changed(const registry::identity_change& change);

  private:
    void changed(const registry::identity_change& change);
    void end_access(const registry::identity_change& change);
    void raise(const registry::identity& id, bool created);

    targets t_;
    std::vector<access_observer> access_observers_;
};

}  // namespace iothub::lifecycle
