// The hub-wide error vocabulary.
//
// Every expected failure in the core is an `error`: a code from one catalogue modelled on Azure IoT
// Hub's error codes, plus a human-readable message. Protocol adapters map the code to their wire
// form at the edge (HTTP status + `iothub-errorcode` header, MQTT CONNACK/status, AMQP condition);
// the core never knows which protocol asked. Exceptions are reserved for start-up and bugs.
#pragma once

#include <boost/system/result.hpp>

#include <cstdint>
#include <string>
#include <string_view>

namespace iothub {

enum class errc : std::uint8_t {
    bad_request,             // GenericBadRequest
    argument_invalid,        // ArgumentInvalid
    argument_null,           // ArgumentNull
    format_error,            // IotHubFormatError (malformed JSON)
    defined_multiple_times,  // DeviceDefinedMultipleTimes (bulk)
    bulk_operation_failure,  // BulkRegistryOperationFailure
    unauthorized,            // IotHubUnauthorizedAccess
    device_disabled,         // IotHubUnauthorizedAccess over HTTP; its own CONNACK code
    quota_exceeded,          // IotHubQuotaExceeded
    queue_depth_exceeded,    // DeviceMaximumQueueDepthExceeded
    not_found,               // GenericNotFound (unknown path or resource)
    device_not_found,        // DeviceNotFound
    module_not_found,        // ModuleNotFound
    device_not_online,       // DeviceNotOnline
    method_not_allowed,      // GenericMethodNotAllowed
    already_exists,          // GenericConflict
    device_already_exists,   // DeviceAlreadyExists
    module_already_exists,   // ModuleAlreadyExistsOnDevice
    precondition_failed,     // PreconditionFailed (stale ETag)
    message_lock_lost,       // DeviceMessageLockLost
    request_too_large,       // GenericRequestEntityTooLarge
    message_too_large,       // MessageTooLarge
    too_many_devices,        // TooManyDevices
    too_many_modules,        // TooManyModulesOnDevice
    unsupported_media_type,  // GenericUnsupportedMediaType
    throttled,               // ThrottlingException
    server_error,            // ServerError
    service_unavailable,     // ServiceUnavailable
    gateway_timeout,         // GatewayTimeout
};

// What an error code is called on the wire and which HTTP status carries it.
struct error_descriptor {
    std::string_view name;  // Azure's ErrorCode enum name, e.g. "DeviceNotFound"
    int code;               // Azure's six-digit numeric code, e.g. 404001
    int http_status;
};

const error_descriptor& describe(errc code) noexcept;

class error {
  public:
    // boost::system::result needs a default; a default error is a server fault, never success.
    error() = default;
    error(errc code, std::string message) : code_(code), message_(std::move(message)) {}

    errc code() const noexcept { return code_; }
    const std::string& message() const noexcept { return message_; }
    const error_descriptor& descriptor() const noexcept { return describe(code_); }

    friend bool operator==(const error& a, const error& b) noexcept {
        return a.code_ == b.code_ && a.message_ == b.message_;
    }

  private:
    errc code_ = errc::server_error;
    std::string message_;
};

// Thrown only when a caller asks a failed result for its value: a bug, not control flow.
class error_exception : public std::exception {
  public:
    explicit error_exception(error e) : error_(std::move(e)) {}
    const char* what() const noexcept override { return error_.message().c_str(); }
    const error& get() const noexcept { return error_; }

  private:
    error error_;
};

[[noreturn]] void throw_exception_from_error(const error& e, const boost::source_location& loc);

// The outcome of anything that can fail. [[nodiscard]]: a result is handled, or discarded with
// `(void)` and a comment saying why that is safe.
template <class T>
class [[nodiscard]] result : public boost::system::result<T, error> {
    using base = boost::system::result<T, error>;

  public:
    using base::base;
    result() = default;
    result(base b) : base(std::move(b)) {}
};

}  // namespace iothub
