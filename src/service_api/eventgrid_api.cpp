#include "service_api/eventgrid_api.hpp"

#include "service_api/detail/guard.hpp"

#include <boost/json.hpp>

namespace iothub::service_api {
namespace json = boost::json;
using http::request;
using http::response;

void add_event_grid_routes(http::router& routes, event_grid_context ctx) {
    auto shared = std::make_shared<event_grid_context>(ctx);
    using auth::right;
    using detail::guarded;
    constexpr http::route_options blocking{true};
    const auto write = auth::rights(right::registry_write) | right::service_connect;

    routes.add("PUT", "/eventSubscriptions/{name}",
               guarded<event_grid_context>(
                   shared, write,
                   [](event_grid_context& c, request& req) -> result<response> {
                       auto s = endpoints::parse_subscription(req.param("name"), req.body);
                       if (!s) return s.error();
                       auto put = c.grid.put(std::move(*s));
                       if (!put) return put.error();
                       return response::json(200, endpoints::to_json(*put));
                   }),
               blocking);
    routes.add(
        "GET", "/eventSubscriptions/{name}",
        guarded<event_grid_context>(shared, right::service_connect,
                                    [](event_grid_context& c, request& req) -> result<response> {
                                        auto s = c.grid.get(req.param("name"));
                                        if (!s) return s.error();
                                        return response::json(200, endpoints::to_json(*s));
                                    }),
        blocking);
    routes.add(
        "GET", "/eventSubscriptions",
        guarded<event_grid_context>(shared, right::service_connect,
                                    [](event_grid_context& c, request&) -> result<response> {
                                        auto all = c.grid.list();
                                        if (!all) return all.error();
                                        json::array value;
                                        for (const auto& s : *all)
                                            value.push_back(endpoints::to_json(s));
                                        return response::json(200, json::object{{"value", value}});
                                    }),
        blocking);
    routes.add(
        "DELETE", "/eventSubscriptions/{name}",
        guarded<event_grid_context>(shared, write,
                                    [](event_grid_context& c, request& req) -> result<response> {
                                        if (auto r = c.grid.remove(req.param("name")); !r)
                                            return r.error();
                                        return response::no_content();
                                    }),
        blocking);
}

}  // namespace iothub::service_api
