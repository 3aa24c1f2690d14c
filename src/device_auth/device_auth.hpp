// Authenticates devices and modules connecting over any protocol, against the registry:
//
//  - SAS signed with the identity's own key (primary or secondary), with `sr` covering
//    {host}/devices/{id} (or .../modules/{mid});
//  - SAS signed with a shared access policy that holds DeviceConnect (`skn` set), for any device;
//  - X.509: a client certificate whose SHA-1 or SHA-256 thumbprint is registered for a selfSigned
//    identity, or whose chain leads to a verified CA for a certificateAuthority identity (with the
//    subject CN equal to the device id).
//
// The result is a principal that the protocol adapters keep for the life of the connection and
// that telemetry stamps into every message (iothub-connection-* properties).
#pragma once

#include "auth/client_certificate.hpp"
#include "auth/policy.hpp"
#include "common/error.hpp"
#include "common/time.hpp"
#include "registry/registry.hpp"

#include <optional>
#include <string>
#include <vector>

namespace iothub::device_auth {

struct device_principal {
    enum class method : std::uint8_t { device_key, policy_key, x509_thumbprint, x509_ca };

    std::string device_id;
    std::string module_id;
    std::string generation_id;
    method how = method::device_key;
    std::optional<sys_time> expires;  // SAS: the token's expiry; the connection ends then

    // "dev" or "dev/mod": the identity's key for one-connection-per-identity.
    std::string key() const { return module_id.empty() ? device_id : device_id + "/" + module_id; }
    // The iothub-connection-auth-method value, e.g.
    // {"scope":"device","type":"sas","issuer":"iothub"}.
    std::string auth_method() const;
};

using auth::client_certificate;

struct device_credentials {
    std::string device_id;
    std::string module_id;
    std::optional<std::string> sas_token;
    std::optional<client_certificate> certificate;
};

// Verifies a certificate chain against the hub's verified CA certificates; implemented by the
// CA registry. Returns the leaf's subject CN when the chain is trusted.
using ca_verifier = std::function<result<std::string>(const client_certificate&)>;

class device_authenticator {
  public:
    device_authenticator(registry::device_registry& registry, const auth::policy_set& policies,
                         const auth::host_names& hosts, ca_verifier verify_ca = {});

    // errc::unauthorized for anything wrong with the credentials or an unknown identity (the
    // message says what), errc::device_disabled for a disabled device. Blocks on the registry.
    result<device_principal> authenticate(const device_credentials& credentials, sys_time now);

  private:
    registry::device_registry& registry_;
    const auth::policy_set& policies_;
    const auth::host_names& hosts_;
    ca_verifier verify_ca_;
};

// True when a change to an identity must end its live connections: deleted, disabled, or its
// credentials changed.
bool ends_connections(const registry::identity_change& change);

}  // namespace iothub::device_auth
