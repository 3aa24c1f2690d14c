// The server side of SASL as Azure's clients need it. Proton's built-in server offers only
// ANONYMOUS and EXTERNAL, while the Azure IoT C SDK insists on MSSBCBS and DPS clients use PLAIN,
// so the hub installs its own mechanism table on each transport. Every mechanism succeeds here:
// authorization happens afterwards, per link, from CBS tokens (or the PLAIN password, which is a
// SAS token, or the TLS client certificate).
#pragma once

#include <proton/transport.h>

#include <string>

namespace iothub::amqp::detail {

struct sasl_outcome {
    std::string mechanism;  // empty when the client sent a bare AMQP header
    std::string username;   // PLAIN
    std::string password;   // PLAIN: a SAS token
    bool offer_external = false;
    // PLAIN credentials are checked during SASL, so a bad password fails the SASL outcome as
    // Azure does instead of opening a connection that can do nothing. With `defer_plain` the
    // outcome waits: `plain_pending` says credentials arrived, the owner checks them (off the
    // network thread, `checking` meanwhile) and calls finish_plain.
    bool defer_plain = false;
    bool plain_pending = false;
    bool checking = false;
};

// Call after pn_transport_set_server and before the transport is bound; `state` must outlive the
// transport.
void install_sasl(pn_transport_t* transport, sasl_outcome& state);

// Sends the outcome of deferred PLAIN credentials.
void finish_plain(pn_transport_t* transport, sasl_outcome& state, bool accepted);

}  // namespace iothub::amqp::detail
