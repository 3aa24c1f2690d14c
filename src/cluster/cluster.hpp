// One hub node among others (cluster mode): what a node owes its peers so that clients see one
// hub whichever node they reach.
//
//  - Remote changes: what other nodes write to storage reaches this node's memory. A device's
//    cloud-to-device queue and the feedback are reread (a device connected here hears of new
//    messages); an identity deleted, disabled or given new credentials elsewhere loses its
//    connections here.
//  - Presence: kv `presence/<device>[/<module>]` names the node holding an identity's live
//    connection and when it opened. A newer connection on another node ends the one here, so an
//    identity has one live connection across the cluster.
//  - Membership: each node keeps kv `node/<id>` fresh (every five seconds) for `status()`.
//  - The bus (NATS subjects under the hub's prefix): desired-property updates reach a device
//    connected to another node; a direct method call goes to the node that holds the device.
//
// Thread safety: every method may be called from any thread; storage work goes to `offload`.
#pragma once

#include "c2d/c2d.hpp"
#include "common/error.hpp"
#include "connections/connections.hpp"
#include "lifecycle/lifecycle.hpp"
#include "methods/methods.hpp"
#include "nats/settings.hpp"
#include "storage/kv_store.hpp"
#include "twin/twin.hpp"

#include <boost/json/object.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace iothub::cluster {

// Messages between the nodes of one hub.
class bus {
  public:
    virtual ~bus() = default;
    virtual const std::string& node() const = 0;
    // To every node, this one included.
    virtual void broadcast(std::string_view topic, std::string payload) = 0;
    // To one node; `reply` gets its answer, or errc::service_unavailable when none comes within
    // `timeout`. `reply` runs on a bus thread and must only post work.
    virtual void request(std::string_view node, std::string_view topic, std::string payload,
                         std::chrono::milliseconds timeout,
                         std::function<void(result<std::string>)> reply) = 0;
    // Handles a topic (broadcasts and requests alike); `respond` answers a request (a broadcast's
    // is a no-op). Set before start().
    using handler =
        std::function<void(std::string payload, std::function<void(std::string)> respond)>;
    virtual void on(std::string topic, handler h) = 0;
    virtual result<void> start() = 0;
};

// A bus over NATS core subjects `<prefix>.bus.*`.
result<std::unique_ptr<bus>> connect_bus(const nats::connection_settings& settings,
                                         const std::string& prefix);

// A key prefix and what to do when another node changes a key under it (on the node's follower
// thread, in commit order; it may block).
struct follower {
    std::string prefix;
    std::function<void(const storage::kv_change&)> changed;
};

struct services {
    storage::kv_store& kv;
    connections::connection_table& connections;
    c2d::c2d_service& c2d;
    methods::method_service& methods;
    lifecycle::lifecycle_service& lifecycle;
    std::function<void(std::function<void()>)> offload;  // the blocking pool
    std::vector<follower> followers;                     // other state this node mirrors
};

// A background duty one node performs at a time (routing's delivery; later jobs): held through
// kv `duty/<name>` = "<node> <expiry, ns since the epoch>", renewed every third of `ttl`; when
// the holder stops renewing (it died, or lost NATS), another node takes the duty once the
// record expires. `held` hears every change, from the duty's thread. Nodes' clocks are assumed
// synchronised (NTP) to well within `ttl`.
class duty {
  public:
    duty(storage::kv_store& kv, std::string node, std::string name, std::chrono::milliseconds ttl,
         std::function<void(bool held)> held);
    ~duty();  // gives the duty up (another node takes it at once)
    void start();
    bool held() const;

  private:
    struct impl;
    std::unique_ptr<impl> impl_;
};

class node {
  public:
    node(services s, std::unique_ptr<bus> b);
    ~node();
    // Follows remote changes and serves the bus.
    result<void> start();

    const std::string& id() const;
    // This node's connections opening and closing (from the connection table).
    void connection_state(const std::string& device_id, const std::string& module_id, bool up);
    // A desired-property change made here, for devices connected elsewhere.
    void desired_changed(const twin::desired_change& change);
    // A method call for an identity not connected here: true when another node holds it and the
    // call went there (`done` then runs with its outcome). Blocks (reads presence).
    bool forward_method(const methods::method_call& call,
                        methods::method_service::completion& done);
    // Every node of the hub (from the records each keeps fresh in kv `node/<id>`: when it
    // started, when it was last seen, its connected devices) and who holds each duty, as JSON.
    // Blocks.
    result<boost::json::object> status();

  private:
    struct impl;
    std::unique_ptr<impl> impl_;
};

}  // namespace iothub::cluster
