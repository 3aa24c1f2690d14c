// The service side of twins, direct methods and queries: `GET/PATCH/PUT /twins/{id}` and the
// module forms, `POST /twins/{id}[/modules/{mid}]/methods`, and `POST /devices/query`. Twin
// reads and writes and method calls need ServiceConnect; queries RegistryRead or ServiceConnect.
#pragma once

#include "auth/policy.hpp"
#include "http/router.hpp"
#include "methods/methods.hpp"
#include "twin/twin.hpp"

namespace iothub::service_api {

struct twins_context {
    const auth::policy_set& policies;
    const auth::host_names& hosts;
    twin::twin_service& twins;
    methods::method_service& methods;
};

void add_twin_routes(http::router& routes, twins_context ctx);

}  // namespace iothub::service_api
