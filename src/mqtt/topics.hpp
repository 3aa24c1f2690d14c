// Azure IoT Hub's MQTT conventions on top of plain MQTT: the CONNECT username, the device topics,
// and property bags (`key=value&...` appended to a topic), with no I/O.
#pragma once

#include "storage/event_log.hpp"

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace iothub::mqtt {

// `{host}/{deviceId}[/{moduleId}]/?api-version=..&DeviceClientType=..[&model-id=..]`, and the
// older `{host}/{deviceId}/api-version=..` and bare `{host}/{deviceId}` forms.
struct username_info {
    std::string host;
    std::string device_id;
    std::string module_id;
    std::string api_version;
    std::string client_type;
    std::string model_id;
};
std::optional<username_info> parse_username(std::string_view username);

// The provisioning service's: `{idScope}/registrations/{registrationId}/api-version=..[&..]`.
struct dps_username {
    std::string id_scope;
    std::string registration_id;
    std::string api_version;
};
std::optional<dps_username> parse_dps_username(std::string_view username);

// A provisioning client's publish: `$dps/registrations/PUT/iotdps-register/?$rid={rid}` or
// `$dps/registrations/GET/iotdps-get-operationstatus/?$rid={rid}&operationId={id}`.
struct dps_publish {
    enum class kind { register_device, operation_status, unknown } what = kind::unknown;
    std::string rid;
    std::string operation_id;
};
dps_publish classify_dps_publish(std::string_view topic);
inline constexpr std::string_view dps_response_filter = "$dps/registrations/res/#";

// Decodes `a=1&%24.mid=x&b` into (name, value) pairs. Percent-escapes are decoded where they are
// valid and kept verbatim where they are not (the C SDK does not encode values); '+' is kept.
storage::property_list parse_property_bag(std::string_view bag);

// Encodes pairs for a device-bound topic: every character outside RFC 3986's unreserved set
// percent-encoded, names included (so "$.mid" is sent as "%24.mid", the only form the C SDK
// recognises).
std::string encode_property_bag(const storage::property_list& properties);

// A PUBLISH topic from a device, classified. Ids compare against the authenticated identity
// literally, so ids with MQTT-special characters (# + $) still work.
struct topic_info {
    enum class kind {
        telemetry,            // devices/{d}[/modules/{m}]/messages/events/{bag}
        twin_get,             // $iothub/twin/GET/?$rid=..
        twin_patch_reported,  // $iothub/twin/PATCH/properties/reported/?$rid=..[&$version=..]
        method_response,      // $iothub/methods/res/{status}/?$rid=..
        other_identity,       // a device topic of another device or module: not allowed
        unknown,
    };
    kind what = kind::unknown;
    std::string bag;                       // telemetry: the raw property bag
    std::string rid;                       // twin and method requests
    int status = 0;                        // method responses
    std::optional<std::uint64_t> version;  // conditional reported patch
};
topic_info classify_publish(std::string_view topic, std::string_view device_id,
                            std::string_view module_id);

// The subscription filters Azure's device SDKs use, for the authenticated identity.
enum class filter_kind { c2d, module_inputs, twin_responses, twin_desired, methods, unknown };
filter_kind classify_filter(std::string_view filter, std::string_view device_id,
                            std::string_view module_id);

// Builds the event a telemetry PUBLISH becomes: system properties from the bag's `$.` names
// (`$.mid` -> message-id, `$.ct` -> content-type, ...), the rest as application properties.
storage::event_record telemetry_event(std::string payload, const storage::property_list& bag);

}  // namespace iothub::mqtt
