#include "device_api/detail/storage_responses.hpp"

#include "common/crypto.hpp"
#include "common/time.hpp"

#include <ctime>

namespace iothub::device_api::detail {
using http::request;
using http::response;

std::string http_date(sys_time t) {
    std::time_t tt = std::chrono::system_clock::to_time_t(
        std::chrono::time_point_cast<std::chrono::system_clock::duration>(t));
    std::tm tm{};
    gmtime_r(&tt, &tm);
    char buf[64];
    std::strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    return buf;
}

std::string xml_escape(std::string_view s) {
    std::string out;
    for (char c : s) {
        switch (c) {
            case '<':
                out += "&lt;";
                break;
            case '>':
                out += "&gt;";
                break;
            case '&':
                out += "&amp;";
                break;
            case '"':
                out += "&quot;";
                break;
            default:
                out.push_back(c);
        }
    }
    return out;
}

response& storage_headers(response& r, const request* req, const std::string& request_id) {
    auto version = req ? req->header("x-ms-version") : std::string_view{};
    r.with_header("x-ms-request-id", request_id)
        .with_header("x-ms-version",
                     std::string(version.empty() ? default_storage_version : version))
        .with_header("Date", http_date(now()));
    if (req)
        if (auto client = req->header("x-ms-client-request-id"); !client.empty())
            r.with_header("x-ms-client-request-id", std::string(client));
    return r;
}

response storage_error(int status, std::string_view code, std::string_view message,
                       const request* req) {
    const auto request_id = random_uuid();
    response r;
    r.status = status;
    r.body = "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>" + std::string(code) +
             "</Code><Message>" + xml_escape(message) + "\nRequestId:" + request_id +
             "\nTime:" + format_iso8601(now()) + "</Message></Error>";
    r.with_header("Content-Type", "application/xml")
        .with_header("x-ms-error-code", std::string(code));
    storage_headers(r, req, request_id);
    return r;
}

response storage_error(const error& e, const request& req, std::string_view invalid) {
    switch (e.code()) {
        case errc::unauthorized:
            return storage_error(403, "AuthenticationFailed",
                                 "Server failed to authenticate the request. " + e.message(), &req);
        case errc::request_too_large:
            return storage_error(413, "RequestBodyTooLarge", e.message(), &req);
        case errc::argument_invalid:
            return storage_error(400, invalid, e.message(), &req);
        case errc::already_exists:
            return storage_error(409, "InvalidBlobOrBlock", e.message(), &req);
        case errc::not_found:
            return storage_error(404, "BlobNotFound", e.message(), &req);
        default:
            return storage_error(500, "InternalError", e.message(), &req);
    }
}

}  // namespace iothub::device_api::detail
