// File upload over HTTPS: the device's session calls (IoT Hub's REST shapes and errors) and the
// blob endpoint that stands in for an Azure Storage account (Azure Storage's REST shapes: 201
// with ETag, Last-Modified, Content-MD5 and x-ms-* headers; XML errors with x-ms-error-code).
// Only what `@azure/storage-blob` sends for a block blob upload is served: Put Blob, Put Block,
// Put Block List. Rules and storage live in file_upload; this file translates.
#include "common/crypto.hpp"
#include "common/time.hpp"
#include "device_api/detail/storage_responses.hpp"
#include "device_api/device_api.hpp"

#include <boost/json.hpp>

#include <ctime>
#include <memory>

namespace iothub::device_api {
namespace json = boost::json;
using http::request;
using http::responder;
using http::response;

using detail::http_date;
using detail::storage_error;
using detail::storage_headers;

namespace {

constexpr http::route_options device_route{.blocking = true, .fold_case = true};

result<json::object> json_body(const request& req) {
    boost::system::error_code ec;
    auto v = json::parse(req.body, ec);
    if (ec) return error(errc::format_error, "The request body is not JSON.");
    if (!v.is_object()) return error(errc::argument_invalid, "The request body must be an object.");
    return std::move(v.get_object());
}

result<response> start_upload(device_auth::device_authenticator& auth,
                              file_upload::file_upload_service& files, request& req) {
    auto who = authenticate(auth, req);
    if (!who) return who.error();
    auto body = json_body(req);
    if (!body) return body.error();
    auto* name = body->if_contains("blobName");
    if (!name || !name->is_string() || name->get_string().empty())
        return error(errc::argument_invalid, "blobName is required.");
    auto g = files.start_upload(who->device_id, std::string_view(name->get_string()), now());
    if (!g) return g.error();
    return response::json(200, json::object{{"correlationId", g->correlation_id},
                                            {"hostName", g->host_name},
                                            {"containerName", g->container},
                                            {"blobName", g->blob_name},
                                            {"sasToken", g->sas_token}});
}

// C# and Python put the correlation id in the body, Node in the path.
result<response> notify(device_auth::device_authenticator& auth,
                        file_upload::file_upload_service& files, request& req) {
    auto who = authenticate(auth, req);
    if (!who) return who.error();
    auto body = json_body(req);
    if (!body) return body.error();
    std::string correlation_id = req.param("cid");
    if (correlation_id.empty()) {
        auto* c = body->if_contains("correlationId");
        if (!c || !c->is_string() || c->get_string().empty())
            return error(errc::argument_invalid, "correlationId is required.");
        correlation_id = std::string(c->get_string());
    }
    auto* ok = body->if_contains("isSuccess");
    if (!ok || !ok->is_bool()) return error(errc::argument_invalid, "isSuccess must be a boolean.");
    if (auto r = files.notify(who->device_id, correlation_id, ok->get_bool(), now()); !r)
        return r.error();
    return response::no_content();
}

// --- the blob endpoint --------------------------------------------------------------------------

response created(const request& req) {
    response r;
    r.status = 201;
    storage_headers(r, &req, random_uuid());
    r.with_header("x-ms-request-server-encrypted", "true");
    return r;
}

response blob_created(const request& req, const file_upload::blob_info& info) {
    auto r = created(req);
    r.with_header("ETag", info.etag)
        .with_header("Last-Modified", http_date(info.last_modified))
        .with_header("Content-MD5", info.content_md5);
    return r;
}

response put(file_upload::file_upload_service& files, const request& req) {
    // The blob's path below the container: the route's rest capture, segment by segment.
    std::vector<std::string> path(req.segments.begin() + 1, req.segments.end());
    const auto t = now();
    if (auto ok = files.authorize(path, req.query, t); !ok)
        return storage_error(ok.error(), req, "AuthenticationFailed");
    auto comp = req.query_value("comp");
    if (!comp) {
        auto type = req.header("x-ms-blob-type");
        if (type.empty())
            return storage_error(400, "MissingRequiredHeader",
                                 "An HTTP header that's mandatory for this request is not "
                                 "specified: x-ms-blob-type.",
                                 &req);
        if (type != "BlockBlob")
            return storage_error(400, "InvalidHeaderValue",
                                 "Only block blobs are served: x-ms-blob-type must be BlockBlob.",
                                 &req);
        auto info = files.put_blob(path, req.body, t);
        if (!info) return storage_error(info.error(), req, "InvalidBlobOrBlock");
        return blob_created(req, *info);
    }
    if (*comp == "block") {
        auto id = req.query_value("blockid");
        if (!id)
            return storage_error(400, "MissingRequiredQueryParameter",
                                 "A query parameter that's mandatory for this request is not "
                                 "specified: blockid.",
                                 &req);
        auto md5 = files.put_block(path, *id, req.body);
        if (!md5) return storage_error(md5.error(), req, "InvalidBlockId");
        return created(req).with_header("Content-MD5", *md5);
    }
    if (*comp == "blocklist") {
        auto ids = file_upload::parse_block_list(req.body);
        if (!ids) return storage_error(ids.error(), req, "InvalidXmlDocument");
        auto info = files.put_block_list(path, *ids, t);
        if (!info) return storage_error(info.error(), req, "InvalidBlockList");
        return blob_created(req, *info);
    }
    return storage_error(400, "InvalidQueryParameterValue",
                         "Value for one of the query parameters specified in the request URI is "
                         "invalid: comp=" +
                             std::string(*comp) + ".",
                         &req);
}

}  // namespace

void add_file_routes(http::router& routes, device_auth::device_authenticator& auth,
                     file_upload::file_upload_service& files) {
    auto session = [&auth,
                    &files](result<response> (*body)(device_auth::device_authenticator&,
                                                     file_upload::file_upload_service&, request&)) {
        return [&auth, &files, body](request& req, responder done) {
            auto r = body(auth, files, req);
            done(r ? std::move(*r) : http::error_response(r.error()));
        };
    };
    routes.add("POST", "/devices/{id}/files", session(start_upload), device_route);
    routes.add("POST", "/devices/{id}/files/notifications", session(notify), device_route);
    routes.add("POST", "/devices/{id}/files/notifications/{cid}", session(notify), device_route);

    const auto limit = static_cast<std::size_t>(files.settings().max_bytes);
    const http::route_options blob_route{
        .blocking = true, .max_body = limit, .too_large = [](std::size_t max) {
            return storage_error(413, "RequestBodyTooLarge",
                                 "The request body is too large and exceeds the maximum "
                                 "permissible limit (" +
                                     std::to_string(max) + " bytes).",
                                 nullptr);
        }};
    routes.add(
        "PUT", "/" + files.settings().container + "/{blob...}",
        [&files](request& req, responder done) { done(put(files, req)); }, blob_route);
}

}  // namespace iothub::device_api
