#include "device_api/device_api.hpp"

#include "common/time.hpp"
#include "device_api/messages.hpp"

#include <functional>
#include <memory>

namespace iothub::device_api {
using http::request;
using http::responder;
using http::response;

// The credentials a request carries for the identity in its path. An unknown identity is
// IotHubUnauthorizedAccess, not DeviceNotFound, as in Azure: the hub does not tell strangers
// which ids exist.
result<device_auth::device_credentials> credentials_of(const request& req) {
    device_auth::device_credentials cred;
    cred.device_id = req.param("id");
    cred.module_id = req.param("mid");
    if (auto h = req.header("authorization"); !h.empty()) cred.sas_token = std::string(h);
    if (req.client_certificate) cred.certificate = *req.client_certificate;
    if (!cred.sas_token && !cred.certificate)
        return error(errc::unauthorized,
                     "The request has neither an Authorization header nor a client certificate.");
    return cred;
}

result<device_auth::device_principal> authenticate(device_auth::device_authenticator& auth,
                                                   const request& req) {
    auto cred = credentials_of(req);
    if (!cred) return cred.error();
    return auth.authenticate(*cred, now());
}

namespace {

// The device session one request runs in: opened (authenticated off the network thread) for the
// identity in the path, told to nobody as a live connection, closed with the response. The
// adapter's part is only the translation between HTTP and the session's calls.
class request_session final : public session::device_port,
                              public std::enable_shared_from_this<request_session> {
  public:
    request_session(context& c, request& req, responder done)
        : done_(std::move(done)),
          session_(std::make_shared<session::device_session>(
              c.sessions, req.executor, *this,
              std::make_shared<session::telemetry_budget>(2 * c.max_batch_bytes))) {}

    // Opens the session, then runs `then` with it (the responder is `then`'s to call), or
    // answers the failure.
    void open(const request& req, std::function<void(request_session&)> then) {
        auto cred = credentials_of(req);
        if (!cred) return answer(http::error_response(cred.error()));
        then_ = std::move(then);
        self_ = shared_from_this();  // alive until answered
        session::device_session::options o;
        o.live = false;
        session_->open(std::move(*cred), std::move(o));
    }

    session::device_session& session() { return *session_; }

    // Answers the request and lets go of the session.
    void answer(response r) {
        auto keep = std::move(self_);
        session_->close("the request was answered");
        if (std::exchange(answered_, true)) return;
        done_(std::move(r));
    }
    void answer(const result<void>& r) {
        answer(r ? response::no_content() : http::error_response(r.error()));
    }

    void opened(const result<opening>& r) override {
        if (!r) return answer(http::error_response(r.error()));
        auto then = std::move(then_);
        then(*this);
    }
    void telemetry_stored(std::span<const std::uint64_t>, const result<void>& r) override {
        answer(r);
    }

  private:
    responder done_;
    bool answered_ = false;
    std::shared_ptr<session::device_session> session_;
    std::function<void(request_session&)> then_;
    std::shared_ptr<request_session> self_;
};

using handler = std::function<void(context&, request&, request_session&)>;

// A route served in a request-scoped session.
http::router::handler in_session(std::shared_ptr<context> c, handler h) {
    return [c, h = std::move(h)](request& req, responder done) {
        auto rs = std::make_shared<request_session>(*c, req, std::move(done));
        rs->open(req, [c, h, &req](request_session& s) { h(*c, req, s); });
    };
}

void send_events(context& c, request& req, request_session& s) {
    if (!is_batch(req)) {
        if (auto ok = s.session().admit(event_from_request(req), 1); !ok) s.answer(ok);
        return;
    }
    if (req.body.size() > c.max_batch_bytes)
        return s.answer(error(errc::message_too_large, "The batch is larger than the limit of " +
                                                           std::to_string(c.max_batch_bytes) +
                                                           " bytes."));
    auto batch = parse_batch(req.body);
    if (!batch) return s.answer(batch.error());
    // All or nothing: every message is checked before any is appended, and the append is one.
    if (auto ok = s.session().admit_batch(std::move(*batch), 1); !ok) s.answer(ok);
}

// take_c2d() locks what it hands out, so the next poll (Node polls again before it settles the
// message) never sees the same message until it is abandoned or its lock times out.
void poll(context&, request&, request_session& s) {
    auto d = s.session().take_c2d();
    s.answer(d ? delivery_response(*d, s.session().principal().device_id) : response::no_content());
}

// The lock token in the path is what counts; an If-Match, when sent, must name the same one.
result<std::string> lock_token_of(const request& req) {
    std::string token(unquote(req.param("lock")));
    if (auto m = req.header("if-match"); !m.empty() && unquote(m) != token)
        return error(errc::message_lock_lost, "If-Match does not name the lock token in the path.");
    return token;
}

void settle_message(request& req, request_session& s, session::c2d_outcome how) {
    auto token = lock_token_of(req);
    if (!token) return s.answer(token.error());
    s.session().settle_c2d(*token, how,
                           [keep = s.shared_from_this()](result<void> r) { keep->answer(r); });
}

// A bare `reject` (Node, C) or `reject=` (C#) asks for a reject; `reject=false` does not.
bool wants_reject(const request& req) {
    auto v = req.query_value("reject");
    return v && *v != "false";
}

}  // namespace

void add_routes(http::router& routes, context ctx) {
    if (ctx.files) add_file_routes(routes, ctx.authenticator, *ctx.files);
    auto shared = std::make_shared<context>(std::move(ctx));
    // Literal segments in any case: the C# SDK writes "deviceBound".
    const http::route_options opts{.fold_case = true};
    auto events = in_session(shared, send_events);
    routes.add("POST", "/devices/{id}/messages/events", events, opts);
    routes.add("POST", "/devices/{id}/modules/{mid}/messages/events", events, opts);

    routes.add("GET", "/devices/{id}/messages/devicebound", in_session(shared, poll), opts);
    routes.add("DELETE", "/devices/{id}/messages/devicebound/{lock}",
               in_session(shared,
                          [](context&, request& req, request_session& s) {
                              settle_message(req, s,
                                             wants_reject(req) ? session::c2d_outcome::reject
                                                               : session::c2d_outcome::complete);
                          }),
               opts);
    routes.add("POST", "/devices/{id}/messages/devicebound/{lock}/abandon",
               in_session(shared,
                          [](context&, request& req, request_session& s) {
                              settle_message(req, s, session::c2d_outcome::abandon);
                          }),
               opts);

    // Azure has no cloud-to-device queue for modules; say so rather than 404 an SDK's guess.
    auto no_c2d = [](request&, responder done) {
        done(http::error_response(
            error(errc::bad_request,
                  "Cloud-to-device messages are not delivered to modules over HTTPS.")));
    };
    routes.add("GET", "/devices/{id}/modules/{mid}/messages/devicebound", no_c2d, opts);
    routes.add("DELETE", "/devices/{id}/modules/{mid}/messages/devicebound/{lock}", no_c2d, opts);
    routes.add("POST", "/devices/{id}/modules/{mid}/messages/devicebound/{lock}/abandon", no_c2d,
               opts);
}

}  // namespace iothub::device_api
