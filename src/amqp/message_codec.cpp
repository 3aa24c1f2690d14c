#include "amqp/message_codec.hpp"

#include "amqp/detail/wire.hpp"
#include "common/crypto.hpp"
#include "common/encoding.hpp"

#include <algorithm>
#include <cstring>

namespace iothub::amqp {
namespace {

std::string bytes_of(pn_bytes_t b) {
    return b.start ? std::string(b.start, b.size) : std::string();
}

// AMQP timestamps are any int64 of milliseconds, while the hub's times are int64 nanoseconds
// (years 1678 to 2261); a timestamp is clamped well inside that range before conversion.
sys_time time_of(pn_timestamp_t ms) {
    constexpr pn_timestamp_t limit = 9'000'000'000'000;  // about 285 years either side of 1970
    return sys_time(std::chrono::milliseconds(std::clamp(ms, -limit, limit)));
}

std::string uuid_text(const pn_uuid_t& u) {
    auto hex = hex_encode(std::string_view(u.bytes, 16));
    return hex.substr(0, 8) + "-" + hex.substr(8, 4) + "-" + hex.substr(12, 4) + "-" +
           hex.substr(16, 4) + "-" + hex.substr(20);
}

// The current pn_data scalar as text; nullopt for compound values and nulls.
std::optional<std::string> scalar_text(pn_data_t* d) {
    switch (pn_data_type(d)) {
        case PN_STRING:
            return bytes_of(pn_data_get_string(d));
        case PN_SYMBOL:
            return bytes_of(pn_data_get_symbol(d));
        case PN_BINARY:
            return bytes_of(pn_data_get_binary(d));
        case PN_BOOL:
            return std::string(pn_data_get_bool(d) ? "true" : "false");
        case PN_UBYTE:
            return std::to_string(pn_data_get_ubyte(d));
        case PN_BYTE:
            return std::to_string(pn_data_get_byte(d));
        case PN_USHORT:
            return std::to_string(pn_data_get_ushort(d));
        case PN_SHORT:
            return std::to_string(pn_data_get_short(d));
        case PN_UINT:
            return std::to_string(pn_data_get_uint(d));
        case PN_INT:
            return std::to_string(pn_data_get_int(d));
        case PN_ULONG:
            return std::to_string(pn_data_get_ulong(d));
        case PN_LONG:
            return std::to_string(pn_data_get_long(d));
        case PN_FLOAT:
            return std::to_string(pn_data_get_float(d));
        case PN_DOUBLE:
            return std::to_string(pn_data_get_double(d));
        case PN_CHAR:
            return std::to_string(pn_data_get_char(d));
        case PN_UUID:
            return uuid_text(pn_data_get_uuid(d));
        case PN_TIMESTAMP:
            return format_iso8601(time_of(pn_data_get_timestamp(d)));
        default:
            return std::nullopt;
    }
}

storage::property_list map_entries(pn_data_t* d) {
    storage::property_list out;
    pn_data_rewind(d);
    if (!pn_data_next(d) || pn_data_type(d) != PN_MAP) return out;
    pn_data_enter(d);
    while (pn_data_next(d)) {
        auto key = scalar_text(d);
        if (!pn_data_next(d)) break;
        auto value = scalar_text(d);
        if (key && value) out.emplace_back(std::move(*key), std::move(*value));
    }
    pn_data_exit(d);
    return out;
}

std::optional<std::string> map_value(pn_data_t* d, std::string_view name) {
    pn_data_rewind(d);
    if (!pn_data_next(d) || pn_data_type(d) != PN_MAP) return std::nullopt;
    pn_data_enter(d);
    std::optional<std::string> found;
    while (pn_data_next(d)) {
        auto key = scalar_text(d);
        if (!pn_data_next(d)) break;
        if (key && *key == name) {
            found = scalar_text(d);
            break;
        }
    }
    pn_data_exit(d);
    return found;
}

// Positions `d` to append one more entry to its top-level map, creating the map if needed.
void enter_map_end(pn_data_t* d) {
    pn_data_rewind(d);
    if (!pn_data_next(d)) {
        pn_data_put_map(d);
        pn_data_rewind(d);
        pn_data_next(d);
    }
    pn_data_enter(d);
    while (pn_data_next(d)) {
    }
}

void put_key(pn_data_t* d, std::string_view key, bool symbol) {
    auto b = pn_bytes(key.size(), key.data());
    if (symbol)
        pn_data_put_symbol(d, b);
    else
        pn_data_put_string(d, b);
}

}  // namespace

std::string id_text(pn_atom_t id) {
    switch (id.type) {
        case PN_STRING:
            return bytes_of(id.u.as_bytes);
        case PN_BINARY:
            return bytes_of(id.u.as_bytes);
        case PN_UUID:
            return uuid_text(id.u.as_uuid);
        case PN_ULONG:
            return std::to_string(id.u.as_ulong);
        default:
            return {};
    }
}

std::optional<std::string> guid_bytes(std::string_view text) {
    if (text.size() != 36) return std::nullopt;
    std::string out;
    out.reserve(16);
    auto nibble = [](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        return -1;
    };
    for (std::size_t i = 0; i < 36;) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (text[i] != '-') return std::nullopt;
            ++i;
            continue;
        }
        int hi = nibble(text[i]), lo = nibble(text[i + 1]);
        if (hi < 0 || lo < 0) return std::nullopt;
        out.push_back(static_cast<char>(hi * 16 + lo));
        i += 2;
    }
    return out;
}

