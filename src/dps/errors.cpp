#include "dps/errors.hpp"

#include "common/crypto.hpp"
#include "common/time.hpp"

namespace iothub::dps {

int error_code(const error& e) {
    switch (e.code()) {
        case errc::unauthorized:
            return 401002;
        case errc::not_found:
        case errc::device_not_found:
            return 404201;
        case errc::already_exists:
            return 409201;
        case errc::precondition_failed:
            return 412002;
        case errc::throttled:
            return 429001;
        case errc::service_unavailable:
            return 503000;
        case errc::server_error:
            return 500000;
        default:
            break;
    }
    const int status = e.descriptor().http_status;
    return status == 400 ? 400004 : status * 1000;
}

boost::json::object error_body(const error& e) {
    return {{"errorCode", error_code(e)},
            {"trackingId", random_uuid()},
            {"message", e.message()},
            {"info", boost::json::object{}},
            {"timestampUtc", format_iso8601(now())}};
}

}  // namespace iothub::dps
