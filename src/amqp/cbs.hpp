// Claims-based security: what a `$cbs` put-token (or a SASL PLAIN password) grants on one AMQP
// connection. A device or module token grants that identity's links; a shared access policy token
// scoped to the hub grants the service links its rights allow. A grant lasts until the token's
// expiry; a later put-token for the same principal renews it.
#pragma once

#include "auth/policy.hpp"
#include "device_auth/device_auth.hpp"

#include <optional>
#include <string>

namespace iothub::amqp {

struct grant {
    std::optional<device_auth::device_principal> device;  // set for device and module tokens
    std::string policy;                                   // set for service tokens
    auth::rights rights;                                  // what a service token allows
    // Event Hubs tokens: the event hub (lower case) the token is scoped to; empty for tokens of
    // the whole hub. Sends to a hosted event hub need a token for it or for the whole hub.
    std::string entity;
    std::optional<sys_time> expires;

    // "d", "d/m" for devices; "$service/<policy>[/<entity>]" for service tokens, so tokens of one
    // policy for different event hubs are held side by side and each renews itself.
    std::string key() const {
        if (device) return device->key();
        return "$service/" + policy + (entity.empty() ? "" : "/" + entity);
    }

    // Covers sending to the event hub `name` (a ServiceConnect policy, for it or the whole hub).
    bool allows_sending_to(std::string_view name) const;
};

// The parts of a put-token request the hub reads.
struct put_token_request {
    std::string operation;  // "put-token"
    std::string type;       // "servicebus.windows.net:sastoken" (or "azure-devices.net:sastoken")
    std::string audience;   // `name`: the resource the token is for
    std::string token;      // the body
};

// Checks the request's shape, then the token against the registry and the policies. Blocks (the
// registry). errc::unauthorized with a precise message for every failure; errc::argument_invalid
// for a request that is not a SAS put-token. Tokens for `sb://host/{event_hub}[/...]` are Event
// Hubs tokens, whose policy key signs as text rather than as the bytes it encodes.
result<grant> authorize_put_token(const put_token_request& request,
                                  device_auth::device_authenticator& devices,
                                  const auth::policy_set& policies, const auth::host_names& hosts,
                                  std::string_view event_hub, sys_time now);

// An Event Hubs token (`security_token` of a $management request, or a put-token body) for the
// hub's event hub entity, signed with a policy key used as text (or, leniently, as IoT Hub signs).
result<grant> authorize_event_hubs_token(std::string_view token, const auth::policy_set& policies,
                                         const auth::host_names& hosts, std::string_view event_hub,
                                         sys_time now);

}  // namespace iothub::amqp