std::optional<pn_atom_t> uuid_atom(std::string_view text, pn_uuid_t& storage) {
    auto bytes = guid_bytes(text);
    if (!bytes) return std::nullopt;
    std::memcpy(storage.bytes, bytes->data(), 16);
    pn_atom_t a;
    a.type = PN_UUID;
    a.u.as_uuid = storage;
    return a;
}

std::optional<std::string> body_bytes(pn_message_t* m) {
    auto* body = pn_message_body(m);
    pn_data_rewind(body);
    if (!pn_data_next(body)) return std::string();
    switch (pn_data_type(body)) {
        case PN_BINARY:
            return bytes_of(pn_data_get_binary(body));
        case PN_STRING:
            return bytes_of(pn_data_get_string(body));
        case PN_NULL:
            return std::string();
        default:
            return std::nullopt;
    }
}

void set_data_body(pn_message_t* m, std::string_view bytes) {
    auto* body = pn_message_body(m);
    pn_data_clear(body);
    pn_data_put_binary(body, pn_bytes(bytes.size(), bytes.data()));
    pn_message_set_inferred(m, true);  // a binary body goes out as a data section
}

storage::property_list application_properties(pn_message_t* m) {
    return map_entries(pn_message_properties(m));
}
storage::property_list annotations(pn_message_t* m) {
    return map_entries(pn_message_annotations(m));
}
std::optional<std::string> application_property(pn_message_t* m, std::string_view name) {
    return map_value(pn_message_properties(m), name);
}
std::optional<std::string> annotation(pn_message_t* m, std::string_view name) {
    return map_value(pn_message_annotations(m), name);
}

void put_string_property(pn_data_t* d, std::string_view key, std::string_view value,
                         bool symbol_key) {
    enter_map_end(d);
    put_key(d, key, symbol_key);
    pn_data_put_string(d, pn_bytes(value.size(), value.data()));
    pn_data_exit(d);
}
void put_int_property(pn_data_t* d, std::string_view key, std::int32_t value, bool symbol_key) {
    enter_map_end(d);
    put_key(d, key, symbol_key);
    pn_data_put_int(d, value);
    pn_data_exit(d);
}
void put_long_property(pn_data_t* d, std::string_view key, std::int64_t value, bool symbol_key) {
    enter_map_end(d);
    put_key(d, key, symbol_key);
    pn_data_put_long(d, value);
    pn_data_exit(d);
}

namespace {

constexpr std::uint64_t first_section = 0x70;  // header
constexpr std::uint64_t data_section = 0x75;
constexpr std::uint64_t sequence_section = 0x76;
constexpr std::uint64_t value_section = 0x77;
constexpr std::uint64_t last_section = 0x78;  // footer

// Calls fn(code, value bytes) for each section of an encoded message; false when the bytes are
// not a sequence of whole sections.
template <class Fn>
bool for_each_section(std::string_view encoded, Fn fn) {
    for (std::size_t at = 0; at < encoded.size();) {
        auto d = detail::read_descriptor(encoded, at);
        auto end = detail::skip_value(encoded, at);
        if (!d || !end || d->code < first_section || d->code > last_section) return false;
        if (!fn(d->code, encoded.substr(d->value_at, *end - d->value_at))) return false;
        at = *end;
    }
    return true;
}

}  // namespace

