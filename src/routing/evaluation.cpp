#include "routing/evaluation.hpp"

#include "common/encoding.hpp"
#include "common/time.hpp"

#include <boost/json.hpp>

#include <array>
#include <utility>

namespace iothub::routing {
namespace json = boost::json;

std::string_view keyword_of(std::string_view wire_name) {
    static constexpr std::array<std::pair<std::string_view, std::string_view>, 11> names{{
        {"content-type", "contentType"},
        {"content-encoding", "contentEncoding"},
        {"iothub-connection-device-id", "connectionDeviceId"},
        {"iothub-connection-module-id", "connectionModuleId"},
        {"iothub-connection-auth-method", "connectionAuthMethod"},
        {"iothub-connection-auth-generation-id", "connectionDeviceGenerationId"},
        {"iothub-enqueuedtime", "enqueuedTime"},
        {"correlation-id", "correlationId"},
        {"message-id", "messageId"},
        {"user-id", "userId"},
        {"iothub-message-source", "messageSource"},
    }};
    for (const auto& [wire, keyword] : names)
        if (wire == wire_name) return keyword;
    return wire_name;
}

bool body_is_json(std::string_view content_type, std::string_view content_encoding) {
    auto type = content_type.substr(0, content_type.find(';'));
    while (!type.empty() && type.back() == ' ') type.remove_suffix(1);
    if (!iequals(type, "application/json")) return false;
    return iequals(content_encoding, "utf-8") || iequals(content_encoding, "utf-16") ||
           iequals(content_encoding, "utf-32");
}

message_view::message_view(const storage::stored_event& e, const twin_lookup* twins,
                           const std::vector<std::string>* roots)
    : body_(e.record.body), twins_(twins) {
    // The row is built for every routed message: members no condition reads are left out, and a
    // system property's `$keyword` name is made only for one that is read.
    auto wanted = [&](bool system, std::string_view name) {
        if (!roots) return true;
        for (const auto& r : *roots) {
            std::string_view root(r);
            if (system != root.starts_with('$')) continue;
            if (system) root.remove_prefix(1);
            if (iequals(root, name)) return true;
        }
        return false;
    };
    for (const auto& [k, v] : e.record.application_properties)
        if (wanted(false, k)) row_[k] = v;
    std::string_view type, encoding;
    bool enqueued = false;
    auto system = [&](const storage::property_list& l) {
        for (const auto& [k, v] : l) {
            const auto keyword = keyword_of(k);
            if (wanted(true, keyword)) row_["$" + std::string(keyword)] = v;
            if (k == "content-type") type = v;
            if (k == "content-encoding") encoding = v;
            if (k == "iothub-connection-device-id") device_id_ = v;
            if (k == "iothub-connection-module-id") module_id_ = v;
            if (k == "iothub-enqueuedtime") enqueued = true;
        }
    };
    system(e.record.system_properties);
    if (e.record.stamp) system(*e.record.stamp);
    if (!enqueued && wanted(true, "enqueuedTime"))
        row_["$enqueuedTime"] = format_iso8601(e.enqueued_time);
    json_body_ = body_is_json(type, encoding);
}

message_view::message_view(json::object app_properties, json::object system_properties,
                           std::string body, std::optional<json::object> twin)
    : owned_body_(std::move(body)), twin_done_(true), twin_(std::move(twin)) {
    body_ = owned_body_;
    row_ = std::move(app_properties);
    std::string type, encoding;
    for (const auto& kv : system_properties) {
        std::string key(kv.key());
        if (!key.starts_with("$")) key = "$" + std::string(keyword_of(key));
        if (iequals(key, "$contentType") && kv.value().is_string()) type = kv.value().get_string();
        if (iequals(key, "$contentEncoding") && kv.value().is_string())
            encoding = kv.value().get_string();
        row_[key] = kv.value();
    }
    json_body_ = body_is_json(type, encoding);
    if (twin_) {
        json::object t(&resource_);
        if (auto* tags = twin_->if_contains("tags")) t["tags"] = *tags;
        if (auto* props = twin_->if_contains("properties")) t["properties"] = *props;
        row_["$twin"] = std::move(t);
    }
}

void message_view::need_body() {
    if (body_done_) return;
    body_done_ = true;
    if (!json_body_) return;
    boost::system::error_code ec;
    auto v = json::parse(body_, ec, &resource_);
    // Only a body that is an object can be addressed: `$body` alone is undefined in Azure.
    if (!ec && v.is_object()) row_["$body"] = std::move(v);
}

const json::object* message_view::twin() {
    if (!twin_done_) {
        twin_done_ = true;
        if (twins_ && *twins_ && !device_id_.empty()) twin_ = (*twins_)(device_id_, module_id_);
        if (twin_) {
            json::object t(&resource_);
            if (auto* tags = twin_->if_contains("tags")) t["tags"] = *tags;
            if (auto* props = twin_->if_contains("properties")) t["properties"] = *props;
            row_["$twin"] = std::move(t);
        }
    }
    if (auto* t = row_.if_contains("$twin"); t && t->is_object()) return &t->get_object();
    return nullptr;
}

void message_view::need_twin() {
    (void)twin();
}

query::truth message_view::evaluate(const query::condition& c) {
    if (c.reads_body()) need_body();
    if (c.reads_twin()) need_twin();
    return c.evaluate(row_);
}

std::string message_view::enrichment(std::string_view value, std::string_view hub_name) {
    if (iequals(value, "$iothubname")) return std::string(hub_name);
    constexpr std::string_view prefix = "$twin.";
    if (value.size() <= prefix.size() || !iequals(value.substr(0, prefix.size()), prefix))
        return std::string(value);
    const json::object* t = twin();
    if (!t) return std::string(value);
    // A twin path: dotted names, matched ignoring case as conditions match them.
    const json::value* at = nullptr;
    const json::object* in = t;
    std::string_view rest = value.substr(prefix.size());
    while (!rest.empty()) {
        auto dot = rest.find('.');
        auto name = rest.substr(0, dot);
        rest = dot == std::string_view::npos ? std::string_view{} : rest.substr(dot + 1);
        if (!in) return std::string(value);
        at = nullptr;
        for (const auto& kv : *in)
            if (iequals(kv.key(), name)) {
                at = &kv.value();
                break;
            }
        if (!at) return std::string(value);
        in = at->is_object() ? &at->get_object() : nullptr;
    }
    if (!at) return std::string(value);
    if (at->is_string()) return std::string(at->get_string());
    return json::serialize(*at);
}

}  // namespace iothub::routing
