#include "service_api/service_api.hpp"

#include "common/encoding.hpp"
#include "common/time.hpp"
#include "service_api/detail/guard.hpp"
#include "service_api/detail/requests.hpp"

#include <boost/json.hpp>

#include <charconv>

namespace iothub::service_api {
namespace json = boost::json;
using http::request;
using http::responder;
using http::response;

namespace {
using detail::check_path_ids;
using detail::if_match_of;
using detail::json_body;
using detail::storage_bound;

response identity_response(const context& ctx, const registry::identity& id) {
    auto r = response::json(200, registry::to_json(id, ctx.live(id)));
    r.with_header("ETag", "\"" + registry::etag_for(id.version) + "\"");
    return r;
}

result<std::size_t> top_of(const request& req, std::size_t fallback) {
    auto v = req.query_value("top");
    if (!v) return fallback;
    std::size_t n = 0;
    auto [p, ec] = std::from_chars(v->data(), v->data() + v->size(), n);
    if (ec != std::errc{} || p != v->data() + v->size() || n == 0)
        return error(errc::argument_invalid, "top must be a positive integer.");
    return n;
}

json::array identities_json(const context& ctx, const std::vector<registry::identity>& ids) {
    json::array out;
    out.reserve(ids.size());
    for (const auto& id : ids) out.push_back(registry::to_json(id, ctx.live(id)));
    return out;
}

}  // namespace

void add_routes(http::router& routes, context ctx) {
    auto shared = std::make_shared<context>(std::move(ctx));
    auto guarded = [shared](auth::rights needed,
                            std::function<result<response>(const context&, request&)> body) {
        return detail::guarded<context>(
            shared, needed,
            [body = std::move(body)](context& c, request& req) { return body(c, req); });
    };
    using auth::right;

    routes.add("PUT", "/devices/{id}",
               guarded(right::registry_write,
                       [](const context& c, request& req) -> result<response> {
                           if (auto ok = check_path_ids(req); !ok) return ok.error();
                           auto body = json_body(req);
                           if (!body) return body.error();
                           auto spec = registry::parse_device(*body, req.param("id"));
                           if (!spec) return spec.error();
                           auto d = c.registry.put_device(std::move(*spec), if_match_of(req));
                           if (!d) return d.error();
                           return identity_response(c, *d);
                       }),
               storage_bound);

    routes.add("GET", "/devices/{id}",
               guarded(right::registry_read,
                       [](const context& c, request& req) -> result<response> {
                           if (auto ok = check_path_ids(req); !ok) return ok.error();
                           auto d = c.registry.get_device(req.param("id"));
                           if (!d) return d.error();
                           return identity_response(c, *d);
                       }),
               storage_bound);

    routes.add("DELETE", "/devices/{id}",
               guarded(right::registry_write,
                       [](const context& c, request& req) -> result<response> {
                           if (auto ok = check_path_ids(req); !ok) return ok.error();
                           if (auto r = c.registry.delete_device(req.param("id"), if_match_of(req));
                               !r)
                               return r.error();
                           return response::no_content();
                       }),
               storage_bound);

    routes.add("GET", "/devices",
               guarded(right::registry_read,
                       [](const context& c, request& req) -> result<response> {
                           auto top = top_of(req, c.registry.limits().max_list);
                           if (!top) return top.error();
                           auto list = c.registry.list_devices(*top);
                           if (!list) return list.error();
                           return response::json(200, identities_json(c, *list));
                       }),
               storage_bound);

    routes.add("POST", "/devices",
               guarded(right::registry_write,
                       [](const context& c, request& req) -> result<response> {
                           auto body = json_body(req);
                           if (!body) return body.error();
                           auto items = registry::parse_bulk(*body, c.registry.limits());
                           if (!items) return items.error();
                           auto outcome = c.registry.bulk(std::move(*items));
                           if (!outcome) return outcome.error();
                           return response::json(200, registry::to_json(*outcome));
                       }),
               storage_bound);

    routes.add("PUT", "/devices/{id}/modules/{mid}",
               guarded(right::registry_write,
                       [](const context& c, request& req) -> result<response> {
                           if (auto ok = check_path_ids(req); !ok) return ok.error();
                           auto body = json_body(req);
                           if (!body) return body.error();
                           auto spec =
                               registry::parse_module(*body, req.param("id"), req.param("mid"));
                           if (!spec) return spec.error();
                           auto m = c.registry.put_module(std::move(*spec), if_match_of(req));
                           if (!m) return m.error();
                           return identity_response(c, *m);
                       }),
               storage_bound);

    routes.add("GET", "/devices/{id}/modules/{mid}",
               guarded(right::registry_read,
                       [](const context& c, request& req) -> result<response> {
                           if (auto ok = check_path_ids(req); !ok) return ok.error();
                           auto m = c.registry.get_module(req.param("id"), req.param("mid"));
                           if (!m) return m.error();
                           return identity_response(c, *m);
                       }),
               storage_bound);

    routes.add("DELETE", "/devices/{id}/modules/{mid}",
               guarded(right::registry_write,
                       [](const context& c, request& req) -> result<response> {
                           if (auto ok = check_path_ids(req); !ok) return ok.error();
                           if (auto r = c.registry.delete_module(req.param("id"), req.param("mid"),
                                                                 if_match_of(req));
                               !r)
                               return r.error();
                           return response::no_content();
                       }),
               storage_bound);

    routes.add("GET", "/devices/{id}/modules",
               guarded(right::registry_read,
                       [](const context& c, request& req) -> result<response> {
                           if (auto ok = check_path_ids(req); !ok) return ok.error();
                           auto list = c.registry.list_modules(req.param("id"));
                           if (!list) return list.error();
                           return response::json(200, identities_json(c, *list));
                       }),
               storage_bound);

    routes.add("GET", "/statistics/devices",
               guarded(right::registry_read,
                       [](const context& c, request&) -> result<response> {
                           auto s = c.registry.statistics();
                           if (!s) return s.error();
                           return response::json(
                               200, json::object{{"totalDeviceCount", s->total},
                                                 {"enabledDeviceCount", s->enabled},
                                                 {"disabledDeviceCount", s->disabled}});
                       }),
               storage_bound);

    routes.add("GET", "/statistics/service",
               guarded(right::service_connect, [](const context& c, request&) -> result<response> {
                   return response::json(
                       200, json::object{{"connectedDeviceCount", c.connected_devices()}});
               }));
}

}  // namespace iothub::service_api
