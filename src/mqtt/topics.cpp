#include "mqtt/topics.hpp"

#include "common/encoding.hpp"

#include <charconv>

namespace iothub::mqtt {
namespace {

int hex(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

std::string lenient_decode(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '%' && i + 2 < s.size()) {
            int hi = hex(s[i + 1]), lo = hex(s[i + 2]);
            if (hi >= 0 && lo >= 0) {
                out += static_cast<char>(hi * 16 + lo);
                i += 2;
                continue;
            }
        }
        out += s[i];
    }
    return out;
}

// Query parameters after '?' (or after the last '/' for the old form without '?').
void query_params(std::string_view q, const auto& each) {
    while (!q.empty()) {
        auto amp = q.find('&');
        auto pair = q.substr(0, amp);
        q = amp == std::string_view::npos ? std::string_view{} : q.substr(amp + 1);
        auto eq = pair.find('=');
        each(pair.substr(0, eq),
             eq == std::string_view::npos ? std::string_view{} : pair.substr(eq + 1));
    }
}

bool starts_with(std::string_view s, std::string_view prefix) {
    return s.substr(0, prefix.size()) == prefix;
}

// Strips "devices/{d}/" and, for modules, "modules/{m}/" from `topic`; false if the topic names
// another identity or no identity.
bool own_prefix(std::string_view& topic, std::string_view device_id, std::string_view module_id,
                bool& other) {
    other = false;
    if (!starts_with(topic, "devices/")) return false;
    std::string_view rest = topic.substr(8);
    if (!starts_with(rest, device_id) || rest.size() <= device_id.size() ||
        rest[device_id.size()] != '/') {
        other = true;
        return false;
    }
    rest.remove_prefix(device_id.size() + 1);
    const bool names_module = starts_with(rest, "modules/");
    if (module_id.empty()) {
        if (names_module) {
            other = true;
            return false;
        }
    } else {
        if (!names_module) {
            other = true;
            return false;
        }
        rest.remove_prefix(8);
        if (!starts_with(rest, module_id) || rest.size() <= module_id.size() ||
            rest[module_id.size()] != '/') {
            other = true;
            return false;
        }
        rest.remove_prefix(module_id.size() + 1);
    }
    topic = rest;
    return true;
}

std::optional<std::string> rid_of(std::string_view query,
                                  std::optional<std::uint64_t>* version = nullptr) {
    std::optional<std::string> rid;
    query_params(query, [&](std::string_view k, std::string_view v) {
        if (k == "$rid") rid = std::string(v);
        if (version && k == "$version") {
            std::uint64_t n = 0;
            auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
            if (ec == std::errc{} && p == v.data() + v.size()) *version = n;
        }
    });
    return rid;
}

}  // namespace

std::optional<username_info> parse_username(std::string_view u) {
    username_info info;
    auto slash = u.find('/');
    if (slash == std::string_view::npos || slash == 0) return std::nullopt;
    info.host = std::string(u.substr(0, slash));
    std::string_view rest = u.substr(slash + 1);
    std::string_view path = rest, query;
    if (auto q = rest.find('?'); q != std::string_view::npos) {
        path = rest.substr(0, q);
        query = rest.substr(q + 1);
    } else if (auto a = rest.find("/api-version="); a != std::string_view::npos) {
        path = rest.substr(0, a);
        query = rest.substr(a + 1);
    }
    while (!path.empty() && path.back() == '/') path.remove_suffix(1);
    auto s2 = path.find('/');
    info.device_id = std::string(path.substr(0, s2));
    if (s2 != std::string_view::npos) {
        info.module_id = std::string(path.substr(s2 + 1));
        if (info.module_id.find('/') != std::string::npos) return std::nullopt;
    }
    if (info.device_id.empty()) return std::nullopt;
    query_params(query, [&](std::string_view k, std::string_view v) {
        if (k == "api-version")
            info.api_version = lenient_decode(v);
        else if (k == "DeviceClientType")
            info.client_type = lenient_decode(v);
        else if (k == "model-id")
            info.model_id = lenient_decode(v);
    });
    return info;
}

std::optional<dps_username> parse_dps_username(std::string_view u) {
    // `{scope}/registrations/{id}/api-version=...`: the second segment names the service.
    auto first = u.find('/');
    if (first == std::string_view::npos || first == 0) return std::nullopt;
    constexpr std::string_view middle = "/registrations/";
    if (u.substr(first, middle.size()) != middle) return std::nullopt;
    auto rest = u.substr(first + middle.size());
    auto end = rest.find('/');
    if (end == std::string_view::npos || end == 0) return std::nullopt;
    auto query = rest.substr(end + 1);
    if (!query.starts_with("api-version=")) return std::nullopt;
    dps_username out;
    out.id_scope = std::string(u.substr(0, first));
    out.registration_id = lenient_decode(rest.substr(0, end));
    query_params(query, [&](std::string_view k, std::string_view v) {
        if (k == "api-version") out.api_version = lenient_decode(v);
    });
    return out;
}

