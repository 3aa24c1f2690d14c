#include "device_api/device_api.hpp"

#include "common/time.hpp"
#include "device_api/messages.hpp"

#include <memory>

namespace iothub::device_api {
using http::request;
using http::responder;
using http::response;

// The identity in the path must be the one the credentials prove. An unknown identity is
// IotHubUnauthorizedAccess, not DeviceNotFound, as in Azure: the hub does not tell strangers
// which ids exist.
result<device_auth::device_principal> authenticate(device_auth::device_authenticator& auth,
                                                   const request& req) {
    device_auth::device_credentials cred;
    cred.device_id = req.param("id");
    cred.module_id = req.param("mid");
    if (auto h = req.header("authorization"); !h.empty()) cred.sas_token = std::string(h);
    if (req.client_certificate) cred.certificate = *req.client_certificate;
    if (!cred.sas_token && !cred.certificate)
        return error(errc::unauthorized,
                     "The request has neither an Authorization header nor a client certificate.");
    return auth.authenticate(cred, now());
}

namespace {

result<device_auth::device_principal> authenticate(context& c, const request& req) {
    return device_api::authenticate(c.authenticator, req);
}

// Every route authenticates against the registry, which blocks, so all run on the blocking pool;
// "devicebound" is matched in any case because the C# SDK writes "deviceBound".
constexpr http::route_options device_route{.blocking = true, .fold_case = true};

void send_events(context& c, request& req, responder done) {
    auto who = authenticate(c, req);
    if (!who) return done(http::error_response(who.error()));
    auto finish = [done](result<void> r) {
        done(r ? response::no_content() : http::error_response(r.error()));
    };
    if (!is_batch(req)) return c.telemetry.ingest(*who, event_from_request(req), finish);

    if (req.body.size() > c.max_batch_bytes)
        return done(http::error_response(
            error(errc::message_too_large, "The batch is larger than the limit of " +
                                               std::to_string(c.max_batch_bytes) + " bytes.")));
    auto batch = parse_batch(req.body);
    if (!batch) return done(http::error_response(batch.error()));
    // All or nothing: every message is checked before any is appended, and the append is one.
    if (auto ok = c.telemetry.check_batch(*batch); !ok)
        return done(http::error_response(ok.error()));
    c.telemetry.ingest(*who, telemetry::telemetry_service::stamp_for(*who), std::move(*batch),
                       finish);
}

result<response> poll(context& c, request& req) {
    auto who = authenticate(c, req);
    if (!who) return who.error();
    // receive() locks what it hands out, so the next poll (Node polls again before it settles
    // the message) never sees the same message until it is abandoned or its lock times out.
    auto d = c.c2d.receive(who->device_id, now());
    if (!d) return response::no_content();
    return delivery_response(*d, who->device_id);
}

// The lock token in the path is what counts; an If-Match, when sent, must name the same one.
result<std::string> lock_token_of(const request& req) {
    std::string token(unquote(req.param("lock")));
    if (auto m = req.header("if-match"); !m.empty() && unquote(m) != token)
        return error(errc::message_lock_lost, "If-Match does not name the lock token in the path.");
    return token;
}

enum class settle { complete, abandon, reject };

result<response> settle_message(context& c, request& req, settle how) {
    auto who = authenticate(c, req);
    if (!who) return who.error();
    auto token = lock_token_of(req);
    if (!token) return token.error();
    auto t = now();
    auto r = how == settle::complete  ? c.c2d.complete(who->device_id, *token, t)
             : how == settle::abandon ? c.c2d.abandon(who->device_id, *token, t)
                                      : c.c2d.reject(who->device_id, *token, t);
    if (!r) return r.error();
    return response::no_content();
}

// A bare `reject` (Node, C) or `reject=` (C#) asks for a reject; `reject=false` does not.
bool wants_reject(const request& req) {
    auto v = req.query_value("reject");
    return v && *v != "false";
}

result<response> modules_have_no_c2d(context&, request&) {
    return error(errc::bad_request,
                 "Cloud-to-device messages are not delivered to modules over HTTPS.");
}

}  // namespace

void add_routes(http::router& routes, context ctx) {
    if (ctx.files) add_file_routes(routes, ctx.authenticator, *ctx.files);
    auto shared = std::make_shared<context>(std::move(ctx));
    auto sync = [shared](result<response> (*body)(context&, request&)) {
        return [shared, body](request& req, responder done) {
            auto r = body(*shared, req);
            done(r ? std::move(*r) : http::error_response(r.error()));
        };
    };
    auto events = [shared](request& req, responder done) {
        send_events(*shared, req, std::move(done));
    };
    routes.add("POST", "/devices/{id}/messages/events", events, device_route);
    routes.add("POST", "/devices/{id}/modules/{mid}/messages/events", events, device_route);

    routes.add("GET", "/devices/{id}/messages/devicebound", sync(poll), device_route);
    routes.add(
        "DELETE", "/devices/{id}/messages/devicebound/{lock}", sync([](context& c, request& req) {
            return settle_message(c, req, wants_reject(req) ? settle::reject : settle::complete);
        }),
        device_route);
    routes.add(
        "POST", "/devices/{id}/messages/devicebound/{lock}/abandon",
        sync([](context& c, request& req) { return settle_message(c, req, settle::abandon); }),
        device_route);

    // Azure has no cloud-to-device queue for modules; say so rather than 404 an SDK's guess.
    auto no_c2d = sync(modules_have_no_c2d);
    routes.add("GET", "/devices/{id}/modules/{mid}/messages/devicebound", no_c2d, device_route);
    routes.add("DELETE", "/devices/{id}/modules/{mid}/messages/devicebound/{lock}", no_c2d,
               device_route);
    routes.add("POST", "/devices/{id}/modules/{mid}/messages/devicebound/{lock}/abandon", no_c2d,
               device_route);
}

}  // namespace iothub::device_api
