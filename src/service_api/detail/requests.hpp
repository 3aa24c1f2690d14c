// Request-reading helpers every service route shares: JSON bodies, If-Match, path ids.
#pragma once

#include "common/encoding.hpp"
#include "http/router.hpp"
#include "registry/registry.hpp"

#include <boost/json/parse.hpp>

namespace iothub::service_api::detail {

// Routes whose handlers touch storage run on the blocking pool.
inline constexpr http::route_options storage_bound{true};

// Parses a JSON request body; empty bodies and non-JSON content types are rejected up front.
inline result<boost::json::value> json_body(const http::request& req) {
    if (req.body.empty()) return error(errc::argument_null, "The request body is empty.");
    auto type = req.header("content-type");
    if (!type.empty() && to_lower(type).find("json") == std::string::npos)
        return error(errc::unsupported_media_type,
                     "Content-Type must be application/json, not '" + std::string(type) + "'.");
    boost::system::error_code ec;
    auto v = boost::json::parse(req.body, ec);
    if (ec) return error(errc::format_error, "The request body is not valid JSON: " + ec.message());
    return v;
}

inline registry::if_match if_match_of(const http::request& req) {
    return registry::if_match::parse(req.header("if-match"));
}

inline result<void> check_path_ids(const http::request& req) {
    if (auto r = registry::validate_id(req.param("id"), "deviceId"); !r) return r;
    if (!req.param("mid").empty())
        if (auto r = registry::validate_id(req.param("mid"), "moduleId"); !r) return r;
    return {};
}

}  // namespace iothub::service_api::detail