result<std::vector<std::string_view>> data_sections(std::string_view encoded) {
    std::vector<std::string_view> out;
    std::optional<error> fault;
    const bool whole = for_each_section(encoded, [&](std::uint64_t code, std::string_view v) {
        if (code == sequence_section || code == value_section) {
            fault = error(errc::format_error, "A batch's body must be data sections.");
            return false;
        }
        if (code != data_section) return true;
        auto bytes = detail::read_binary(v);
        if (!bytes) {
            fault = error(errc::format_error, "A data section does not hold binary.");
            return false;
        }
        out.push_back(*bytes);
        return true;
    });
    if (fault) return *fault;
    if (!whole) return error(errc::format_error, "The message is not a sequence of AMQP sections.");
    if (out.empty()) return error(errc::format_error, "The batch holds no data section.");
    return out;
}

bool well_formed_message(std::string_view encoded) {
    return !encoded.empty() && for_each_section(encoded, [](auto, auto) { return true; });
}

std::optional<std::string> joined_data_body(std::string_view encoded) {
    std::size_t count = 0;
    std::string joined;
    const bool whole = for_each_section(encoded, [&](std::uint64_t code, std::string_view v) {
        if (code != data_section) return true;
        auto bytes = detail::read_binary(v);
        if (!bytes) return false;
        ++count;
        joined.append(*bytes);
        return true;
    });
    if (!whole || count < 2) return std::nullopt;
    return joined;
}

result<storage::event_record> to_event(pn_message_t* m) {
    storage::event_record e;
    auto body = body_bytes(m);
    if (!body) return error(errc::format_error, "The message body must be a data section.");
    e.body = std::move(*body);
    auto sys = [&](std::string name, std::string value) {
        if (!value.empty()) e.system_properties.emplace_back(std::move(name), std::move(value));
    };
    sys("message-id", id_text(pn_message_get_id(m)));
    sys("correlation-id", id_text(pn_message_get_correlation_id(m)));
    sys("user-id", bytes_of(pn_message_get_user_id(m)));
    if (auto* v = pn_message_get_address(m)) sys("to", v);
    if (auto* v = pn_message_get_content_type(m)) sys("content-type", v);
    if (auto* v = pn_message_get_content_encoding(m)) sys("content-encoding", v);
    if (auto t = pn_message_get_expiry_time(m); t > 0)
        sys("absolute-expiry-time", format_iso8601(time_of(t)));
    // Annotations the hub knows travel as system properties; the rest are the device's own.
    for (auto& [k, v] : annotations(m))
        if (k == "iothub-interface-id" || k == "dt-subject" || k == "dt-dataschema" ||
            k == "iothub-creation-time-utc")
            sys(k, v);
    e.application_properties = application_properties(m);
    return e;
}

result<storage::event_record> to_event_hub_event(pn_message_t* m) {
    auto e = to_event(m);
    if (!e) return e;
    for (auto& annotation : annotations(m)) {
        auto& [k, v] = annotation;
        if (!k.starts_with("iothub-") && k != "x-opt-partition-key") continue;
        const auto& name = annotation.first;  // a lambda may not capture a structured binding
        const bool kept = std::any_of(e->system_properties.begin(), e->system_properties.end(),
                                      [&name](const auto& p) { return p.first == name; });
        if (!kept && !v.empty()) e->system_properties.emplace_back(std::move(k), std::move(v));
    }
    return e;
}

result<c2d::message> to_c2d_message(pn_message_t* m) {
    c2d::message out;
    auto body = body_bytes(m);
    if (!body) return error(errc::format_error, "The message body must be a data section.");
    out.body = std::move(*body);
    out.message_id = id_text(pn_message_get_id(m));
    out.correlation_id = id_text(pn_message_get_correlation_id(m));
    out.user_id = bytes_of(pn_message_get_user_id(m));
    if (auto* v = pn_message_get_content_type(m)) out.content_type = v;
    if (auto* v = pn_message_get_content_encoding(m)) out.content_encoding = v;
    if (auto t = pn_message_get_expiry_time(m); t > 0) out.expiry = time_of(t);
    for (auto& [k, v] : application_properties(m)) {
        if (k == "iothub-ack") {
            auto ack = c2d::parse_ack(v);
            if (!ack) return ack.error();
            out.ack = *ack;
            continue;
        }
        out.properties.emplace_back(std::move(k), std::move(v));
    }
    return out;
}

