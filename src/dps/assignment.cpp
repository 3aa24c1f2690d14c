#include "dps/assignment.hpp"

#include <boost/json.hpp>

namespace iothub::dps {

boost::json::object twin_patch(const boost::json::object& twin) {
    boost::json::object out;
    if (const auto* tags = twin.if_contains("tags"); tags && tags->is_object()) out["tags"] = *tags;
    if (const auto* props = twin.if_contains("properties"); props && props->is_object())
        if (const auto* d = props->get_object().if_contains("desired"); d && d->is_object()) {
            auto desired = d->get_object();
            desired.erase("$metadata");
            desired.erase("$version");
            out["properties"] = boost::json::object{{"desired", std::move(desired)}};
        }
    return out;
}

}  // namespace iothub::dps
