#include "auth/connection_string.hpp"

#include "common/encoding.hpp"

#include <array>

namespace iothub::auth {
namespace {

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

}  // namespace

result<connection_string> connection_string::parse(std::string_view text) {
    connection_string cs;
    while (!text.empty()) {
        auto semi = text.find(';');
        std::string_view part = text.substr(0, semi);
        text = semi == std::string_view::npos ? std::string_view{} : text.substr(semi + 1);
        if (part.empty()) continue;  // tolerate "a=b;;c=d" and a trailing ';'
        part = trim(part);
        if (part.empty()) continue;
        auto eq = part.find('=');
        if (eq == std::string_view::npos || eq == 0)
            return error(
                errc::argument_invalid,
                "Malformed connection string: expected Key=Value, got '" + std::string(part) + "'");
        cs.fields_[std::string(trim(part.substr(0, eq)))] = std::string(trim(part.substr(eq + 1)));
    }
    if (cs.fields_.empty()) return error(errc::argument_invalid, "Empty connection string");
    return cs;
}

std::optional<std::string> connection_string::get(std::string_view key) const {
    auto it = fields_.find(key);
    if (it == fields_.end()) return std::nullopt;
    return it->second;
}

std::optional<std::string> connection_string::get_ignoring_case(std::string_view key) const {
    if (auto exact = get(key)) return exact;
    for (const auto& [k, v] : fields_)
        if (iequals(k, key)) return v;
    return std::nullopt;
}

std::string connection_string::to_string() const {
    static constexpr std::array<std::string_view, 7> order{"HostName",
                                                           "DeviceId",
                                                           "ModuleId",
                                                           "SharedAccessKeyName",
                                                           "SharedAccessKey",
                                                           "GatewayHostName",
                                                           "SharedAccessSignature"};
    std::string out;
    auto append = [&](std::string_view k, const std::string& v) {
        if (!out.empty()) out += ';';
        out += k;
        out += '=';
        out += v;
    };
    for (auto k : order)
        if (auto it = fields_.find(k); it != fields_.end()) append(k, it->second);
    for (const auto& [k, v] : fields_) {
        bool ordered = false;
        for (auto o : order) ordered = ordered || o == k;
        if (!ordered) append(k, v);
    }
    return out;
}

std::string service_connection_string(std::string_view host, std::string_view policy,
                                      std::string_view key) {
    return "HostName=" + std::string(host) + ";SharedAccessKeyName=" + std::string(policy) +
           ";SharedAccessKey=" + std::string(key);
}

std::string event_hub_name(std::string_view host) {
    return std::string(host.substr(0, host.find('.')));
}

std::string event_hubs_connection_string(std::string_view host, std::string_view policy,
                                         std::string_view key) {
    return "Endpoint=sb://" + std::string(host) + "/;SharedAccessKeyName=" + std::string(policy) +
           ";SharedAccessKey=" + std::string(key) + ";EntityPath=" + event_hub_name(host);
}

std::string device_connection_string(std::string_view host, std::string_view device_id,
                                     std::string_view key) {
    return "HostName=" + std::string(host) + ";DeviceId=" + std::string(device_id) +
           ";SharedAccessKey=" + std::string(key);
}

std::string module_connection_string(std::string_view host, std::string_view device_id,
                                     std::string_view module_id, std::string_view key) {
    return "HostName=" + std::string(host) + ";DeviceId=" + std::string(device_id) +
           ";ModuleId=" + std::string(module_id) + ";SharedAccessKey=" + std::string(key);
}

}  // namespace iothub::auth
