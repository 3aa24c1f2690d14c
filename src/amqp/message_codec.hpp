// Between AMQP messages (Qpid Proton's pn_message_t) and the hub's own: device telemetry, the
// service's cloud-to-device messages, the deliveries and feedback the hub sends, and the small
// request/response messages of CBS, twins and methods. Types follow what the SDKs insist on
// (protocol.md 3): status codes as int32, twin versions as int64, method request ids as uuid.
#pragma once

#include "c2d/c2d.hpp"
#include "common/error.hpp"
#include "storage/event_log.hpp"

#include <proton/codec.h>
#include <proton/message.h>

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace iothub::amqp {

struct message_deleter {
    void operator()(pn_message_t* m) const { pn_message_free(m); }
};
using message_ptr = std::unique_ptr<pn_message_t, message_deleter>;
inline message_ptr make_message() {
    return message_ptr(pn_message());
}

// A message-id or correlation-id as text: strings as they are, uuids in their 36-character form,
// numbers in decimal, binary as its bytes. Empty when absent.
std::string id_text(pn_atom_t id);
// A uuid atom from its text form; nullopt when `text` is not a uuid.
std::optional<pn_atom_t> uuid_atom(std::string_view text, pn_uuid_t& storage);

// The body as bytes: a data section, or an amqp-value string or binary. nullopt for other
// bodies (sequences, maps): the hub's messages carry bytes.
std::optional<std::string> body_bytes(pn_message_t* m);
void set_data_body(pn_message_t* m, std::string_view bytes);

// Application properties (or message annotations) with scalar values rendered as text; a
// property whose value is not a scalar is skipped.
storage::property_list application_properties(pn_message_t* m);
storage::property_list annotations(pn_message_t* m);
std::optional<std::string> application_property(pn_message_t* m, std::string_view name);
std::optional<std::string> annotation(pn_message_t* m, std::string_view name);

// The content of each data section of an encoded message, in order: what a batched message
// (format 0x80013700) carries, one encoded message per section. errc::format_error when the bytes
// are not a sequence of message sections or the body has no data section or another kind.
result<std::vector<std::string_view>> data_sections(std::string_view encoded);
// Whether `encoded` is a sequence of whole message sections (header to footer), each within the
// bytes given. Proton decodes some truncated sections without complaint; a batch's inner
// messages are held to this first.
bool well_formed_message(std::string_view encoded);
// A plain message's body spread over two or more data sections, joined in order; nullopt for one
// section or none. Proton keeps only the last data section of a body, which would drop the rest.
std::optional<std::string> joined_data_body(std::string_view encoded);

// A device's telemetry message as the event log stores it (the sender's stamp is added later).
// errc::format_error for a body that is not bytes.
result<storage::event_record> to_event(pn_message_t* m);

// An event an Event Hubs producer sent to a hosted event hub: what to_event keeps, plus every
// `iothub-*` annotation (a routed message's device, auth method, source ...) and
// `x-opt-partition-key` as system properties, so readers see them as annotations again.
result<storage::event_record> to_event_hub_event(pn_message_t* m);

// A service's C2D message; `iothub-ack` parsed. The target device comes from `to`, separately.
result<c2d::message> to_c2d_message(pn_message_t* m);

// What the device receives (protocol.md 3.5).
void fill_delivery(pn_message_t* out, const c2d::delivery& d, std::string_view device_id);

// A batch of feedback records for the service (protocol.md 3.10).
void fill_feedback(pn_message_t* out, const c2d::feedback_batch& batch, std::string_view hub_name);

// A file-upload notification for the service (protocol.md 3.9): `body` is its JSON object.
void fill_file_notification(pn_message_t* out, sys_time enqueued_time, std::string_view body,
                            std::string_view hub_name);

// Writers for the small maps request/response messages carry. `value` is a string unless the
// writer says otherwise.
void put_string_property(pn_data_t* map_data, std::string_view key, std::string_view value,
                         bool symbol_key = false);
void put_int_property(pn_data_t* map_data, std::string_view key, std::int32_t value,
                      bool symbol_key = false);
void put_long_property(pn_data_t* map_data, std::string_view key, std::int64_t value,
                       bool symbol_key = false);

// The 16 bytes of a lock token's GUID, for delivery tags; nullopt when it is not a GUID.
std::optional<std::string> guid_bytes(std::string_view text);

}  // namespace iothub::amqp
