// How a routed message's system properties travel as header names on transports that have no
// place of their own for them (webhook HTTP headers, Kafka headers).
#pragma once

#include <string>
#include <string_view>

namespace iothub::endpoints {

// `iothub-` and the wire name, unless it has that prefix already (iothub-connection-device-id
// stays as it is, content-type becomes iothub-content-type).
inline std::string system_header(std::string_view wire_name) {
    if (wire_name.starts_with("iothub-")) return std::string(wire_name);
    return "iothub-" + std::string(wire_name);
}

}  // namespace iothub::endpoints
