// Wraps a service route's body with SAS authentication (the policy must hold `needed`) and the
// uniform mapping of errors to Azure's error responses.
#pragma once

#include "auth/policy.hpp"
#include "common/time.hpp"
#include "http/router.hpp"

#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>

namespace iothub::service_api::detail {

// Authenticates a service request whose policy must hold one of `accepted` (each a set of rights
// held together); the first failure is the one reported.
template <class Context>
result<void> authorize(const Context& ctx, const http::request& req,
                       std::initializer_list<auth::rights> accepted) {
    std::optional<error> first;
    for (auto needed : accepted) {
        auto who = ctx.policies.authenticate(req.header("authorization"), ctx.hosts,
                                             req.decoded_path(), needed, now());
        if (who) return {};
        if (!first) first = who.error();
    }
    return *first;
}

// `Context` has `policies` and `hosts`. The policy must hold `needed`, or `alternative` when
// given (a read that either right allows).
template <class Context>
http::router::handler guarded(std::shared_ptr<Context> ctx, auth::rights needed,
                              std::function<result<http::response>(Context&, http::request&)> body,
                              std::optional<auth::rights> alternative = {}) {
    return [ctx, needed, alternative, body = std::move(body)](http::request& req,
                                                              http::responder done) {
        auto ok = alternative ? authorize(*ctx, req, {needed, *alternative})
                              : authorize(*ctx, req, {needed});
        if (!ok) return done(http::error_response(ok.error()));
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
        if (auto ok = authorize(*ctx, req, {needed}); !ok)
            return done(http::error_response(ok.error()));
        body(*ctx, req, std::move(done));
    };
}

}  // namespace iothub::service_api::detail
