// What the CLI's two AMQP clients (C2D and Event Hubs) do alike: connect to the hub's AMQP port
// over TLS with no SASL (the hub authorizes by CBS, as it does the Node clients). The put-token
// request itself is amqp_client's.
#pragma once

#include "cli/hub_client.hpp"

#include <proton/container.hpp>

#include <string>

namespace iothub::cli::detail {

// Dials `amqps://{connect_host}:{amqp_port}` trusting the hub's CA; `who` prefixes the container
// id ("iothub-cli-<who>-<uuid>").
void connect_amqps(proton::container& c, const hub_access& hub, const std::string& who);

}  // namespace iothub::cli::detail
