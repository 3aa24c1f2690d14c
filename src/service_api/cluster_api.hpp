// `GET /cluster/status` (ServiceConnect): the hub's nodes, their connections, the duties and the
// storage engine's own state (in cluster mode, JetStream's streams), for `iothub cluster status`.
// A hub with embedded storage answers {"mode": "embedded"}.
#pragma once

#include "auth/policy.hpp"
#include "http/router.hpp"

#include <boost/json/value.hpp>

#include <functional>

namespace iothub::service_api {

struct cluster_context {
    const auth::policy_set& policies;
    const auth::host_names& hosts;
    // The whole answer; it may block on storage.
    std::function<result<boost::json::value>()> status;
};

void add_cluster_routes(http::router& routes, cluster_context ctx);

}  // namespace iothub::service_api
