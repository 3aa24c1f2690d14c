// How device messages look on Azure IoT Hub's HTTPS device API, as pure functions: telemetry
// from a request's headers (`iothub-app-*` and the system headers) or from a JSON batch
// (`application/vnd.microsoft.iothub.json`), and a cloud-to-device delivery as a response
// (body, quoted lock token in `ETag`, `iothub-*` headers). The routes in device_api.hpp do the
// authentication and the core calls.
#pragma once

#include "c2d/c2d.hpp"
#include "common/error.hpp"
#include "http/message.hpp"
#include "storage/event_log.hpp"

#include <string_view>
#include <vector>

namespace iothub::device_api {

// The content type that marks a batch of events.
inline constexpr std::string_view batch_content_type = "application/vnd.microsoft.iothub.json";
inline constexpr std::string_view app_property_prefix = "iothub-app-";

// The stored system property a wire name (header or batch property, any case) stands for, e.g.
// "IoTHub-MessageId" -> "message-id"; empty when it is not one.
std::string_view system_property_for(std::string_view wire_name);

// The request body as one event; `iothub-app-{name}` headers become application properties
// `{name}` and the system headers system properties. Other headers are ignored.
storage::event_record event_from_request(const http::request& req);

bool is_batch(const http::request& req);

// A batch body: a JSON array of {"body":"<base64>","properties":{..}} (or a string body with
// "base64Encoded":false). errc::format_error when it is not JSON, errc::argument_invalid when an
// item is malformed or the array is empty.
result<std::vector<storage::event_record>> parse_batch(std::string_view body);

// A C2D message handed to the device: 200, the body, and the headers the SDKs read.
http::response delivery_response(const c2d::delivery& d, std::string_view device_id);

// A lock token as sent in a path or an If-Match header, with surrounding quotes removed (the C
// SDK quotes it, Node does not).
std::string_view unquote(std::string_view text);

}  // namespace iothub::device_api