void fill_delivery(pn_message_t* out, const c2d::delivery& d, std::string_view device_id) {
    const auto& c = *d.content;
    pn_message_clear(out);
    auto set_id = [](std::string_view text, auto setter) {
        if (text.empty()) return;
        pn_atom_t a;
        a.type = PN_STRING;
        a.u.as_bytes = pn_bytes(text.size(), text.data());
        setter(a);
    };
    set_id(c.message_id, [&](pn_atom_t a) { pn_message_set_id(out, a); });
    set_id(c.correlation_id, [&](pn_atom_t a) { pn_message_set_correlation_id(out, a); });
    if (!c.user_id.empty())
        pn_message_set_user_id(out, pn_bytes(c.user_id.size(), c.user_id.data()));
    auto to = "/devices/" + percent_encode(device_id) + "/messages/devicebound";
    pn_message_set_address(out, to.c_str());
    if (!c.content_type.empty()) pn_message_set_content_type(out, c.content_type.c_str());
    if (!c.content_encoding.empty())
        pn_message_set_content_encoding(out, c.content_encoding.c_str());
    pn_message_set_expiry_time(out, unix_millis(d.expiry_time));
    auto* props = pn_message_properties(out);
    for (const auto& [k, v] : c.properties) put_string_property(props, k, v);
    if (c.ack != c2d::ack_mode::none)
        put_string_property(props, "iothub-ack", c2d::to_string(c.ack));
    auto* ann = pn_message_annotations(out);
    enter_map_end(ann);
    put_key(ann, "iothub-enqueuedtime", true);
    pn_data_put_timestamp(ann, unix_millis(d.enqueued_time));
    put_key(ann, "x-opt-sequence-number", true);
    pn_data_put_ulong(ann, d.sequence_number);
    put_key(ann, "iothub-deliverycount", true);
    // C# reads the count as a ubyte; it stays below the maximum delivery count.
    pn_data_put_ubyte(ann,
                      static_cast<std::uint8_t>(std::min<std::uint32_t>(d.delivery_count, 255)));
    put_key(ann, "x-opt-lock-token", true);
    pn_data_put_string(ann, pn_bytes(d.lock_token.size(), d.lock_token.data()));
    pn_data_exit(ann);
    set_data_body(out, c.body);
}

namespace {
// Feedback and file notifications share a shape: a fresh message id, the hub's name as user-id
// (C# reads it unconditionally), a JSON content type and `iothub-enqueuedtime`.
void fill_service_notification(pn_message_t* out, const char* content_type, sys_time enqueued,
                               std::string_view body, std::string_view hub_name) {
    pn_message_clear(out);
    auto id = random_uuid();
    pn_atom_t a;
    a.type = PN_STRING;
    a.u.as_bytes = pn_bytes(id.size(), id.data());
    pn_message_set_id(out, a);
    pn_message_set_user_id(out, pn_bytes(hub_name.size(), hub_name.data()));
    pn_message_set_content_type(out, content_type);
    auto* ann = pn_message_annotations(out);
    enter_map_end(ann);
    put_key(ann, "iothub-enqueuedtime", true);
    pn_data_put_timestamp(ann, unix_millis(enqueued));
    pn_data_exit(ann);
    set_data_body(out, body);
}
}  // namespace

void fill_feedback(pn_message_t* out, const c2d::feedback_batch& batch, std::string_view hub_name) {
    fill_service_notification(out, "application/vnd.microsoft.iothub.feedback.json",
                              batch.enqueued_time, c2d::feedback_json(batch.records), hub_name);
}

void fill_file_notification(pn_message_t* out, sys_time enqueued_time, std::string_view body,
                            std::string_view hub_name) {
    fill_service_notification(out, "application/vnd.microsoft.iothub.filenotification.json",
                              enqueued_time, body, hub_name);
}

}  // namespace iothub::amqp
