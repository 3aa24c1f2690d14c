// Listening sockets for the protocol servers (HTTPS, MQTT, and AMQP next): opening an acceptor with
// the hub's rules, and the loop that spreads accepted connections across the shards. One place, so
// every listener treats addresses, port errors and accept failures alike.
#pragma once

#include "common/error.hpp"
#include "runtime/shards.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace iothub::runtime {

using tcp = boost::asio::ip::tcp;

// Binds and listens on `address`:`port` (0 = ephemeral) with the acceptor on `ctx`. IPv6
// wildcards accept IPv4 too, and fall back to IPv4 on hosts without IPv6. Errors say what to do
// about privileged or taken ports.
result<std::shared_ptr<tcp::acceptor>> open_acceptor(boost::asio::io_context& ctx,
                                                     const std::string& address,
                                                     std::uint16_t port);

// Accepts until the acceptor is closed. Each socket is accepted onto the next shard, gets
// TCP_NODELAY and goes to `on_socket` on that shard's thread. Transient failures (out of
// descriptors) back off briefly instead of spinning; `what` names the listener in the log.
boost::asio::awaitable<void> accept_connections(std::shared_ptr<tcp::acceptor> acceptor,
                                                shard_set& shards, std::string what,
                                                std::function<void(tcp::socket)> on_socket);

}  // namespace iothub::runtime
