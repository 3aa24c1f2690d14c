// One device-facing connection, protocol-neutral: the byte pump between a stream (TCP, TLS,
// WebSocket) and a protocol written without I/O (MQTT's session, AMQP's connection driver), and
// the server shell around many of them: listeners, WebSocket hand-off, the set of live
// connections and a two-phase stop. MQTT and AMQP differ only in their protocol_handler.
//
// A connection lives on the shard that accepted it. The handler is called only there; it reports
// anything it produced or changed out of band (a storage completion, a push from the core) by
// calling wake(), also only there. Lifecycle: start -> the stream's handshake (TLS) -> the
// handler's start -> received/deadline/wake ... -> the handler says finished() -> what it wrote
// is flushed -> the stream closes -> closed() -> the connection leaves the server's set.
//
// What an idle connection costs is kept small on purpose (a fleet is mostly idle): reads go into
// the shard thread's buffer, the stream holds no buffer while idle, output is kept only while it
// is being written, and deadlines are entries in the shard's timer wheel, not timers.
#pragma once

#include "common/error.hpp"
#include "net/stream.hpp"
#include "net/stream_listeners.hpp"
#include "net/timer_wheel.hpp"
#include "runtime/shards.hpp"

#include <boost/asio/any_io_executor.hpp>

#include <array>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
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
    virtual net::stream& stream() = 0;
    // A handle other connections or services can reach this one through (post()).
    virtual std::weak_ptr<connection> handle() = 0;
};

// A protocol's side of one connection: bytes in, bytes out, one deadline. Every call comes on the
// connection's executor.
class protocol_handler {
  public:
    virtual ~protocol_handler() = default;
    // The stream is established (after TLS's handshake).
    virtual void start() {}
    // `bytes` are valid during the call only: keep what is not consumed.
    virtual void received(std::string_view bytes) = 0;
    // The stream ended (the peer closed it, or it failed) with `reason`.
    virtual void stream_ended(const std::string& reason) = 0;
    // The hub is stopping: say goodbye the protocol's way and finish soon.
    virtual void stop(const std::string& reason) = 0;
    // Moves what is to be written onto the end of `out`.
    virtual void take_output(std::string& out) = 0;
    // False while the protocol wants no more bytes (authenticating, too much in flight).
    virtual bool wants_read() const = 0;
    // Nothing more will be read or produced: once the output is written, the stream closes.
    virtual bool finished() const = 0;
    // When on_deadline() is due. It may be called earlier; the protocol checks its own times.
    virtual steady::time_point deadline() const { return steady::time_point::max(); }
    virtual void on_deadline() {}
    // The stream is closed; release what the connection held. The last call.
    virtual void closed() = 0;
};

using handler_factory = std::function<std::unique_ptr<protocol_handler>(connection_io&)>;

class connection final : public connection_io,
                         public wheel_entry,
                         public std::enable_shared_from_this<connection> {
  public:
    // `handshake_timeout` bounds the stream's opening handshake.
    connection(std::unique_ptr<net::stream> s, boost::asio::any_io_executor ex,
               std::function<void(connection*)> on_closed,
               std::chrono::seconds handshake_timeout = std::chrono::seconds(10));
    ~connection() override;

    void set_handler(std::unique_ptr<protocol_handler> h) { handler_ = std::move(h); }
    // The handshake, then the handler's start. Call once, on the connection's executor.
    void start();

    // From any thread: runs `fn` with the handler on this connection's executor, unless the
    // connection has closed by then.
    void post(std::function<void(protocol_handler&)> fn);
    // From any thread: the hub is stopping. The protocol says goodbye; after the grace period
    // the stream is cut.
    void kick(std::string reason);

    void wake() override;
    const boost::asio::any_io_executor& executor() const override { return ex_; }
    net::stream& stream() override { return *stream_; }
    std::weak_ptr<connection> handle() override { return weak_from_this(); }

  private:
    void expired() override;
    void handshake_step();
    void pump();
    void flush();
    void read_now();
    void arm(direction d);
    void ready(direction d, error_code ec);
    void lost(const std::string& reason);
    void reschedule();
    void finish();

    std::unique_ptr<net::stream> stream_;
    boost::asio::any_io_executor ex_;
    timer_wheel& wheel_;
    std::function<void(connection*)> on_closed_;
    std::unique_ptr<protocol_handler> handler_;
    std::string out_;
    std::size_t sent_ = 0;  // bytes of out_ written
    steady::time_point scheduled_ = steady::time_point::max();
    steady::time_point handshake_until_;
    steady::time_point cut_at_ = steady::time_point::max();  // after a kick
    // Which socket readiness the reader and the writer wait for, if they wait.
    std::optional<direction> read_waits_, write_waits_, handshake_waits_;
    std::array<bool, 2> armed_{};  // a wait is pending on that direction
    bool open_ = false;            // handshake done, handler started
    bool stream_done_ = false;     // the stream failed or ended: no more reads or writes
    bool finish_posted_ = false;
    bool read_posted_ = false;  // a read of input the stream already holds is queued
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
                          std::string subprotocol, std::string early = {});

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
