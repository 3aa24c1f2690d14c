#include "amqp/addresses.hpp"

#include "common/encoding.hpp"

#include <vector>

namespace iothub::amqp {
namespace {

// Drops "amqps://host[:port]" (any scheme) so only the path is left.
std::string_view path_of(std::string_view address) {
    auto scheme = address.find("://");
    if (scheme == std::string_view::npos) return address;
    auto rest = address.substr(scheme + 3);
    auto slash = rest.find('/');
    return slash == std::string_view::npos ? std::string_view{} : rest.substr(slash);
}

std::vector<std::string_view> segments(std::string_view path) {
    std::vector<std::string_view> out;
    while (!path.empty()) {
        if (path.front() == '/') {
            path.remove_prefix(1);
            continue;
        }
        auto end = path.find('/');
        out.push_back(path.substr(0, end));
        if (end == std::string_view::npos) break;
        path.remove_prefix(end);
    }
    return out;
}

// Node sends raw ids, the service SDK encodes them; a literal '%' that does not decode stays.
std::string id_of(std::string_view segment) {
    if (segment.find('%') == std::string_view::npos) return std::string(segment);
    auto decoded = percent_decode(segment);
    return decoded ? *decoded : std::string(segment);
}

}  // namespace

node_address classify_address(std::string_view address) {
    using k = node_address::kind;
    node_address out;
    auto path = path_of(address);
    if (path == "$cbs" || path == "/$cbs") {
        out.what = k::cbs;
        return out;
    }
    if (path == "$management" || path == "/$management") {
        out.what = k::eh_management;
        return out;
    }
    auto s = segments(path);
    if (s.size() == 5 && iequals(s[1], "consumergroups") && iequals(s[3], "partitions") &&
        !s[0].empty() && !s[2].empty() && !s[4].empty()) {
        out.what = k::eh_partition;
        out.entity = std::string(s[0]);
        out.consumer_group = std::string(s[2]);
        out.partition = std::string(s[4]);
        return out;
    }
    if (s.size() == 3 && iequals(s[1], "registrations") && !s[0].empty() && !s[2].empty()) {
        out.what = k::dps_registration;
        out.id_scope = std::string(s[0]);
        out.registration_id = id_of(s[2]);
        return out;
    }
    // What an Event Hubs producer attaches to: the entity, or one of its partitions.
    if ((s.size() == 1 || (s.size() == 3 && iequals(s[1], "partitions") && !s[2].empty())) &&
        !s[0].empty()) {
        out.what = k::eh_entity;
        out.entity = std::string(s[0]);
        if (s.size() == 3) out.partition = std::string(s[2]);
        return out;
    }
    if (s.size() == 2 && iequals(s[0], "messages") && iequals(s[1], "devicebound")) {
        out.what = k::service_c2d;
        return out;
    }
    if (s.size() == 3 && iequals(s[0], "messages") && iequals(s[1], "servicebound")) {
        if (iequals(s[2], "feedback")) out.what = k::service_feedback;
        if (iequals(s[2], "filenotifications")) out.what = k::service_file_notifications;
        return out;
    }
    if (s.size() < 3 || !iequals(s[0], "devices") || s[1].empty()) return out;
    out.device_id = id_of(s[1]);
    std::size_t i = 2;
    if (s.size() >= 5 && iequals(s[2], "modules") && !s[3].empty()) {
        out.module_id = id_of(s[3]);
        i = 4;
    }
    auto tail = std::vector<std::string_view>(s.begin() + static_cast<std::ptrdiff_t>(i), s.end());
    if (tail.size() == 2 && iequals(tail[0], "messages") && iequals(tail[1], "events"))
        out.what = k::device_events;
    else if (tail.size() == 2 && iequals(tail[0], "messages") && iequals(tail[1], "devicebound") &&
             out.module_id.empty())
        out.what = k::device_c2d;
    else if (tail.size() == 2 && iequals(tail[0], "methods") && iequals(tail[1], "devicebound"))
        out.what = k::device_methods;
    else if (tail.size() == 1 && iequals(tail[0], "twin"))
        out.what = k::device_twin;
    if (out.what == k::unknown) {
        out.device_id.clear();
        out.module_id.clear();
    }
    return out;
}

std::optional<std::string> c2d_target_device(std::string_view to) {
    auto a = classify_address(to);
    if (a.what != node_address::kind::device_c2d) return std::nullopt;
    return a.device_id;
}

}  // namespace iothub::amqp
