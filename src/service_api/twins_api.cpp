#include "service_api/twins_api.hpp"

#include "service_api/detail/guard.hpp"
#include "service_api/detail/requests.hpp"
#include "twin/twin_query.hpp"

#include <boost/json.hpp>

#include <charconv>

namespace iothub::service_api {
namespace json = boost::json;
using http::request;
using http::responder;
using http::response;

namespace {

response twin_response(const json::object& twin) {
    auto r = response::json(200, twin);
    if (const auto* etag = twin.if_contains("etag"); etag && etag->is_string())
        r.with_header("ETag", "\"" + std::string(etag->get_string()) + "\"");
    return r;
}

}  // namespace

void add_twin_routes(http::router& routes, twins_context ctx) {
    auto shared = std::make_shared<twins_context>(std::move(ctx));
    using auth::right;
    using detail::storage_bound;

    // One handler per verb serves device and module twins: `mid` is empty for a device.
    auto get = detail::guarded<twins_context>(
        shared, right::service_connect, [](twins_context& c, request& req) -> result<response> {
            if (auto ok = detail::check_path_ids(req); !ok) return ok.error();
            auto t = c.twins.get(req.param("id"), req.param("mid"));
            if (!t) return t.error();
            return twin_response(*t);
        });
    // The twin is read on the blocking pool; the answer goes out once the write is durable,
    // without a thread waiting for it.
    auto write = [shared](bool replace) {
        return detail::guarded_async<twins_context>(
            shared, right::service_connect,
            [replace](twins_context& c, request& req, responder done) {
                if (auto ok = detail::check_path_ids(req); !ok)
                    return done(http::error_response(ok.error()));
                auto body = detail::json_body(req);
                if (!body) return done(http::error_response(body.error()));
                auto answer = [done](result<boost::json::object> t) {
                    done(t ? twin_response(*t) : http::error_response(t.error()));
                };
                if (replace)
                    c.twins.replace(req.param("id"), req.param("mid"), *body,
                                    detail::if_match_of(req), answer);
                else
                    c.twins.update(req.param("id"), req.param("mid"), *body,
                                   detail::if_match_of(req), answer);
            });
    };
    for (auto path : {"/twins/{id}", "/twins/{id}/modules/{mid}"}) {
        routes.add("GET", path, get, storage_bound);
        routes.add("PATCH", path, write(false), storage_bound);
        routes.add("PUT", path, write(true), storage_bound);
    }

    // Waits for the device without holding a thread: the answer completes the responder.
    auto invoke = detail::guarded_async<twins_context>(
        shared, right::service_connect, [](twins_context& c, request& req, responder done) {
            if (auto ok = detail::check_path_ids(req); !ok)
                return done(http::error_response(ok.error()));
            auto body = detail::json_body(req);
            if (!body) return done(http::error_response(body.error()));
            auto call =
                methods::parse_call(*body, req.param("id"), req.param("mid"), c.methods.limits());
            if (!call) return done(http::error_response(call.error()));
            c.methods.invoke(std::move(*call), [done](result<methods::method_result> r) {
                done(r ? response::json(200, methods::to_json(*r))
                       : http::error_response(r.error()));
            });
        });
    // On the blocking pool: an identity that is not connected is looked up in the registry.
    routes.add("POST", "/twins/{id}/methods", invoke, storage_bound);
    routes.add("POST", "/twins/{id}/modules/{mid}/methods", invoke, storage_bound);

    // Queries read the registry, so RegistryRead serves as well as ServiceConnect.
    routes.add("POST", "/devices/query",
               detail::guarded<twins_context>(
                   shared, right::registry_read,
                   [](twins_context& c, request& req) -> result<response> {
                       auto body = detail::json_body(req);
                       if (!body) return body.error();
                       const auto* text =
                           body->is_object() ? body->get_object().if_contains("query") : nullptr;
                       if (!text || !text->is_string())
                           return error(errc::argument_invalid,
                                        "The body must be {\"query\":\"SELECT ...\"}.");
                       std::size_t page_size = 0;
                       if (auto h = req.header("x-ms-max-item-count"); !h.empty()) {
                           auto [p, ec] = std::from_chars(h.data(), h.data() + h.size(), page_size);
                           if (ec != std::errc{} || p != h.data() + h.size() || page_size == 0)
                               return error(errc::argument_invalid,
                                            "x-ms-max-item-count must be a positive integer.");
                       }
                       auto page = twin::run_query(c.twins, text->get_string(), page_size,
                                                   req.header("x-ms-continuation"));
                       if (!page) return page.error();
                       auto r = response::json(200, page->rows);
                       r.with_header("x-ms-item-type", page->item_type);
                       if (page->continuation)
                           r.with_header("x-ms-continuation", *page->continuation);
                       return r;
                   },
                   right::service_connect),
               storage_bound);
}

}  // namespace iothub::service_api
