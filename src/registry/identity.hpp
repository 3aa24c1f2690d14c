// Device and module identities: what the registry stores, the id rules, and the JSON shapes the
// Azure service SDKs read and write (protocol.md section 5).
//
// One `identity` type serves devices and modules (a module has a non-empty module_id) because
// authentication, connection tracking and twins treat them alike. Fields that describe live
// connections (connectionState, lastActivityTime, cloud-to-device queue depth) are not stored
// here; they are supplied at rendering time as `live_state`.
#pragma once

#include "common/error.hpp"
#include "common/time.hpp"

#include <boost/json/value.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace iothub::registry {

enum class device_status : std::uint8_t { enabled, disabled };

enum class auth_kind : std::uint8_t { sas, self_signed, certificate_authority, none };

struct credentials {
    auth_kind kind = auth_kind::sas;
    std::string primary_key;  // Base64, for sas
    std::string secondary_key;
    std::string primary_thumbprint;  // hex SHA-1 or SHA-256, for self_signed
    std::string secondary_thumbprint;
};

struct identity {
    std::string device_id;
    std::string module_id;  // empty for a device
    std::string generation_id;
    std::uint64_t version = 0;  // storage version; the ETag is derived from it
    credentials auth;
    // Devices only:
    device_status status = device_status::enabled;
    std::string status_reason;
    std::optional<sys_time> status_updated;
    bool iot_edge = false;
    std::string device_scope;
    std::vector<std::string> parent_scopes;
    // Modules only:
    std::string managed_by;
    // The generation of the device this module was created under. A module whose device has since
    // been deleted (and perhaps re-created) is invisible, so deleting a device needs no multi-key
    // transaction to take its modules with it.
    std::string device_generation_id;

    bool is_module() const { return !module_id.empty(); }
};

struct live_state {
    bool connected = false;
    std::optional<sys_time> connection_state_updated;
    std::optional<sys_time> last_activity;
    std::uint64_t cloud_to_device_message_count = 0;
};

// Checks a device or module id against Azure's rules: 1-128 characters, ASCII letters and digits
// and - : . + % _ # * ? ! ( ) , = @ ; $ '. `what` names the field in the error message.
result<void> validate_id(std::string_view id, std::string_view what);

// ETags are quoted in HTTP headers and bare in bodies; `etag_for` gives the bare form.
std::string etag_for(std::uint64_t version);
std::optional<std::uint64_t> version_from_etag(std::string_view etag);

// Generation ids distinguish incarnations of the same device id.
std::string new_generation_id();

// Azure wire JSON (service REST). `live` may be omitted for a freshly written identity.
boost::json::object to_json(const identity& id, const live_state& live = {});

// The fields a client may set, parsed from a PUT body or a bulk import item. Validation covers
// types, enums, key and thumbprint formats; missing keys are left empty for the registry to fill.
struct identity_spec {
    identity fields;
    std::optional<std::string> etag;  // bulk items carry it in the body ("eTag")
};
result<identity_spec> parse_device(const boost::json::value& body, std::string_view path_id);
result<identity_spec> parse_module(const boost::json::value& body, std::string_view device_id,
                                   std::string_view path_module_id);

// The registry's own storage encoding (not the wire format, so it can evolve independently).
std::string encode_stored(const identity& id);
result<identity> decode_stored(std::string_view text, std::uint64_t version);

}  // namespace iothub::registry
