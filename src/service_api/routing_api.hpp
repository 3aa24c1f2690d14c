// Message routing over the service API, in the shape of ARM's `properties.routing`:
//
//   GET  /routing                       the configuration in force (ServiceConnect)
//   PUT  /routing                       replaces it as a whole (RegistryWrite + ServiceConnect);
//                                       an invalid document is refused with 400 naming the fault
//                                       and the configuration in force stays
//   GET  /routing/endpoints/health      {"value":[{endpointId, healthStatus, lastKnownError,
//                                       lastKnownErrorTime, lastSuccessfulSendAttemptTime,
//                                       lastSendAttemptTime}]} (ServiceConnect)
//   POST /routing/routes/$testnew       Azure's TestRouteInput: {"message":{"body",
//                                       "appProperties","systemProperties"},"route":{...},
//                                       "twin":{...}} -> {"result":"true|false|undefined"}
//
// Any api-version is accepted.
#pragma once

#include "auth/policy.hpp"
#include "http/router.hpp"
#include "routing/router.hpp"

namespace iothub::service_api {

struct routing_context {
    const auth::policy_set& policies;
    const auth::host_names& hosts;
    routing::router& router;
    routing::limits limits;
};

void add_routing_routes(http::router& routes, routing_context ctx);

}  // namespace iothub::service_api
