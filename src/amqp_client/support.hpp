// What the hub's AMQP clients (the command-line C2D and Event Hubs clients, the external Event
// Hubs routing endpoint) need alike on top of Qpid Proton's C++ binding: the `$cbs` put-token
// request and its answer, a value as text, and the error condition a peer gave with an outcome,
// which the binding does not expose. No I/O.
#pragma once

#include <proton/message.hpp>
#include <proton/tracker.hpp>
#include <proton/value.hpp>

#include <cstdint>
#include <string>

namespace iothub::amqp_client {

// A `$cbs` put-token request for `audience` carrying `token` (type
// servicebus.windows.net:sastoken); its message id is `id`, and the answer goes to `reply_to`
// (Azure: the name of the client's
// `$cbs` receiver; the hub answers any).
proton::message put_token_request(const std::string& id, const std::string& audience,
                                  const std::string& token, const std::string& reply_to = "cbs");

// A `$cbs` or `$management` answer's status-code (0 when absent) and status-description.
std::int64_t status_of(const proton::message& m);
std::string status_description(const proton::message& m);

// Strings, symbols and binary as their bytes, timestamps in ISO 8601, null as "", anything else
// as Proton writes it.
std::string text_of(const proton::value& v);

// The error condition the peer attached to its outcome for a delivery (a rejection's reason);
// empty when it gave none.
struct outcome_condition {
    std::string name;
    std::string description;
};
outcome_condition condition_of(const proton::tracker& t);

}  // namespace iothub::amqp_client
