// Wraps a service route's body with SAS authentication (the policy must hold `needed`) and the
// uniform mapping of errors to Azure's error responses.
#pragma once

#include "auth/policy.hpp"
#include "common/time.hpp"
#include "http/router.hpp"

#include <functional>
#include <memory>

namespace iothub::service_api::detail {

// `Context` has `policies` and `hosts`.
template <class Context>
http::router::handler guarded(
    std::shared_ptr<Context> ctx, auth::rights needed,
    std::function<result<http::response>(Context&, http::request&)> body) {
    return [ctx, needed, body = std::move(body)](http::request& req, http::responder done) {
        auto who = ctx->policies.authenticate(req.header("authorization"), ctx->hosts,
                                              req.decoded_path(), needed, now());
        if (!who) return done(http::error_response(who.error()));
        auto r = body(*ctx, req);
        done(r ? std::move(*r) : http::error_response(r.error()));
    };
}

// The same for a route that answers later (a direct method waits for the device): `body` gets
// the responder and must call it exactly once, from any thread.
template <class Context>
http::router::handler guarded_async(
    std::shared_ptr<Context> ctx, auth::rights needed,
    std::function<void(Context&, http::request&, http::responder)> body) {
    return [ctx, needed, body = std::move(body)](http::request& req, http::responder done) {
        auto who = ctx->policies.authenticate(req.header("authorization"), ctx->hosts,
                                              req.decoded_path(), needed, now());
        if (!who) return done(http::error_response(who.error()));
        body(*ctx, req, std::move(done));
    };
}

}  // namespace iothub::service_api::detail
