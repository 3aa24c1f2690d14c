#include "service_api/c2d_api.hpp"

#include "service_api/detail/guard.hpp"
#include "service_api/detail/requests.hpp"

#include <boost/json.hpp>

namespace iothub::service_api {
namespace json = boost::json;
using http::request;
using http::response;

void add_c2d_routes(http::router& routes, c2d_context ctx) {
    auto shared = std::make_shared<c2d_context>(std::move(ctx));
    auto purge = detail::guarded<c2d_context>(
        shared, auth::right::service_connect, [](c2d_context& c, request& req) -> result<response> {
            if (auto ok = detail::check_path_ids(req); !ok) return ok.error();
            std::string device_id(req.param("id"));
            auto purged = c.c2d.purge(device_id, now());
            if (!purged) return purged.error();
            return response::json(
                200, json::object{{"deviceId", device_id}, {"totalMessagesPurged", *purged}});
        });
    routes.add("DELETE", "/devices/{id}/commands", purge, detail::storage_bound);
}

}  // namespace iothub::service_api
