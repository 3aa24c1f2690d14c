#include "service_api/dps_api.hpp"

#include "dps/errors.hpp"
#include "service_api/detail/requests.hpp"

#include <boost/json.hpp>

#include <charconv>

namespace iothub::service_api {
namespace json = boost::json;

namespace {

http::response failure(const error& e) {
    auto r = http::response::json(e.descriptor().http_status, dps::error_body(e));
    r.with_header("x-ms-error-code", std::to_string(dps::error_code(e)));
    return r;
}

using body_fn = std::function<result<http::response>(dps_context&, http::request&)>;

http::router::handler dps_route(std::shared_ptr<dps_context> ctx, auth::right needed, body_fn fn) {
    return [ctx, needed, fn = std::move(fn)](http::request& req, http::responder done) {
        auto who = ctx->policies.authenticate(req.header("authorization"), ctx->hosts,
                                              req.decoded_path(), needed, now());
        if (!who) return done(failure(who.error()));
        auto r = fn(*ctx, req);
        done(r ? std::move(*r) : failure(r.error()));
    };
}

result<json::object> object_body(const http::request& req) {
    boost::system::error_code ec;
    auto v = json::parse(req.body, ec);
    if (ec || !v.is_object())
        return error(errc::argument_invalid, "The request body is not a JSON object.");
    return std::move(v.get_object());
}

void add_collection(http::router& routes, const std::shared_ptr<dps_context>& shared,
                    std::string_view collection, dps::enrollment_kind kind) {
    const http::route_options opts{.blocking = true, .fold_case = true};
    const std::string base = "/" + std::string(collection);
    const std::string item_type =
        kind == dps::enrollment_kind::individual ? "Enrollment" : "EnrollmentGroup";
    routes.add("PUT", base + "/{id}",
               dps_route(shared, auth::right::enrollment_write,
                         [kind](dps_context& c, http::request& req) -> result<http::response> {
                             auto body = object_body(req);
                             if (!body) return body.error();
                             auto e = c.enrollments.put(kind, req.params.at("id"), *body,
                                                        req.header("if-match"), now());
                             if (!e) return e.error();
                             return http::response::json(200, *e);
                         }),
               opts);
    routes.add("GET", base + "/{id}",
               dps_route(shared, auth::right::enrollment_read,
                         [kind](dps_context& c, http::request& req) -> result<http::response> {
                             auto e = c.enrollments.get(kind, req.params.at("id"));
                             if (!e) return e.error();
                             return http::response::json(200, *e);
                         }),
               opts);
    routes.add("DELETE", base + "/{id}",
               dps_route(shared, auth::right::enrollment_write,
                         [kind](dps_context& c, http::request& req) -> result<http::response> {
                             if (auto r = c.enrollments.remove(kind, req.params.at("id"),
                                                               req.header("if-match"));
                                 !r)
                                 return r.error();
                             return http::response::no_content();
                         }),
               opts);
    routes.add("POST", base + "/{id}/attestationmechanism",
               dps_route(shared, auth::right::enrollment_read,
                         [kind](dps_context& c, http::request& req) -> result<http::response> {
                             auto a = c.enrollments.attestation(kind, req.params.at("id"));
                             if (!a) return a.error();
                             return http::response::json(200, *a);
                         }),
               opts);
    routes.add(
        "POST", base + "/query",
        dps_route(shared, auth::right::enrollment_read,
                  [kind, item_type](dps_context& c, http::request& req) -> result<http::response> {
                      auto body = object_body(req);
                      if (!body) return body.error();
                      const auto* q = body->if_contains("query");
                      if (!q || !q->is_string())
                          return error(errc::argument_invalid,
                                       "The query specification has no query.");
                      std::size_t max = 0;
                      auto count = req.header("x-ms-max-item-count");
                      std::from_chars(count.data(), count.data() + count.size(), max);
                      auto page = c.enrollments.query(kind, q->get_string(), max,
                                                      req.header("x-ms-continuation"));
                      if (!page) return page.error();
                      json::array items;
                      for (auto& e : page->items) items.push_back(std::move(e));
                      auto r = http::response::json(200, items);
                      r.with_header("x-ms-item-type", item_type);
                      if (max) r.with_header("x-ms-max-item-count", std::to_string(max));
                      if (!page->continuation.empty())
                          r.with_header("x-ms-continuation", page->continuation);
                      return r;
                  }),
        opts);
    routes.add("POST", base,
               dps_route(shared, auth::right::enrollment_write,
                         [kind](dps_context& c, http::request& req) -> result<http::response> {
                             auto body = object_body(req);
                             if (!body) return body.error();
                             auto r = c.enrollments.bulk(kind, *body, now());
                             if (!r) return r.error();
                             return http::response::json(200, *r);
                         }),
               opts);
}

}  // namespace

void add_dps_routes(http::router& routes, dps_context ctx) {
    auto shared = std::make_shared<dps_context>(std::move(ctx));
    add_collection(routes, shared, "enrollments", dps::enrollment_kind::individual);
    add_collection(routes, shared, "enrollmentGroups", dps::enrollment_kind::group);
}

}  // namespace iothub::service_api
