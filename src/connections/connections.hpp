// Who is connected right now: one live connection per device or module identity, across all
// protocols and shards. A new connection for an identity closes the previous one (Azure's rule),
// registry changes that revoke access close them, and the registry's live fields
// (connectionState, connectionStateUpdatedTime, lastActivityTime) are read from here.
//
// Thread safety: every method may be called from any thread. Each connection's `close` callback
// must be thread-safe (it posts to the connection's own shard); it is never called with the table
// locked.
#pragma once

#include "common/time.hpp"
#include "registry/identity.hpp"

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace iothub::connections {

// What the hub pushes to a device over its live connection, whatever the protocol. Calls come
// from any thread; an implementation posts to its connection's own shard and drops what it cannot
// deliver (the connection closed meanwhile).
class device_channel {
  public:
    virtual ~device_channel() = default;
    // Whether the device listens for desired-property notifications (MQTT: subscribed).
    virtual bool wants_desired_updates() const = 0;
    // `patch` is the JSON text, `$version` included.
    virtual void send_desired_update(std::string patch, std::uint64_t version) = 0;
    // Whether the device accepts direct method calls (MQTT: subscribed).
    virtual bool accepts_methods() const = 0;
    virtual void send_method_request(std::string name, std::string request_id,
                                     std::string payload) = 0;
    // A cloud-to-device message became available for this device (sent, abandoned, or its lock
    // timed out): a connection that takes C2D messages pulls them with c2d_service::receive.
    virtual void c2d_available() {}
};

class connection_table {
  public:
    struct entry {
        std::string device_id;
        std::string module_id;
        std::function<void(const std::string& reason)> close;
        std::weak_ptr<device_channel> channel;  // empty for connections that push nothing
        std::atomic<std::int64_t> last_activity_ns{0};

        // Cheap enough for every message: one relaxed store.
        void touch(sys_time t) {
            last_activity_ns.store(t.time_since_epoch().count(), std::memory_order_relaxed);
        }
    };

    // Told of each change of an identity's connection state, in the order they happen: connected
    // (attach), disconnected (the live connection ended), and for a takeover disconnected then
    // connected. Called with the table's lock held, so it must not block or call the table.
    // Set before the hub serves.
    using state_observer = std::function<void(const std::string& device_id,
                                              const std::string& module_id, bool connected)>;
    void on_state_change(state_observer observer) { observer_ = std::move(observer); }

    // Registers a live connection and closes the identity's previous one, if any.
    std::shared_ptr<entry> attach(std::string device_id, std::string module_id,
                                  std::function<void(const std::string&)> close, sys_time now,
                                  std::weak_ptr<device_channel> channel = {});
    // Activity of an identity that has no live connection (a device polling over HTTPS): its
    // lastActivityTime moves all the same.
    void touch(const std::string& device_id, const std::string& module_id, sys_time now);
    // Forgets a connection that ended; a no-op if a newer one has replaced it.
    void detach(const std::shared_ptr<entry>& e, sys_time now);

    // Closes the identity's connection; for a device with `with_modules`, its modules' too.
    void close(const std::string& device_id, const std::string& module_id,
               const std::string& reason, bool with_modules);

    std::shared_ptr<entry> find(const std::string& device_id, const std::string& module_id) const;
    // The live connection's channel, if it is connected and has one.
    std::shared_ptr<device_channel> channel(const std::string& device_id,
                                            const std::string& module_id) const;
    registry::live_state live(const registry::identity& id) const;

    // Cluster mode: the identity's connection on another node opened (`connected`) or ended, at
    // `at`, so the live fields are right on every node. A connection here supersedes it.
    void connected_elsewhere(const std::string& device_id, const std::string& module_id,
                             bool connected, sys_time at);
    std::size_t connected_devices() const;

    // Sends a desired-properties patch over the identity's connection when it has one that asked
    // for them; false otherwise.
    bool deliver_desired(const std::string& device_id, const std::string& module_id,
                         std::string patch, std::uint64_t version) const;

    // lastActivityTime across restarts: the identities whose last activity moved since the last
    // call ("d" or "d/m", nanoseconds since the epoch), for writing behind; and the times read
    // back at start.
    std::vector<std::pair<std::string, std::int64_t>> changed_activity();
    void restore_activity(const std::string& key, std::int64_t last_activity_ns);
    void forget(const std::string& device_id, const std::string& module_id);

  private:
    struct status {
        std::shared_ptr<entry> current;  // null while disconnected
        bool elsewhere = false;          // cluster mode: connected to another node
        sys_time state_updated;
        std::int64_t last_activity_ns = 0;
        std::int64_t recorded_ns = 0;  // what changed_activity() last handed out
    };
    static std::string key(const std::string& d, const std::string& m) {
        return m.empty() ? d : d + "/" + m;
    }

    mutable std::mutex mutex_;
    state_observer observer_;
    std::map<std::string, status, std::less<>> identities_;
    std::size_t connected_devices_ = 0;  // device connections only, as Azure counts them
};

}  // namespace iothub::connections
