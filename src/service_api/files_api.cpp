#include "service_api/files_api.hpp"

#include "service_api/detail/guard.hpp"
#include "service_api/detail/requests.hpp"

#include <boost/json.hpp>

namespace iothub::service_api {
namespace json = boost::json;
using http::request;
using http::response;

void add_file_routes(http::router& routes, files_context ctx) {
    auto shared = std::make_shared<files_context>(std::move(ctx));
    auto list = detail::guarded<files_context>(
        shared, auth::right::service_connect,
        [](files_context& c, request& req) -> result<response> {
            std::optional<std::string> device;
            if (auto d = req.query_value("deviceId"); d && !d->empty()) device = std::string(*d);
            auto blobs = c.files.list(device);
            if (!blobs) return blobs.error();
            json::array out;
            for (const auto& b : *blobs)
                out.push_back(json::object{{"deviceId", b.device_id},
                                           {"blobName", b.blob_name},
                                           {"sizeInBytes", b.size},
                                           {"lastUpdatedTime", format_iso8601(b.last_modified)},
                                           {"etag", b.etag},
                                           {"contentMD5", b.content_md5}});
            return response::json(200, out);
        });
    auto download = detail::guarded<files_context>(
        shared, auth::right::service_connect,
        [](files_context& c, request& req) -> result<response> {
            auto data = c.files.read(req.param("device"), req.param("blob"));
            if (!data) return data.error();
            response r{200, {}, std::move(*data)};
            r.with_header("Content-Type", "application/octet-stream");
            return r;
        });
    routes.add("GET", "/files", list, detail::storage_bound);
    routes.add("GET", "/files/{device}/{blob...}", download, detail::storage_bound);
}

}  // namespace iothub::service_api