dps_publish classify_dps_publish(std::string_view topic) {
    dps_publish out;
    constexpr std::string_view reg = "$dps/registrations/PUT/iotdps-register/?";
    constexpr std::string_view op = "$dps/registrations/GET/iotdps-get-operationstatus/?";
    std::string_view query;
    if (topic.starts_with(reg)) {
        out.what = dps_publish::kind::register_device;
        query = topic.substr(reg.size());
    } else if (topic.starts_with(op)) {
        out.what = dps_publish::kind::operation_status;
        query = topic.substr(op.size());
    } else {
        return out;
    }
    query_params(query, [&](std::string_view k, std::string_view v) {
        if (k == "$rid")
            out.rid = lenient_decode(v);
        else if (k == "operationId")
            out.operation_id = lenient_decode(v);
    });
    if (out.rid.empty() ||
        (out.what == dps_publish::kind::operation_status && out.operation_id.empty()))
        out.what = dps_publish::kind::unknown;
    return out;
}

storage::property_list parse_property_bag(std::string_view bag) {
    storage::property_list out;
    query_params(bag, [&](std::string_view k, std::string_view v) {
        if (k.empty()) return;
        out.emplace_back(lenient_decode(k), lenient_decode(v));
    });
    return out;
}

std::string encode_property_bag(const storage::property_list& properties) {
    std::string out;
    for (const auto& [k, v] : properties) {
        if (!out.empty()) out += '&';
        out += percent_encode(k);
        out += '=';
        out += percent_encode(v);
    }
    return out;
}

topic_info classify_publish(std::string_view topic, std::string_view device_id,
                            std::string_view module_id) {
    topic_info info;
    if (starts_with(topic, "$iothub/")) {
        auto rest = topic.substr(8);
        auto q = rest.find("/?");
        auto path = rest.substr(0, q);
        auto query = q == std::string_view::npos ? std::string_view{} : rest.substr(q + 2);
        if (path == "twin/GET") {
            info.what = topic_info::kind::twin_get;
        } else if (path == "twin/PATCH/properties/reported") {
            info.what = topic_info::kind::twin_patch_reported;
        } else if (starts_with(path, "methods/res/")) {
            auto status = path.substr(12);
            int n = 0;
            auto [p, ec] = std::from_chars(status.data(), status.data() + status.size(), n);
            if (ec != std::errc{} || p != status.data() + status.size()) return info;
            info.what = topic_info::kind::method_response;
            info.status = n;
        } else {
            return info;
        }
        auto rid = rid_of(query, &info.version);
        if (!rid)
            info.what = topic_info::kind::unknown;
        else
            info.rid = std::move(*rid);
        return info;
    }
    bool other = false;
    std::string_view rest = topic;
    if (!own_prefix(rest, device_id, module_id, other)) {
        if (other) info.what = topic_info::kind::other_identity;
        return info;
    }
    if (rest == "messages/events" || starts_with(rest, "messages/events/")) {
        info.what = topic_info::kind::telemetry;
        auto bag = rest.size() > 15 ? rest.substr(16) : std::string_view{};
        if (!bag.empty() && bag.back() == '/') bag.remove_suffix(1);  // Node's module outputs
        info.bag = std::string(bag);
    }
    return info;
}

filter_kind classify_filter(std::string_view filter, std::string_view device_id,
                            std::string_view module_id) {
    if (filter == "$iothub/twin/res/#") return filter_kind::twin_responses;
    if (filter == "$iothub/twin/PATCH/properties/desired/#") return filter_kind::twin_desired;
    if (filter == "$iothub/methods/POST/#") return filter_kind::methods;
    bool other = false;
    std::string_view rest = filter;
    if (!own_prefix(rest, device_id, module_id, other)) return filter_kind::unknown;
    if (module_id.empty() && rest == "messages/devicebound/#") return filter_kind::c2d;
    if (!module_id.empty() && (rest == "inputs/#" || rest == "#"))
        return filter_kind::module_inputs;
    return filter_kind::unknown;
}

storage::event_record telemetry_event(std::string payload, const storage::property_list& bag) {
    static const std::pair<std::string_view, std::string_view> system_names[] = {
        {"$.mid", "message-id"},
        {"$.cid", "correlation-id"},
        {"$.uid", "user-id"},
        {"$.to", "to"},
        {"$.ct", "content-type"},
        {"$.ce", "content-encoding"},
        {"$.exp", "absolute-expiry-time"},
        {"$.ifid", "iothub-interface-id"},
        {"$.sub", "dt-subject"},
        {"$.schema", "dt-dataschema"},
        {"$.on", "iothub-outputname"},
        {"$.diagid", "iothub-diag-id"},
        {"$.diagctx", "iothub-diag-correlation-context"},
    };
    storage::event_record e;
    e.body = std::move(payload);
    for (const auto& [k, v] : bag) {
        if (k == "$.ctime") {
            e.application_properties.emplace_back("iothub-creation-time-utc", v);
            continue;
        }
        bool system = false;
        for (const auto& [wire, name] : system_names) {
            if (k == wire) {
                e.system_properties.emplace_back(std::string(name), v);
                system = true;
                break;
            }
        }
        // Other "$." names are reserved for the hub: kept, but not as the device's own properties.
        if (!system && starts_with(k, "$.")) {
            e.system_properties.emplace_back(k, v);
            system = true;
        }
        if (!system) e.application_properties.emplace_back(k, v);
    }
    return e;
}

}  // namespace iothub::mqtt
