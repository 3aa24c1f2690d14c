// Event Grid subscriptions over the service API, in ARM's Microsoft.EventGrid/eventSubscriptions
// shape (a bare properties object is accepted too):
//
//   PUT    /eventSubscriptions/{name}   create or replace (RegistryWrite + ServiceConnect); the
//                                       validation handshake follows; 200 with the resource
//   GET    /eventSubscriptions/{name}   one (ServiceConnect): provisioningState says whether it is
//                                       validated, with counts of delivered and dropped events
//   GET    /eventSubscriptions          {"value":[...]}
//   DELETE /eventSubscriptions/{name}   (RegistryWrite + ServiceConnect)
#pragma once

#include "auth/policy.hpp"
#include "endpoints/eventgrid.hpp"
#include "http/router.hpp"

namespace iothub::service_api {

struct event_grid_context {
    const auth::policy_set& policies;
    const auth::host_names& hosts;
    endpoints::event_grid& grid;
};

void add_event_grid_routes(http::router& routes, event_grid_context ctx);

}  // namespace iothub::service_api
