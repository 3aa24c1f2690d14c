// The service side of cloud-to-device messaging over REST: `DELETE /devices/{id}/commands`
// (Azure's "Purge Cloud To Device Message Queue"), with ServiceConnect. Sending and feedback are
// AMQP-only in Azure and live with the AMQP endpoint.
#pragma once

#include "auth/policy.hpp"
#include "c2d/c2d.hpp"
#include "http/router.hpp"

namespace iothub::service_api {

struct c2d_context {
    const auth::policy_set& policies;
    const auth::host_names& hosts;
    c2d::c2d_service& c2d;
};

void add_c2d_routes(http::router& routes, c2d_context ctx);

}  // namespace iothub::service_api
