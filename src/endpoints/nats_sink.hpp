// The sink of a NATS endpoint: owns one NATS connection (the endpoint's servers, or the cluster's
// own when it names none) and the cursors it holds until they may be written.
//
// What a message becomes: subject = the endpoint's template with {deviceId} and {iothub}
// replaced, each escaped so that it stays one token ('.', '*', '>', '%', spaces and control
// characters as %XX); payload = the body; headers = every application property by its name and
// every system property as `iothub-<name>` (names already starting with `iothub-` as they are), and
// `Nats-Msg-Id` = `<hub>/<endpoint>/<source>/<partition>/<sequence number>`, the same on every
// retry.
//
// Guarantees. Core publish: `deliver` returns once the server has read every message (a flush),
// so nothing is lost to the hub's crash after a cursor is written; what happens after the server
// is NATS's (at most once to subscribers). JetStream: `deliver` returns once a stream acknowledged
// every message; a retry publishes the same message ids, which the stream drops as repeats within
// its duplicate window, so a stream receives each message once, in order per device.
#pragma once

#include "nats/settings.hpp"
#include "routing/config.hpp"
#include "routing/sink.hpp"

#include <chrono>
#include <memory>
#include <optional>
#include <string>

namespace iothub::endpoints {

struct nats_sink_options {
    std::string hub_name;
    // The cluster's NATS (cluster mode), for endpoints that name no servers.
    std::optional<nats::connection_settings> cluster;
    // Subjects below it are the cluster's own (`<prefix>.`): refused for routed messages.
    std::string reserved_prefix;
    // How long one delivery may wait for the server (core) or the stream (JetStream).
    std::chrono::milliseconds timeout = std::chrono::seconds(10);
};

// The connection is made at the first delivery and remade as needed, so an endpoint whose servers
// are down now is not dead. Fails with errc::argument_invalid when the endpoint names no servers
// and the hub is not in cluster mode, or its subject is the cluster's.
result<std::unique_ptr<routing::sink>> make_nats_sink(const routing::endpoint& e,
                                                      storage::kv_store& kv,
                                                      const nats_sink_options& options);

// The subject a message from `device_id` goes to (exposed for tests).
std::string nats_subject(std::string_view subject_template, std::string_view device_id,
                         std::string_view hub_name);

}  // namespace iothub::endpoints
