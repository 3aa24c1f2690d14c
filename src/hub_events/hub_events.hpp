// The events the hub raises about devices, built and raised here and nowhere else: twin changes,
// identity lifecycle (created, deleted) and connection state (connected, disconnected). Each is a
// message in Azure's non-telemetry envelope (application properties hubName, deviceId, moduleId,
// opType, operationTimestamp, iothub-message-schema; system properties content type and encoding,
// correlation and user id, iothub-connection-device-id, iothub-message-source) appended to the
// engine's `hub_events` log, the device's partition, for routing to deliver where routes say.
//
// A twin change is committed with the twin record itself (twin_service appends the record this
// module builds with append_with), so a crash keeps both or neither. Lifecycle and connection
// events follow the change that caused them; a crash between the two may lose the event.
//
// Thread safety: a publisher may be used from any thread; raise() does not block.
#pragma once

#include "common/time.hpp"
#include "storage/event_log.hpp"

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

namespace iothub::hub_events {

struct subject {
    std::string_view device_id;
    std::string_view module_id;  // empty for a device
};

// iothub-message-source values, as Azure writes them.
inline constexpr std::string_view twin_change_source = "twinChangeEvents";
inline constexpr std::string_view lifecycle_source = "deviceLifecycleEvents";
inline constexpr std::string_view connection_state_source = "deviceConnectionStateEvents";
inline constexpr std::string_view job_lifecycle_source = "deviceJobLifecycleEvents";  // with jobs

// opType values.
inline constexpr std::string_view created_op = "createDeviceIdentity";
inline constexpr std::string_view deleted_op = "deleteDeviceIdentity";
inline constexpr std::string_view connected_op = "deviceConnected";
inline constexpr std::string_view disconnected_op = "deviceDisconnected";

// `op` is updateTwin (a patch) or replaceTwin; `body` the JSON Azure sends for it.
storage::event_record twin_change(std::string_view hub, subject who, std::string_view op,
                                  std::string body, sys_time at);
// `twin` is the identity's twin as GET /twins shows it (on delete: as it was).
storage::event_record lifecycle(std::string_view hub, subject who, bool created, std::string twin,
                                sys_time at);
// `sequence_number` is 64 hex digits, increasing with every event the hub raises (see publisher).
storage::event_record connection_state(std::string_view hub, subject who, bool connected,
                                       std::string_view sequence_number, sys_time at);

// Which hub events something reads. Routing says, as its routes and subscriptions change, and
// the publisher raises only those: an event nothing reads would cost a write per connect, per
// created device, for nothing (Azure, too, routes only what is raised while a route exists).
// Until told otherwise, every kind is wanted.
class interest {
  public:
    bool wants(std::string_view source) const;
    void set(std::string_view source, bool wanted);

  private:
    static unsigned bit(std::string_view source);
    std::atomic<unsigned> bits_{~0u};
};

class publisher {
  public:
    publisher(
        storage::event_log& log, std::string hub_name,
        std::function<sys_time()> clock = [] { return iothub::now(); });

    void device_lifecycle(subject who, bool created, std::string twin);
    void connection_state(subject who, bool connected);

    // Appends to the subject's partition; a failure is logged (the change itself has happened).
    void raise(subject who, storage::event_record event);

    hub_events::interest& interest() { return interest_; }

    const std::string& hub_name() const { return hub_name_; }
    // A connection-state sequence number: 64 hex digits, strictly increasing across calls and
    // across restarts (the first half is the clock in 100 ns ticks, the second a counter), so
    // readers may order events by comparing the strings.
    std::string next_sequence_number();

  private:
    storage::event_log& log_;
    std::string hub_name_;
    std::function<sys_time()> clock_;
    std::atomic<std::uint64_t> last_ticks_{0};
    std::atomic<std::uint64_t> counter_{0};
    hub_events::interest interest_;
};

}  // namespace iothub::hub_events
