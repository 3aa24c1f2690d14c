#include "service_api/routing_api.hpp"

#include "common/encoding.hpp"
#include "service_api/detail/guard.hpp"

#include <boost/json.hpp>

namespace iothub::service_api {
namespace json = boost::json;
using http::request;
using http::response;

namespace {

// Times as Azure's health sample writes them (RFC 1123).
json::value rfc1123(const std::optional<sys_time>& t) {
    if (!t) return nullptr;
    const auto secs = std::chrono::time_point_cast<std::chrono::seconds>(*t);
    std::time_t tt = std::chrono::system_clock::to_time_t(secs);
    std::tm tm{};
    gmtime_r(&tt, &tm);
    char buf[64];
    std::strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    return json::string(buf);
}

result<response> test_route(routing_context& c, const request& req) {
    boost::system::error_code ec;
    auto v = json::parse(req.body, ec);
    if (ec || !v.is_object()) return error(errc::format_error, "The body must be a JSON object.");
    const auto& in = v.get_object();
    auto object_at = [](const json::object& o, std::string_view key) -> const json::object* {
        for (const auto& kv : o)
            if (iequals(kv.key(), key) && kv.value().is_object()) return &kv.value().get_object();
        return nullptr;
    };
    const auto* route = object_at(in, "route");
    if (!route) return error(errc::argument_null, "The request needs a route.");
    // The route is checked as part of a document that holds it alone (its endpoint declared as
    // an event hub when it is not built in), so it is refused for the same faults a PUT would.
    json::object doc;
    json::array routes;
    routes.push_back(*route);
    doc["routes"] = routes;
    std::string endpoint;
    for (const auto& kv : *route)
        if (iequals(kv.key(), "endpointNames") && kv.value().is_array() &&
            !kv.value().get_array().empty() && kv.value().get_array()[0].is_string())
            endpoint = kv.value().get_array()[0].get_string();
    if (!endpoint.empty() && !iequals(endpoint, routing::builtin_events) &&
        !iequals(endpoint, routing::builtin_eventgrid))
        doc["endpoints"] =
            json::object{{"eventHubs", json::array{json::object{{"name", endpoint}}}}};
    auto parsed = routing::parse(json::value(doc), c.limits);
    if (!parsed) return parsed.error();
    const auto& r = parsed->routes.front();

    json::object app, sys;
    std::string body;
    std::optional<json::object> twin;
    if (const auto* m = object_at(in, "message")) {
        if (const auto* a = object_at(*m, "appProperties")) app = *a;
        if (const auto* s = object_at(*m, "systemProperties")) sys = *s;
        for (const auto& kv : *m)
            if (iequals(kv.key(), "body") && kv.value().is_string()) body = kv.value().get_string();
    }
    if (const auto* t = object_at(in, "twin")) {
        // Azure's sample twin is {"tags":..,"properties":{..}}, sometimes under "twin".
        twin = *t;
    }
    routing::message_view view(std::move(app), std::move(sys), std::move(body), std::move(twin));
    auto outcome = view.evaluate(r.condition);
    return response::json(200, json::object{{"result", std::string(query::to_string(outcome))}});
}

}  // namespace

void add_routing_routes(http::router& routes, routing_context ctx) {
    auto shared = std::make_shared<routing_context>(ctx);
    using auth::right;
    using detail::guarded;
    constexpr http::route_options blocking{true};

    routes.add("GET", "/routing",
               guarded<routing_context>(shared, right::service_connect,
                                        [](routing_context& c, request&) -> result<response> {
                                            return response::json(
                                                200, routing::to_json(*c.router.config()));
                                        }),
               blocking);
    routes.add("PUT", "/routing",
               guarded<routing_context>(
                   shared, auth::rights(right::registry_write) | right::service_connect,
                   [](routing_context& c, request& req) -> result<response> {
                       auto parsed = routing::parse(std::string_view(req.body), c.limits);
                       if (!parsed) return parsed.error();
                       if (auto r = c.router.replace(std::move(*parsed)); !r) return r.error();
                       return response::json(200, routing::to_json(*c.router.config()));
                   }),
               blocking);
    routes.add("GET", "/routing/endpoints/health",
               guarded<routing_context>(
                   shared, right::service_connect,
                   [](routing_context& c, request&) -> result<response> {
                       json::array value;
                       for (const auto& h : c.router.health())
                           value.push_back(json::object{
                               {"endpointId", h.endpoint},
                               {"healthStatus", std::string(routing::to_string(h.status))},
                               {"lastKnownError", h.last_error},
                               {"lastKnownErrorTime", rfc1123(h.last_error_time)},
                               {"lastSuccessfulSendAttemptTime", rfc1123(h.last_success_time)},
                               {"lastSendAttemptTime", rfc1123(h.last_attempt_time)},
                               {"deliveredMessages", h.delivered},
                               {"droppedMessages", h.dropped}});
                       return response::json(200, json::object{{"value", value}});
                   }),
               blocking);
    routes.add("POST", "/routing/routes/$testnew",
               guarded<routing_context>(
                   shared, right::service_connect,
                   [](routing_context& c, request& req) { return test_route(c, req); }),
               blocking);
}

}  // namespace iothub::service_api
