#include "device_api/messages.hpp"

#include "common/encoding.hpp"
#include "common/time.hpp"

#include <boost/json.hpp>

#include <utility>

namespace iothub::device_api {
namespace json = boost::json;

namespace {

bool starts_with_ci(std::string_view text, std::string_view prefix) {
    return text.size() >= prefix.size() && iequals(text.substr(0, prefix.size()), prefix);
}

// An expiry the hub can read is stored in the ISO-8601 form every other protocol produces; one it
// cannot is kept as sent rather than lost.
std::string normalized(std::string_view stored_name, std::string_view value) {
    if (stored_name == "absolute-expiry-time" || stored_name == "iothub-creation-time-utc")
        if (auto t = parse_iso8601(value)) return format_iso8601(*t);
    return std::string(value);
}

// Adds one wire property (header or batch property) to `e`: `iothub-app-*` as the device's own,
// a known system name as a system property; `unknown_as_app` says what the rest are.
void add_property(storage::event_record& e, std::string_view name, std::string_view value,
                  bool unknown_as_app) {
    if (starts_with_ci(name, app_property_prefix)) {
        auto own = name.substr(app_property_prefix.size());
        if (!own.empty()) e.application_properties.emplace_back(std::string(own), value);
        return;
    }
    if (auto sys = system_property_for(name); !sys.empty()) {
        e.system_properties.emplace_back(std::string(sys), normalized(sys, value));
        return;
    }
    if (unknown_as_app) e.application_properties.emplace_back(std::string(name), value);
}

// What may go into a response header without breaking the message: a token for the name, no
// control characters (CR and LF above all) in the value.
bool header_name_ok(std::string_view name) {
    if (name.empty()) return false;
    for (unsigned char c : name) {
        bool token = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                     std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(c)) !=
                         std::string_view::npos;
        if (!token) return false;
    }
    return true;
}
bool header_value_ok(std::string_view value) {
    for (unsigned char c : value)
        if ((c < 0x20 && c != '\t') || c == 0x7f) return false;
    return true;
}

}  // namespace

std::string_view system_property_for(std::string_view wire_name) {
    static const std::pair<std::string_view, std::string_view> names[] = {
        {"iothub-messageid", "message-id"},
        {"iothub-correlationid", "correlation-id"},
        {"iothub-userid", "user-id"},
        {"iothub-to", "to"},
        {"iothub-expiry", "absolute-expiry-time"},
        {"iothub-contenttype", "content-type"},
        {"iothub-contentencoding", "content-encoding"},
        {"iothub-interface-id", "iothub-interface-id"},
        {"dt-subject", "dt-subject"},
        {"iothub-creationtimeutc", "iothub-creation-time-utc"},
    };
    for (const auto& [wire, stored] : names)
        if (iequals(wire, wire_name)) return stored;
    return {};
}

storage::event_record event_from_request(const http::request& req) {
    storage::event_record e;
    e.body = req.body;
    // Header names arrive lower-cased, so application property names do too: HTTP cannot carry
    // their case.
    for (const auto& [name, value] : req.headers) add_property(e, name, value, false);
    return e;
}

bool is_batch(const http::request& req) {
    auto type = req.header("content-type");
    auto semi = type.find(';');
    if (semi != std::string_view::npos) type = type.substr(0, semi);
    while (!type.empty() && (type.back() == ' ' || type.back() == '\t')) type.remove_suffix(1);
    return iequals(type, batch_content_type);
}

result<std::vector<storage::event_record>> parse_batch(std::string_view body) {
    boost::system::error_code ec;
    auto parsed = json::parse(body, ec);
    if (ec) return error(errc::format_error, "The batch is not valid JSON: " + ec.message());
    if (!parsed.is_array())
        return error(errc::argument_invalid, "A batch must be a JSON array of messages.");
    const auto& items = parsed.as_array();
    if (items.empty()) return error(errc::argument_invalid, "The batch holds no messages.");
    std::vector<storage::event_record> out;
    out.reserve(items.size());
    for (std::size_t i = 0; i < items.size(); ++i) {
        auto bad = [i](std::string what) {
            return error(errc::argument_invalid,
                         "Batch message " + std::to_string(i) + ": " + std::move(what));
        };
        if (!items[i].is_object()) return bad("not a JSON object.");
        const auto& item = items[i].as_object();
        const auto* b = item.if_contains("body");
        if (!b || !b->is_string()) return bad("\"body\" must be a string.");
        bool base64 = true;
        if (const auto* flag = item.if_contains("base64Encoded")) {
            if (!flag->is_bool()) return bad("\"base64Encoded\" must be true or false.");
            base64 = flag->as_bool();
        }
        storage::event_record e;
        std::string_view text = b->as_string();
        if (base64) {
            auto bytes = base64_decode(text);
            if (!bytes) return bad("\"body\" is not valid Base64.");
            e.body = std::move(*bytes);
        } else {
            e.body = std::string(text);
        }
        if (const auto* props = item.if_contains("properties"); props && !props->is_null()) {
            if (!props->is_object()) return bad("\"properties\" must be an object.");
            for (const auto& [k, v] : props->as_object()) {
                if (!v.is_string())
                    return bad("property '" + std::string(k) + "' must have a string value.");
                // Node sends dt-subject unprefixed; names that are neither the device's own
                // (iothub-app-) nor known system names are kept as its own too.
                add_property(e, k, v.as_string(), true);
            }
        }
        out.push_back(std::move(e));
    }
    return out;
}

http::response delivery_response(const c2d::delivery& d, std::string_view device_id) {
    const auto& c = *d.content;
    http::response r{200, {}, c.body};
    auto set = [&](std::string name, std::string value) {
        if (header_name_ok(name) && header_value_ok(value))
            r.headers.emplace_back(std::move(name), std::move(value));
    };
    set("Content-Type", "application/octet-stream");
    // Node strips the first and last character unconditionally, and C refuses an unquoted ETag.
    set("ETag", "\"" + d.lock_token + "\"");
    if (!c.message_id.empty()) set("iothub-messageid", c.message_id);
    if (!c.correlation_id.empty()) set("iothub-correlationid", c.correlation_id);
    if (!c.user_id.empty()) set("iothub-userid", c.user_id);
    set("iothub-to", "/devices/" + percent_encode(device_id) + "/messages/devicebound");
    set("iothub-expiry", format_iso8601(d.expiry_time));
    if (c.ack != c2d::ack_mode::none) set("iothub-ack", std::string(c2d::to_string(c.ack)));
    set("iothub-sequencenumber", std::to_string(d.sequence_number));
    set("iothub-enqueuedtime", format_iso8601(d.enqueued_time));
    set("iothub-deliverycount", std::to_string(d.delivery_count));
    // The C SDK reads ContentType/ContentEncoding; the others are the names the rest of the
    // headers follow.
    if (!c.content_type.empty()) {
        set("ContentType", c.content_type);
        set("iothub-contenttype", c.content_type);
    }
    if (!c.content_encoding.empty()) {
        set("ContentEncoding", c.content_encoding);
        set("iothub-contentencoding", c.content_encoding);
    }
    // A property that cannot be a header (a name with spaces, a value with a line break) cannot
    // travel over HTTP and is left out rather than corrupt the response.
    for (const auto& [k, v] : c.properties) set(std::string(app_property_prefix) + k, v);
    return r;
}

std::string_view unquote(std::string_view text) {
    if (text.size() >= 2 && text.front() == '"' && text.back() == '"')
        text = text.substr(1, text.size() - 2);
    return text;
}

}  // namespace iothub::device_api
