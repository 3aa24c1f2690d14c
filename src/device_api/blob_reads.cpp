// The Blob endpoint's reads, for the containers routing's storage endpoints write: List Blobs
// (`GET /{container}?restype=container&comp=list`, prefix, marker, maxresults), Get Blob and Get
// Blob Properties (`GET`/`HEAD /{container}/{blob...}`), in Azure Storage's REST shapes, as
// `@azure/storage-blob` calls them with the account SAS of `iothub connection-string --storage`.
// These routes are registered after every other, so a container cannot shadow an API path.
#include "common/crypto.hpp"
#include "device_api/detail/storage_responses.hpp"
#include "device_api/device_api.hpp"

#include <charconv>

namespace iothub::device_api {
using detail::storage_error;
using detail::storage_headers;
using http::request;
using http::responder;
using http::response;

namespace {

constexpr http::route_options read_route{.blocking = true};

std::string blob_path(const request& req) {
    return req.param("blob");
}

// Only requests an Azure Storage client makes (a SAS, a storage version header, a container
// operation) are the Blob endpoint's: any other path the hub does not serve is the service API's
// 404, in its JSON shape.
bool storage_request(const request& req) {
    return req.query_value("sig") || req.query_value("restype") || req.query_value("comp") ||
           !req.header("x-ms-version").empty();
}

void blob_headers(response& r, const file_upload::stored_blob& b) {
    r.with_header("Content-Length", std::to_string(b.size))
        .with_header("Content-Type",
                     b.content_type.empty() ? "application/octet-stream" : b.content_type)
        .with_header("ETag", b.etag)
        .with_header("Last-Modified", detail::http_date(b.last_modified))
        .with_header("x-ms-creation-time", detail::http_date(b.last_modified))
        .with_header("x-ms-blob-type", "BlockBlob")
        .with_header("x-ms-lease-status", "unlocked")
        .with_header("x-ms-lease-state", "available")
        .with_header("x-ms-server-encrypted", "true")
        .with_header("Accept-Ranges", "bytes");
    if (!b.content_md5.empty()) r.with_header("Content-MD5", b.content_md5);
}

response list(const blob_read_context& c, const request& req) {
    const auto restype = req.query_value("restype").value_or("");
    const auto comp = req.query_value("comp").value_or("");
    const auto& container = req.param("container");
    if (restype != "container" || comp != "list")
        return storage_error(400, "UnsupportedQueryParameter",
                             "Only List Blobs (restype=container&comp=list) is served on a "
                             "container.",
                             &req);
    if (auto ok = file_upload::check_account_sas(req.query, c.policies, 'l', now()); !ok)
        return storage_error(ok.error(), req, "InvalidQueryParameterValue");
    const auto prefix = std::string(req.query_value("prefix").value_or(""));
    const auto marker = std::string(req.query_value("marker").value_or(""));
    std::size_t max = 5000;
    if (auto m = req.query_value("maxresults")) {
        std::size_t v = 0;
        auto [p, ec] = std::from_chars(m->data(), m->data() + m->size(), v);
        if (ec != std::errc{} || v == 0)
            return storage_error(400, "OutOfRangeQueryParameterValue",
                                 "maxresults must be a positive integer.", &req);
        max = std::min<std::size_t>(v, 5000);
    }
    auto listing = c.blobs.list(container, prefix, marker, max);
    if (!listing) return storage_error(listing.error(), req, "InvalidResourceName");
    using detail::xml_escape;
    std::string xml =
        R"(<?xml version="1.0" encoding="utf-8"?><EnumerationResults ServiceEndpoint="https://)" +
        xml_escape(std::string(req.header("host"))) + R"(/" ContainerName=")" +
        xml_escape(container) + "\">";
    if (!prefix.empty()) xml += "<Prefix>" + xml_escape(prefix) + "</Prefix>";
    if (!marker.empty()) xml += "<Marker>" + xml_escape(marker) + "</Marker>";
    if (req.query_value("maxresults"))
        xml += "<MaxResults>" + std::to_string(max) + "</MaxResults>";
    xml += "<Blobs>";
    for (const auto& b : listing->blobs) {
        xml += "<Blob><Name>" + xml_escape(b.name) + "</Name><Properties><Creation-Time>" +
               detail::http_date(b.last_modified) + "</Creation-Time><Last-Modified>" +
               detail::http_date(b.last_modified) + "</Last-Modified><Etag>" + xml_escape(b.etag) +
               "</Etag><Content-Length>" + std::to_string(b.size) +
               "</Content-Length><Content-Type>" + xml_escape(b.content_type) +
               "</Content-Type><Content-MD5>" + b.content_md5 +
               "</Content-MD5><BlobType>BlockBlob</BlobType><LeaseStatus>unlocked</LeaseStatus>"
               "<LeaseState>available</LeaseState><ServerEncrypted>true</ServerEncrypted>"
               "<AccessTier>Hot</AccessTier><AccessTierInferred>true</AccessTierInferred>"
               "</Properties><OrMetadata /></Blob>";
    }
    xml += "</Blobs><NextMarker>" + xml_escape(listing->next_marker) +
           "</NextMarker></EnumerationResults>";
    response r;
    r.status = 200;
    r.body = std::move(xml);
    r.with_header("Content-Type", "application/xml");
    storage_headers(r, &req, random_uuid());
    return r;
}

response read(const blob_read_context& c, const request& req, bool with_body) {
    if (auto ok = file_upload::check_account_sas(req.query, c.policies, 'r', now()); !ok)
        return storage_error(ok.error(), req, "InvalidQueryParameterValue");
    const auto& container = req.param("container");
    const auto name = blob_path(req);
    auto props = c.blobs.properties(container, name);
    if (!props) return storage_error(props.error(), req, "InvalidResourceName");
    response r;
    r.status = 200;
    if (with_body) {
        auto bytes = c.blobs.read(container, name);
        if (!bytes) return storage_error(bytes.error(), req, "InvalidResourceName");
        r.body = std::move(*bytes);
    }
    storage_headers(r, &req, random_uuid());
    blob_headers(r, *props);
    return r;
}

}  // namespace

void add_blob_read_routes(http::router& routes, blob_read_context ctx) {
    auto c = std::make_shared<blob_read_context>(ctx);
    auto only_storage = [](auto answer) {
        return [answer](request& req, responder done) {
            if (!storage_request(req))
                return done(http::error_response(
                    error(errc::not_found, "No resource at " + req.path + ".")));
            done(answer(req));
        };
    };
    routes.add("GET", "/{container}",
               only_storage([c](const request& req) { return list(*c, req); }), read_route);
    routes.add("GET", "/{container}/{blob...}",
               only_storage([c](const request& req) { return read(*c, req, true); }), read_route);
    routes.add("HEAD", "/{container}/{blob...}",
               only_storage([c](const request& req) { return read(*c, req, false); }), read_route);
}

}  // namespace iothub::device_api
