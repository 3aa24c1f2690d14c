// One device-facing connection, protocol-neutral: the byte pump between a stream (TCP, TLS,
// WebSocket) and a protocol written without I/O (MQTT's session, AMQP's connection driver), and
// the server shell around many of them: listeners, WebSocket hand-off, the set of live
// connections and a two-phase stop. MQTT and AMQP differ only in their protocol_handler.
//
// A connection lives on the shard that accepted it. The handler is called only there; it reports
// anything it produced or changed out of band (a storage completion, a push from the core) by
// calling wake(), also only there. Lifecycle: start -> received/deadline/wake ... -> the handler
// says finished() -> what it wrote is flushed -> the stream closes (politely when it can, at once
// when a read is pending) -> closed() -> the connection leaves the server's set.
#pragma once

#include "common/error.hpp"
#include "net/stream_listeners.hpp"
#include "net/transport.hpp"
#include "runtime/shards.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>

namespace iothub::net {

using steady = std::chrono::steady_clock;

class connection;

// What a protocol sees of its connection.
class connection_io {
  public:
    virtual ~connection_io() = default;
    // Call after changing anything outside received()/on_deadline(): output is written, reading
    // resumes or pauses, the deadline is re-armed, a finished connection closes.
    virtual void wake() = 0;
    virtual const boost::asio::any_io_executor& executor() const = 0;
    virtual transport& stream() = 0;
    // A handle other connections or services can reach this one through (post()).
    virtual std::weak_ptr<connection> handle() = 0;
};

// A protocol's side of one connection: bytes in, bytes out, one deadline. Every call comes on the
// connection's executor.
class protocol_handler {
  public:
    virtual ~protocol_handler() = default;
    virtual void start() {}
    virtual void received(std::string_view bytes) = 0;
    // The stream ended (the peer closed it, or it failed) with `reason`.
    virtual void stream_ended(const std::string& reason) = 0;
    // The hub is stopping: say goodbye the protocol's way and finish soon.
    virtual void stop(const std::string& reason) = 0;
    // Moves what is to be written onto `out`.
    virtual void take_output(std::string& out) = 0;
    // False while the protocol wants no more bytes (authenticating, too much in flight).
    virtual bool wants_read() const = 0;
    // Nothing more will be read or produced: once the output is written, the stream closes.
    virtual bool finished() const = 0;
    virtual steady::time_point deadline() const { return steady::time_point::max(); }
    virtual void on_deadline() {}
    // The stream is closed; release what the connection held. The last call.
    virtual void closed() = 0;
};

using handler_factory = std::function<std::unique_ptr<protocol_handler>(connection_io&)>;

class connection final : public connection_io, public std::enable_shared_from_this<connection> {
  public:
    connection(std::unique_ptr<transport> t, boost::asio::any_io_executor ex,
               std::function<void(connection*)> on_closed);
    ~connection() override;

    void set_handler(std::unique_ptr<protocol_handler> h) { handler_ = std::move(h); }
    boost::asio::awaitable<void> run();

    // From any thread: runs `fn` with the handler on this connection's executor, unless the
    // connection has closed by then.
    void post(std::function<void(protocol_handler&)> fn);
    // From any thread: the hub is stopping. The protocol says goodbye; after the grace period
    // the stream is cut.
    void kick(std::string reason);

    void wake() override;
    const boost::asio::any_io_executor& executor() const override { return ex_; }
    transport& stream() override { return *transport_; }
    std::weak_ptr<connection> handle() override { return weak_from_this(); }

  private:
    boost::asio::awaitable<void> write_loop(std::shared_ptr<connection> self);
    boost::asio::awaitable<void> timer_loop(std::shared_ptr<connection> self);
    void finish();

    std::unique_ptr<transport> transport_;
    boost::asio::any_io_executor ex_;
    std::function<void(connection*)> on_closed_;
    std::unique_ptr<protocol_handler> handler_;
    boost::asio::steady_timer timer_;
    boost::asio::steady_timer resume_;
    steady::time_point armed_ = steady::time_point::max();
    steady::time_point cut_at_ = steady::time_point::max();  // after a kick
    std::string out_, sending_;
    bool reading_ = false, writing_ = false, pumping_ = false, again_ = false;
    bool finished_ = false;
};

// The server shell a protocol runs in: listening sockets and WebSocket upgrades (through
// stream_listeners), one connection per stream with a handler from `factory`, the set of live
// connections, and the stop.
class device_server {
  public:
    device_server(runtime::shard_set& shards, std::string protocol,
                  std::chrono::seconds tls_handshake_timeout, handler_factory factory);
    ~device_server();

    // TLS with `tls`; plain TCP without (local tools and benchmarks only). Port 0 picks one.
    result<std::uint16_t> listen(const std::string& address, std::uint16_t port,
                                 std::shared_ptr<boost::asio::ssl::context> tls);
    // Takes over a connection the HTTPS server upgraded on /$iothub/websocket.
    void accept_websocket(boost::beast::ssl_stream<boost::beast::tcp_stream> stream,
                          boost::beast::http::request<boost::beast::http::string_body> request,
                          std::string subprotocol);

    // Stops accepting and asks every connection to end (each gets the protocol's goodbye).
    void begin_stop();
    std::size_t active_connections() const;
    // Runs `fn` with each live connection's handler, each on its own executor.
    void post_to_each(const std::function<void(protocol_handler&)>& fn);

  private:
    struct state;
    std::shared_ptr<state> state_;
    std::unique_ptr<stream_listeners> listeners_;
};

}  // namespace iothub::net
