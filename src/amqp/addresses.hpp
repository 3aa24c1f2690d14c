// The AMQP node addresses Azure IoT Hub serves, as the SDKs spell them. Clients disagree on the
// form (`/devices/d/messages/devicebound`, `amqps://host/devices/d/messages/deviceBound`,
// `amqps://host:5671/...`), so an address is normalised before it is classified: scheme and host
// dropped, fixed segments compared case-insensitively, ids kept exactly (percent-decoded when
// that is how they arrive). No I/O; fuzzed.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace iothub::amqp {

struct node_address {
    enum class kind {
        cbs,                         // $cbs
        device_events,               // /devices/{d}[/modules/{m}]/messages/events
        device_c2d,                  // /devices/{d}/messages/devicebound
        device_methods,              // /devices/{d}[/modules/{m}]/methods/devicebound
        device_twin,                 // /devices/{d}[/modules/{m}]/twin
        service_c2d,                 // /messages/devicebound
        service_feedback,            // /messages/serviceBound/feedback
        service_file_notifications,  // /messages/serviceBound/filenotifications
        eh_management,               // $management (Event Hubs)
        eh_partition,                // {entity}/ConsumerGroups/{cg}/Partitions/{n} (Event Hubs)
        eh_entity,                   // {entity}[/Partitions/{n}]: an event hub sent to
        dps_registration,            // {idScope}/registrations/{registrationId} (provisioning)
        unknown,
    };
    kind what = kind::unknown;
    std::string device_id;
    std::string module_id;
    std::string entity;          // eh_*: the event hub's name as the client wrote it
    std::string consumer_group;  // eh_partition
    std::string partition;       // eh_partition, eh_entity (empty: none named): text, unchecked
    std::string id_scope, registration_id;  // dps_registration

    bool is_device() const {
        return what == kind::device_events || what == kind::device_c2d ||
               what == kind::device_methods || what == kind::device_twin;
    }
};

node_address classify_address(std::string_view address);

// The device a service-sent C2D message is for, from its `to` property
// (`/devices/{url-encoded id}/messages/devicebound`). nullopt when `to` names no device.
std::optional<std::string> c2d_target_device(std::string_view to);

}  // namespace iothub::amqp
