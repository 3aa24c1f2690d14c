// The MQTT device endpoint: MQTT 3.1.1 over TLS (8883), over WebSockets on the HTTPS port
// (`/$iothub/websocket`, subprotocol mqtt), and optionally plain TCP for local tools and
// benchmarks. A translator between Azure's MQTT conventions (topics, property bags, QoS) and the
// device session, which holds every rule a device sees: each connection is one device or module
// session, its telemetry durable before the PUBACK, its twin requests, methods and
// cloud-to-device messages (PUBACK completes) carried over topics.
//
// Connections live on the shard that accepted them (net::device_server); the MQTT protocol state
// is mqtt::session, without I/O.
#pragma once

#include "mqtt/session.hpp"
#include "net/connection.hpp"
#include "session/device_session.hpp"

#include <memory>

namespace iothub::mqtt {
namespace core = iothub::session;  // the device session; mqtt::session is MQTT's own

struct server_settings {
    session_limits limits;
    std::chrono::seconds tls_handshake_timeout{10};
    // Telemetry read and not yet durable, per connection, before reading pauses.
    std::size_t max_unstored_bytes = core::default_unstored_telemetry_bytes;
    // C2D messages PUBLISHed and not yet PUBACKed, per connection.
    std::size_t c2d_window = 16;
};

// Listening, WebSocket hand-off and stop are the shell's (net::device_server).
class server : public net::device_server {
  public:
    server(runtime::shard_set& shards, core::services& svc, server_settings settings);
};

}  // namespace iothub::mqtt
