// The sink of an eventHubs endpoint with a connection string: routed messages go to an event hub
// elsewhere (Azure Event Hubs, Microsoft's emulator, another iothub's hosted event hub) over AMQP
// 1.0. The sink owns one connection at a time, run by Qpid Proton's C++ container on a thread of
// its own: TLS to `amqps://host:5671` (the Endpoint's port when it gives one) verifying the peer
// against the system CAs plus the extra CA files, SASL ANONYMOUS, a `$cbs` put-token with a SAS
// token for `sb://host/entity` renewed well before it expires, and one sender on the entity.
// `UseDevelopmentEmulator=true` in the connection string means the emulator's plain AMQP on 5672.
//
// Guarantees: at least once, in order per device. Each message carries `x-opt-partition-key` = its
// device id, so the event hub keeps a device's messages in one partition in order; `deliver`
// returns only when the event hub has accepted every message of the call, and only then holds the
// cursor, which `flush` writes. A rejection (with the event hub's condition and description), a
// release, a timeout or a lost connection fails the call; the worker retries it whole, on a new
// connection. No exception leaves the sink.
//
// What a message becomes: the body as a data section; application properties as they are;
// message-id, correlation-id, content-type and content-encoding as AMQP properties; `iothub-*`
// and `dt-*` system properties as message annotations (iothub-enqueuedtime as a timestamp).
#pragma once

#include "common/error.hpp"
#include "routing/config.hpp"
#include "routing/sink.hpp"

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace iothub::endpoints {

struct eventhub_sink_options {
    // How long a call may wait for the connection and for the event hub's dispositions.
    std::chrono::milliseconds timeout{30000};
    // CA certificates (PEM) trusted besides the system's: a private receiver's, or the hub's own
    // development CA so that one iothub can route to another on the same machine.
    std::vector<std::filesystem::path> extra_ca_files;
    std::chrono::seconds token_lifetime{3600};
    std::chrono::seconds token_renewal{2700};  // a new put-token this long after the last
};

// Where an endpoint's connection string points.
struct eventhub_target {
    std::string host;  // without the port
    std::uint16_t port = 5671;
    bool tls = true;  // false for the emulator (UseDevelopmentEmulator=true)
    std::string key_name;
    std::string key;
    std::string entity;

    std::string url() const;       // "amqps://host:port"
    std::string audience() const;  // "sb://host/entity": what tokens are for
};

// Reads `Endpoint=sb://host[:port]/;SharedAccessKeyName=..;SharedAccessKey=..[;EntityPath=..]`
// (keys ignoring case), the entity from EntityPath or else the endpoint's entityPath.
// errc::argument_invalid naming what is missing.
result<eventhub_target> parse_eventhub_target(const routing::endpoint& e);

// An Event Hubs SAS token for the target's audience, signed with the key's text, expiring at
// `expiry` (seconds since the epoch): `SharedAccessSignature sr=..&sig=..&se=..&skn=..`.
std::string eventhub_token(const eventhub_target& t, std::int64_t expiry);

// Fails only for an endpoint that names no usable event hub or a CA file that cannot be read;
// connecting waits for the first delivery.
result<std::unique_ptr<routing::sink>> make_eventhub_sink(const routing::endpoint& e,
                                                          storage::kv_store& kv,
                                                          eventhub_sink_options o = {});

}  // namespace iothub::endpoints
