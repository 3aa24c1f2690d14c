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

void add_registration_states(http::router& routes, const std::shared_ptr<dps_context>& shared) {
    const http::route_options opts{.blocking = true, .fold_case = true};
    routes.add("GET", "/registrations/{id}",
               dps_route(shared, auth::right::registration_status_read,
                         [](dps_context& c, http::request& req) -> result<http::response> {
                             auto s = c.registrations.state(req.params.at("id"));
                             if (!s) return s.error();
                             return http::response::json(200, *s);
                         }),
               opts);
    routes.add("DELETE", "/registrations/{id}",
               dps_route(shared, auth::right::registration_status_write,
                         [](dps_context& c, http::request& req) -> result<http::response> {
                             if (auto r = c.registrations.remove_state(req.params.at("id"),
                                                                       req.header("if-match"));
                                 !r)
                                 return r.error();
                             return http::response::no_content();
                         }),
               opts);
    routes.add("POST", "/registrations/{group}/query",
               dps_route(shared, auth::right::registration_status_read,
                         [](dps_context& c, http::request& req) -> result<http::response> {
                             std::size_t max = 0;
                             auto count = req.header("x-ms-max-item-count");
                             std::from_chars(count.data(), count.data() + count.size(), max);
                             auto page = c.registrations.states_of_group(
                                 req.params.at("group"), max, req.header("x-ms-continuation"));
                             if (!page) return page.error();
                             json::array items;
                             for (auto& e : page->items) items.push_back(std::move(e));
                             auto r = http::response::json(200, items);
                             r.with_header("x-ms-item-type", "DeviceRegistration");
                             if (!page->continuation.empty())
                                 r.with_header("x-ms-continuation", page->continuation);
                             return r;
                         }),
               opts);
}

// The device's own calls: authenticated by the registration service with the device's SAS.
dps::registration_request device_request(http::request& req) {
    dps::registration_request r;
    r.id_scope = req.params.at("scope");
    r.registration_id = req.params.at("id");
    r.authorization = std::string(req.header("authorization"));
    if (req.client_certificate) r.certificate = *req.client_certificate;
    r.payload = dps::registration_payload(req.body);
    return r;
}

void add_device_routes(http::router& routes, const std::shared_ptr<dps_context>& shared) {
    const http::route_options opts{.blocking = true, .fold_case = true};
    auto answer = [](result<json::object> r, int status) {
        if (!r) return failure(r.error());
        auto response = http::response::json(status, *r);
        return response;
    };
    routes.add(
        "PUT", "/{scope}/registrations/{id}/register",
        [shared, answer](http::request& req, http::responder done) {
            auto r = shared->registrations.register_device(device_request(req), now());
            if (r && r->at("status") == "assigning") {
                auto response = http::response::json(202, *r);
                // The assignment is done already: the SDK's first poll finds it.
                response.with_header("Retry-After", std::to_string(dps::poll_after_seconds));
                return done(std::move(response));
            }
            done(answer(std::move(r), 200));
        },
        opts);
    routes.add(
        "GET", "/{scope}/registrations/{id}/operations/{operation}",
        [shared, answer](http::request& req, http::responder done) {
            done(answer(shared->registrations.operation_status(device_request(req),
                                                               req.params.at("operation"), now()),
                        200));
        },
        opts);
    routes.add(
        "POST", "/{scope}/registrations/{id}",
        [shared, answer](http::request& req, http::responder done) {
            done(answer(shared->registrations.device_state(device_request(req), now()), 200));
        },
        opts);
}

// The hubs devices are assigned to. Azure keeps them on the DPS resource (ARM); here they are
// the provisioning service's own API, under its policy.
void add_linked_hubs(http::router& routes, const std::shared_ptr<dps_context>& shared) {
    const http::route_options opts{.blocking = true, .fold_case = true};
    routes.add("GET", "/linkedHubs",
               dps_route(shared, auth::right::enrollment_read,
                         [](dps_context& c, http::request&) -> result<http::response> {
                             auto hubs = c.linked_hubs.list();
                             if (!hubs) return hubs.error();
                             json::array out;
                             for (const auto& h : *hubs) out.emplace_back(dps::describe(h));
                             return http::response::json(200, out);
                         }),
               opts);
    routes.add("PUT", "/linkedHubs/{host}",
               dps_route(shared, auth::right::enrollment_write,
                         [](dps_context& c, http::request& req) -> result<http::response> {
                             auto body = object_body(req);
                             if (!body) return body.error();
                             auto h = c.linked_hubs.put(*body, req.params.at("host"));
                             if (!h) return h.error();
                             return http::response::json(200, dps::describe(*h));
                         }),
               opts);
    routes.add("DELETE", "/linkedHubs/{host}",
               dps_route(shared, auth::right::enrollment_write,
                         [](dps_context& c, http::request& req) -> result<http::response> {
                             if (auto r = c.linked_hubs.remove(req.params.at("host")); !r)
                                 return r.error();
                             return http::response::no_content();
                         }),
               opts);
}

}  // namespace

void add_dps_routes(http::router& routes, dps_context ctx) {
    auto shared = std::make_shared<dps_context>(std::move(ctx));
    add_collection(routes, shared, "enrollments", dps::enrollment_kind::individual);
    add_collection(routes, shared, "enrollmentGroups", dps::enrollment_kind::group);
    add_registration_states(routes, shared);
    add_linked_hubs(routes, shared);
    add_device_routes(routes, shared);
}

}  // namespace iothub::service_api
