// What the CLI's two AMQP clients (C2D and Event Hubs) do alike: connect to the hub's AMQP port
// over TLS with no SASL (the hub authorizes by CBS, as it does the Node clients) and ask `$cbs`
// for a put-token.
#pragma once

#include "cli/hub_client.hpp"

#include <proton/container.hpp>
#include <proton/message.hpp>

#include <string>

namespace iothub::cli::detail {

// Dials `amqps://{connect_host}:{amqp_port}` trusting the hub's CA; `who` prefixes the container
// id ("iothub-cli-<who>-<uuid>").
void connect_amqps(proton::container& c, const hub_access& hub, const std::string& who);

// A `$cbs` put-token request for `audience` carrying `token`; its message id is `id`.
proton::message put_token_request(const std::string& id, const std::string& audience,
                                  const std::string& token);

}  // namespace iothub::cli::detail
