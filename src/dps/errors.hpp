// How the provisioning service reports a failure: DPS's numeric error codes (status * 1000 and a
// detail) and its error body, shared by the service API and the device registration API.
#pragma once

#include "common/error.hpp"

#include <boost/json/object.hpp>

namespace iothub::dps {

// e.g. 400004 (argument invalid), 401002 (unauthorized), 404201 (not found), 409201 (conflict),
// 412002 (precondition failed), 429001 (throttled), 500000, 503000.
int error_code(const error& e);

// {"errorCode", "trackingId", "message", "info": {}, "timestampUtc"}.
boost::json::object error_body(const error& e);

}  // namespace iothub::dps
