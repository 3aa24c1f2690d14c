// Device registration with the provisioning service: what a device's register call does, whatever
// the protocol carries it (HTTPS today; MQTT and AMQP speak to the same service).
//
// A device presents its registration id and a SAS (`sr={idScope}/registrations/{id}`,
// `skn=registration`) signed with its individual enrollment's key, or with the key derived from
// an enrollment group's (HMAC-SHA256 of the registration id under the group key); or, with no
// SAS, an X.509 certificate (TLS client authentication) whose CN is the registration id: an
// individual enrollment's own certificate (by thumbprint), or a leaf whose chain, as the device
// sent it, leads to a group's signing certificate or to the verified CA a group references. The
// first matching enrollment wins: an individual one, else a group. A disabled enrollment answers
// status "disabled" and creates nothing. Otherwise the device is assigned to the linked hub its
// enrollment's allocation policy chooses (allocation.hpp): its identity is created (or its keys
// brought to the attestation's; a disabled device stays disabled), the enrollment's initial twin
// applied at the first assignment (and again when reprovisionPolicy.migrateDeviceData is false),
// and a registration state recorded (`dps/registration/<lower-case id>`).
//
// As in Azure the call is asynchronous: it answers `assigning` with an operation id, and polling
// that operation answers `assigned` with the registration state. The assignment itself is done
// before the first answer, so the first poll finds it.
#pragma once

#include "auth/client_certificate.hpp"
#include "common/error.hpp"
#include "common/time.hpp"
#include "dps/allocation.hpp"
#include "dps/assignment.hpp"
#include "dps/enrollments.hpp"
#include "dps/linked_hubs.hpp"
#include "storage/kv_store.hpp"

#include <boost/json/object.hpp>

#include <functional>
#include <optional>
#include <string>

namespace iothub::dps {

// errc::... as the registry answers; the registration then fails with that error.
using assign_function = std::function<result<void>(const device_assignment&)>;

struct registration_request {
    std::string id_scope;
    std::string registration_id;
    std::string authorization;  // the SAS as sent (empty with a certificate)
    std::optional<auth::client_certificate> certificate;  // what TLS received
    boost::json::value payload;  // DeviceRegistration.payload, passed to custom allocation
};

class registration_service {
  public:
    // `webhook` calls custom allocation webhooks (http_webhook in a hub).
    registration_service(storage::kv_store& kv, enrollment_store& enrollments,
                         linked_hub_store& hubs, std::string id_scope, assign_function assign,
                         webhook_function webhook);

    // Authenticates, assigns and answers the RegistrationOperationStatus:
    // {"operationId", "status": "assigning"}. errc::unauthorized for an unknown registration, a
    // wrong key or a bad token; a disabled enrollment answers {"status": "disabled"}.
    result<boost::json::object> register_device(const registration_request& r, sys_time now);
    // The operation's status: {"operationId", "status": "assigned", "registrationState": {...}}.
    result<boost::json::object> operation_status(const registration_request& r,
                                                 std::string_view operation_id, sys_time now);
    // Only checks the device's credentials (AMQP checks them when each provisioning link
    // attaches, so a wrong key refuses the link).
    result<void> check_credentials(const registration_request& r, sys_time now);
    // The device's own registration state (DPS's status lookup), after authenticating it.
    result<boost::json::object> device_state(const registration_request& r, sys_time now);

    // The service's view (registration state get, delete and query by group).
    result<boost::json::object> state(std::string_view registration_id);
    result<void> remove_state(std::string_view registration_id, std::string_view if_match);
    result<query_page> states_of_group(std::string_view group_id, std::size_t max,
                                       std::string_view continuation);

    // The PEM of a verified CA certificate registered with the hub, by name (for groups that
    // reference one); errc::not_found or unauthorized (not verified) otherwise.
    void set_ca_lookup(std::function<result<std::string>(std::string_view name)> lookup) {
        ca_lookup_ = std::move(lookup);
    }

  private:
    struct matched;
    result<matched> authenticate(const registration_request& r, sys_time now);
    result<matched> authenticate_certificate(const registration_request& r, sys_time now);

    storage::kv_store& kv_;
    enrollment_store& enrollments_;
    linked_hub_store& hubs_;
    std::string id_scope_;
    assign_function assign_;
    webhook_function webhook_;
    std::function<result<std::string>(std::string_view)> ca_lookup_;
};

// What `assigning` tells a device: poll after this many seconds (HTTP Retry-After, MQTT
// retry-after). Whole seconds: SDKs other than Node's parse it as an integer.
inline constexpr int poll_after_seconds = 1;

// DeviceRegistration.payload from a register request's body, whatever carried it (null when
// absent or the body is not a JSON object).
boost::json::value registration_payload(std::string_view body);

// The key a device of a symmetric-key group signs with: Base64(HMAC-SHA256(group key, id)).
std::string derive_device_key(std::string_view group_key, std::string_view registration_id);

}  // namespace iothub::dps
