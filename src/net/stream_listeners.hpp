// How device-facing streams come to exist: listening sockets (plain or TLS) and WebSocket
// upgrades handed over by the HTTPS server. MQTT and AMQP share it; each protocol server gets
// streams on the shard that owns them (a TLS stream's handshake is the connection's first step,
// so a connection in its handshake costs no more than the handshake's state).
#pragma once

#include "common/error.hpp"
#include "net/stream.hpp"
#include "runtime/shards.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <string>

namespace iothub::net {

// Receives each established stream on its shard's executor.
using stream_handler = std::function<void(std::unique_ptr<stream>, boost::asio::any_io_executor)>;

class stream_listeners {
  public:
    // `protocol` names the streams' kind ("mqtt" gives "mqtt", "mqtts", "mqtt-ws").
    stream_listeners(runtime::shard_set& shards, std::string protocol, stream_handler on_stream);
    ~stream_listeners();

    // `tls` null: plain TCP. Returns the bound port.
    result<std::uint16_t> listen(const std::string& address, std::uint16_t port,
                                 std::shared_ptr<boost::asio::ssl::context> tls);

    // Completes the WebSocket handshake of a request the HTTPS server routed here, answering
    // with `subprotocol`.
    void accept_websocket(boost::beast::ssl_stream<boost::beast::tcp_stream> stream,
                          boost::beast::http::request<boost::beast::http::string_body> request,
                          std::string subprotocol, std::string early = {});

    // Closes the listening sockets; streams already handed over are the protocol's to end.
    void close();

  private:
    struct state;
    std::shared_ptr<state> state_;
};

}  // namespace iothub::net
