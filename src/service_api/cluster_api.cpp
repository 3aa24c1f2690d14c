#include "service_api/cluster_api.hpp"

#include "service_api/detail/guard.hpp"
#include "service_api/detail/requests.hpp"

#include <boost/json.hpp>

namespace iothub::service_api {

void add_cluster_routes(http::router& routes, cluster_context ctx) {
    auto shared = std::make_shared<cluster_context>(std::move(ctx));
    routes.add("GET", "/cluster/status",
               detail::guarded<cluster_context>(
                   shared, auth::right::service_connect,
                   [](cluster_context& c, http::request&) -> result<http::response> {
                       auto s = c.status();
                       if (!s) return s.error();
                       return http::response::json(200, std::move(*s));
                   }),
               detail::storage_bound);
}

}  // namespace iothub::service_api
