// The byte streams a device-facing protocol (MQTT, AMQP) runs over: TCP, TLS, and WebSocket
// (binary frames) over TLS, on the server side, and TCP and TLS on the client side for the load
// generators.
//
// The model is readiness, not completion: read_some and write_some never block and never keep a
// buffer of the caller's; when one cannot progress it says which direction to wait for, and
// async_wait calls back once the stream may progress. So an idle connection holds no read buffer
// (the caller reads into its thread's), and TCP and TLS streams hold no buffer of their own:
// TLS runs on the socket itself (OpenSSL's socket BIO) and releases its record buffers while
// idle. A connection costs what is in flight, not a fixed-size buffer per direction.
#pragma once

#include "auth/client_certificate.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <openssl/ssl.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace iothub::net {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using error_code = boost::system::error_code;

enum class direction : std::uint8_t { read, write };

// What a non-blocking step did.
struct io_result {
    enum class status : std::uint8_t {
        done,        // `bytes` moved (reads: at least one; the handshake: complete)
        want_read,   // nothing now: wait until readable (TLS may want this while writing)
        want_write,  // nothing now: wait until writable (TLS may want this while reading)
        closed,      // the peer ended the stream
        failed,      // `error` says why
    };
    status what = status::done;
    std::size_t bytes = 0;
    std::string error;

    static io_result done(std::size_t n = 0) { return {status::done, n, {}}; }
    static io_result wait(direction d) {
        return {d == direction::read ? status::want_read : status::want_write, 0, {}};
    }
    static io_result failure(std::string why) { return {status::failed, 0, std::move(why)}; }
    bool waiting() const { return what == status::want_read || what == status::want_write; }
    direction wait_for() const {
        return what == status::want_write ? direction::write : direction::read;
    }
};

class stream {
  public:
    virtual ~stream() = default;

    // One step of the opening handshake (TLS); done once the stream is ready for data.
    virtual io_result handshake() { return io_result::done(); }
    virtual io_result read_some(std::span<char> into) = 0;
    virtual io_result write_some(std::span<const char> from) = 0;
    // More bytes wait inside the stream (decrypted or buffered), readable without waiting.
    virtual bool has_buffered_input() const { return false; }
    // Calls `ready` on the stream's executor once `d` may progress, or with an error once the
    // stream is closed. At most one wait per direction at a time.
    virtual void async_wait(direction d, std::function<void(error_code)> ready) = 0;
    // Says goodbye without waiting (TLS close_notify, WebSocket close) and closes. Pending waits
    // complete with an error.
    virtual void close() = 0;

    virtual std::optional<auth::client_certificate> client_certificate() { return std::nullopt; }
    virtual std::string peer() const = 0;
    // Protocol and stream, for logs: "mqtt", "mqtts", "mqtt-ws", "amqps", "amqp-ws".
    virtual std::string_view kind() const = 0;
};

// The text of a socket's remote endpoint, "?" when it has none.
std::string endpoint_text(const tcp::socket& s);

// A name for logs, kept for the life of the process (a stream refers to it, never copies it).
std::string_view intern_kind(std::string_view kind);

std::unique_ptr<stream> make_tcp_stream(tcp::socket s, std::string_view kind);

enum class tls_role : std::uint8_t { server, client };
// `ctx` must outlive the stream. A client sends `server_name` (SNI) and, when given,
// resumes `session` (see tls_session_of).
std::unique_ptr<stream> make_tls_stream(tcp::socket s, asio::ssl::context& ctx, tls_role role,
                                        std::string_view kind, const std::string& server_name = {},
                                        SSL_SESSION* session = nullptr);
// A client stream's session, for resuming on the next connection (null if none); the caller owns
// the reference it returns (SSL_SESSION_free).
SSL_SESSION* tls_session_of(stream& s);
// Whether the stream's TLS session was resumed (tickets) rather than negotiated in full.
bool tls_resumed(stream& s);

// Continues a TLS session another stack established and holds nothing more of (the HTTPS
// server's, once it answered a WebSocket upgrade); the stream owns `ssl` (one reference).
std::unique_ptr<stream> adopt_tls_stream(tcp::socket s, SSL* ssl, std::string_view kind);

// WebSocket (RFC 6455, server side) binary messages over `inner`, whose upgrade has been answered.
// `early` holds bytes the client sent behind its upgrade request that were read already. The
// messages are a byte stream to the protocol above; pings are answered; the peer's close ends
// the stream. Like TCP and TLS, it keeps no buffer while idle.
std::unique_ptr<stream> make_websocket_stream(std::unique_ptr<stream> inner, std::string early,
                                              std::string_view kind);
// The Sec-WebSocket-Accept value that answers an upgrade's Sec-WebSocket-Key.
std::string websocket_accept_key(std::string_view key);

}  // namespace iothub::net
