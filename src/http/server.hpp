// The HTTPS front door (Boost.Beast over TLS): accepts on one shard, hands each connection to the
// next shard round-robin, and serves keep-alive HTTP/1.1 with C++20 coroutines.
//
// Limits: header 16 KiB, body `max_body` (413 beyond it), TLS handshake 10 s, idle keep-alive
// 120 s, 60 s to receive a body. Every failure answers with Azure's error format; a malformed
// request also closes the connection.
//
// Shutdown is two-phase: begin_stop() closes the listeners, closes idle connections and lets
// requests in flight (header received) finish (they answer with `Connection: close`);
// active_connections() tells when that is done.
#pragma once

#include "common/error.hpp"
#include "http/router.hpp"
#include "runtime/shards.hpp"

#include <boost/asio/ssl/context.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

namespace iothub::http {

struct server_settings {
    std::size_t max_body = 1024 * 1024;
    std::chrono::seconds handshake_timeout{10};
    std::chrono::seconds idle_timeout{120};
    std::chrono::seconds request_timeout{60};  // to receive a body once its header arrived
    std::chrono::seconds write_timeout{30};
};

class server {
  public:
    server(runtime::shard_set& shards, runtime::blocking_pool& blocking,
           std::shared_ptr<boost::asio::ssl::context> tls, const router& routes,
           server_settings settings);
    ~server();

    // A WebSocket protocol served on /$iothub/websocket: the handler takes over the TLS stream and
    // the upgrade request, and gets the subprotocol as the client spelled it (to echo back) and
    // the bytes read past the request (a client that did not wait for the answer).
    using websocket_handler =
        std::function<void(boost::beast::ssl_stream<boost::beast::tcp_stream>,
                           boost::beast::http::request<boost::beast::http::string_body>,
                           std::string subprotocol, std::string early)>;
    // Registers a subprotocol name, matched case-insensitively (MQTT clients send mqtt or MQTT).
    // Call before listen().
    void add_websocket_protocol(std::string name, websocket_handler handler);

    // Binds `address:port` (port 0 picks a free one) and starts accepting. Returns the bound port.
    result<std::uint16_t> listen(const std::string& address, std::uint16_t port);

    void begin_stop();
    std::size_t active_connections() const;

  private:
    struct impl;
    std::shared_ptr<impl> impl_;
};

}  // namespace iothub::http
