// Azure Storage's REST conventions, shared by the Blob endpoint's routes: the x-ms-* headers on
// every answer and XML errors with x-ms-error-code. Internal to device_api.
#pragma once

#include "common/error.hpp"
#include "common/time.hpp"
#include "http/message.hpp"

#include <string>
#include <string_view>

namespace iothub::device_api::detail {

inline constexpr std::string_view default_storage_version = "2019-12-12";

std::string http_date(sys_time t);
std::string xml_escape(std::string_view s);
// Azure Storage's headers on every answer.
http::response& storage_headers(http::response& r, const http::request* req,
                                const std::string& request_id);
http::response storage_error(int status, std::string_view code, std::string_view message,
                             const http::request* req);
// Core errors in Azure Storage's words. `invalid` names what an argument_invalid was about.
http::response storage_error(const error& e, const http::request& req, std::string_view invalid);

}  // namespace iothub::device_api::detail
