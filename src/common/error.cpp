#include "common/error.hpp"

#include <array>

namespace iothub {
namespace {

// Indexed by errc; the numbers are Azure IoT Hub's, so clients that parse them keep working.
constexpr std::array<error_descriptor, 29> catalogue{{
    {"GenericBadRequest", 400000, 400},
    {"ArgumentInvalid", 400004, 400},
    {"ArgumentNull", 400005, 400},
    {"IotHubFormatError", 400006, 400},
    {"DeviceDefinedMultipleTimes", 400011, 400},
    {"BulkRegistryOperationFailure", 400013, 400},
    {"IotHubUnauthorizedAccess", 401002, 401},
    {"IotHubUnauthorizedAccess", 401002, 401},
    {"IotHubQuotaExceeded", 403002, 403},
    {"DeviceMaximumQueueDepthExceeded", 403004, 403},
    {"GenericNotFound", 404000, 404},
    {"DeviceNotFound", 404001, 404},
    {"ModuleNotFound", 404010, 404},
    {"DeviceNotOnline", 404103, 404},
    {"GenericMethodNotAllowed", 405000, 405},
    {"GenericConflict", 409000, 409},
    {"DeviceAlreadyExists", 409001, 409},
    {"ModuleAlreadyExistsOnDevice", 409301, 409},
    {"PreconditionFailed", 412001, 412},
    {"DeviceMessageLockLost", 412002, 412},
    {"GenericRequestEntityTooLarge", 413000, 413},
    {"MessageTooLarge", 413001, 413},
    {"TooManyDevices", 413002, 413},
    {"TooManyModulesOnDevice", 413003, 413},
    {"GenericUnsupportedMediaType", 415000, 415},
    {"ThrottlingException", 429001, 429},
    {"ServerError", 500001, 500},
    {"ServiceUnavailable", 503001, 503},
    {"GatewayTimeout", 504101, 504},
}};

static_assert(catalogue.size() == static_cast<std::size_t>(errc::gateway_timeout) + 1,
              "every errc needs a catalogue entry");

}  // namespace

const error_descriptor& describe(errc code) noexcept {
    return catalogue[static_cast<std::size_t>(code)];
}

void throw_exception_from_error(const error& e, const boost::source_location&) {
    throw error_exception(e);
}

}  // namespace iothub
