// The MQTT device endpoint: MQTT 3.1.1 over TLS (8883), over WebSockets on the HTTPS port
// (`/$iothub/websocket`, subprotocol mqtt), and optionally plain TCP for local tools and
// benchmarks. Each connection is an Azure device or module connection: authenticated at CONNECT,
// one per identity, with its telemetry appended durably before the PUBACK; it serves the device's
// twin (GET, reported PATCH, desired notifications), its direct methods and its cloud-to-device
// messages (PUBACK completes).
//
// Connections live on the shard that accepted them. Blocking work (authentication, session
// records) runs on the blocking pool and its results are posted back.
#pragma once

#include "c2d/c2d.hpp"
#include "connections/connections.hpp"
#include "device_auth/device_auth.hpp"
#include "methods/methods.hpp"
#include "mqtt/session.hpp"
#include "runtime/shards.hpp"
#include "storage/kv_store.hpp"
#include "telemetry/telemetry.hpp"
#include "twin/twin.hpp"

#include <boost/asio/ssl/context.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>

#include <memory>

namespace iothub::mqtt {

struct services {
    device_auth::device_authenticator& authenticator;
    connections::connection_table& connections;
    telemetry::telemetry_service& telemetry;
    storage::kv_store& sessions;  // clean-session=0 subscriptions, by client id
    runtime::blocking_pool& blocking;
    twin::twin_service& twins;
    methods::method_service& methods;
    c2d::c2d_service& c2d;
};

struct server_settings {
    session_limits limits;
    std::chrono::seconds tls_handshake_timeout{10};
};

class server {
  public:
    server(runtime::shard_set& shards, services svc, server_settings settings);
    ~server();

    result<std::uint16_t> listen_tls(const std::string& address, std::uint16_t port,
                                     std::shared_ptr<boost::asio::ssl::context> tls);
    result<std::uint16_t> listen_plain(const std::string& address, std::uint16_t port);

    // Takes over a connection the HTTPS server upgraded on /$iothub/websocket.
    void accept_websocket(boost::beast::ssl_stream<boost::beast::tcp_stream> stream,
                          boost::beast::http::request<boost::beast::http::string_body> request,
                          std::string subprotocol);

    // Closes the listeners and every connection.
    void begin_stop();
    std::size_t active_connections() const;

    struct impl;  // shared with the connections it owns; defined in server.cpp

  private:
    std::shared_ptr<impl> impl_;
};

}  // namespace iothub::mqtt
