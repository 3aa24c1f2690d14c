// The AMQP 1.0 endpoint: devices (telemetry, cloud-to-device, twin and method links, many
// identities multiplexed on one connection by gateways), the service side (sending C2D messages,
// receiving delivery feedback and file notifications) and the Event Hubs-compatible endpoint,
// over TLS on 5671 and over WebSockets on the HTTPS port (`/$iothub/websocket`, subprotocol
// AMQPWSB10).
//
// Qpid Proton's connection driver does framing, sessions, links and flow control; the hub owns
// the stream (net::device_server) and moves bytes between it and the driver, so AMQP runs on the
// same shards and I/O model as MQTT. Security: a bare AMQP header, SASL ANONYMOUS, MSSBCBS or
// PLAIN, then `$cbs` put-tokens that authorize links per address (or a TLS client certificate
// for X.509 devices). Device links are translated onto the device session, like every protocol's.
#pragma once

#include "auth/policy.hpp"
#include "c2d/c2d.hpp"
#include "device_auth/device_auth.hpp"
#include "file_upload/file_upload.hpp"
#include "net/connection.hpp"
#include "session/device_session.hpp"
#include "storage/event_log.hpp"
#include "telemetry/consumer_groups.hpp"

#include <functional>
#include <memory>

namespace iothub::amqp {

// What the service-side links and CBS need beyond the device sessions.
struct services {
    device_auth::device_authenticator& authenticator;
    const auth::policy_set& policies;
    const auth::host_names& hosts;
    c2d::c2d_service& c2d;
    std::string hub_name;  // the hub's host name, as feedback's user-id carries it
    // The Event Hubs-compatible endpoint: the telemetry stream, its consumer groups, and the
    // entity's name and creation time as `$management` reports them.
    storage::event_log& events;
    telemetry::consumer_groups& groups;
    std::string event_hub;
    sys_time created;
    // File notifications for /messages/serviceBound/filenotifications.
    file_upload::file_upload_service& files;
    // The event hubs routing endpoints host, by name (case-insensitive): read like the built-in
    // one, with the same credentials; null when there is no such endpoint. May be empty.
    std::function<storage::event_log*(std::string_view)> hosted_event_hub;
};

struct server_settings {
    std::chrono::seconds tls_handshake_timeout{10};
    std::chrono::seconds idle_timeout{240};  // advertised; the peer's silence beyond it ends it
    std::uint32_t max_frame_size = 256 * 1024;
    std::uint32_t link_credit = 100;  // messages a client may have in flight per link
    std::size_t max_links_per_connection = 4096;
    // An oversized message is read, dropped and rejected; one that goes on beyond this detaches
    // its link instead.
    std::uint64_t max_discarded_message_bytes = 64 * 1024 * 1024;
    // Telemetry read and not yet durable, per connection (all its identities), before reading
    // pauses.
    std::size_t max_unstored_bytes = session::default_unstored_telemetry_bytes;
};

namespace detail {
struct server_state;
}

// Listening, WebSocket hand-off and stop are the shell's (net::device_server).
class server : public net::device_server {
  public:
    server(runtime::shard_set& shards, services svc, session::services& sessions,
           server_settings settings = {});

    // The identity's access ended: every connection forgets the tokens it holds for it (its
    // live links are closed through the connection table already).
    void revoke(const std::string& device_id, const std::string& module_id);

  private:
    server(runtime::shard_set& shards, std::shared_ptr<detail::server_state> state,
           std::chrono::seconds tls_handshake_timeout);
};

}  // namespace iothub::amqp
