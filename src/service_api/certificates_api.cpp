#include "service_api/certificates_api.hpp"

#include "service_api/detail/guard.hpp"

#include <boost/json.hpp>

namespace iothub::service_api {
namespace json = boost::json;
using http::request;
using http::response;

namespace {

json::object to_json(const certificates::ca_certificate& c) {
    json::object props{{"subject", c.subject},
                       {"expiry", format_iso8601(c.not_after)},
                       {"thumbprint", c.thumbprint},
                       {"isVerified", c.verified},
                       {"created", format_iso8601(c.created)},
                       {"updated", format_iso8601(c.updated)},
                       {"certificate", c.pem}};
    if (!c.verification_code.empty()) props["verificationCode"] = c.verification_code;
    return json::object{
        {"name", c.name}, {"etag", certificates::ca_store::etag_of(c)}, {"properties", props}};
}

result<response> answer(const result<certificates::ca_certificate>& c) {
    if (!c) return c.error();
    auto r = response::json(200, to_json(*c));
    r.with_header("ETag", "\"" + certificates::ca_store::etag_of(*c) + "\"");
    return r;
}

std::optional<std::string> if_match(const request& req) {
    auto h = req.header("if-match");
    if (h.empty()) return std::nullopt;
    return std::string(h);
}

// {"properties":{"certificate":..}} (Azure's shape) or {"certificate":..}.
result<std::pair<std::string, bool>> certificate_in(const request& req) {
    boost::system::error_code ec;
    auto v = json::parse(req.body, ec);
    if (ec || !v.is_object()) return error(errc::format_error, "The body must be a JSON object.");
    const json::object* o = &v.get_object();
    if (auto* p = o->if_contains("properties"); p && p->is_object()) o = &p->get_object();
    auto* cert = o->if_contains("certificate");
    if (!cert || !cert->is_string())
        return error(errc::argument_null, "properties.certificate is missing.");
    bool verified = false;
    if (auto* iv = o->if_contains("isVerified"); iv && iv->is_bool()) verified = iv->get_bool();
    return std::make_pair(std::string(cert->get_string()), verified);
}

}  // namespace

void add_certificate_routes(http::router& routes, certificates_context ctx) {
    auto shared = std::make_shared<certificates_context>(ctx);
    using auth::right;
    using detail::guarded;
    constexpr http::route_options blocking{true};

    routes.add(
        "PUT", "/certificates/{name}",
        guarded<certificates_context>(
            shared, right::registry_write,
            [](certificates_context& c, request& req) -> result<response> {
                auto in = certificate_in(req);
                if (!in) return in.error();
                return answer(c.store.put(req.param("name"), in->first, in->second, if_match(req)));
            }),
        blocking);
    routes.add("GET", "/certificates/{name}",
               guarded<certificates_context>(
                   shared, right::registry_read,
                   [](certificates_context& c, request& req) -> result<response> {
                       return answer(c.store.get(req.param("name")));
                   }),
               blocking);
    routes.add("GET", "/certificates",
               guarded<certificates_context>(
                   shared, right::registry_read,
                   [](certificates_context& c, request&) -> result<response> {
                       auto all = c.store.list();
                       if (!all) return all.error();
                       json::array value;
                       for (const auto& x : *all) value.push_back(to_json(x));
                       return response::json(200, json::object{{"value", std::move(value)}});
                   }),
               blocking);
    routes.add("DELETE", "/certificates/{name}",
               guarded<certificates_context>(
                   shared, right::registry_write,
                   [](certificates_context& c, request& req) -> result<response> {
                       if (auto r = c.store.remove(req.param("name"), if_match(req)); !r)
                           return r.error();
                       return response::no_content();
                   }),
               blocking);
    routes.add(
        "POST", "/certificates/{name}/generateVerificationCode",
        guarded<certificates_context>(
            shared, right::registry_write,
            [](certificates_context& c, request& req) -> result<response> {
                return answer(c.store.generate_verification_code(req.param("name"), if_match(req)));
            }),
        blocking);
    routes.add("POST", "/certificates/{name}/verify",
               guarded<certificates_context>(
                   shared, right::registry_write,
                   [](certificates_context& c, request& req) -> result<response> {
                       auto in = certificate_in(req);
                       if (!in) return in.error();
                       return answer(c.store.verify(req.param("name"), in->first, if_match(req)));
                   }),
               blocking);
}

}  // namespace iothub::service_api
