// The byte streams a device-facing protocol (MQTT, AMQP) runs over: TCP, TLS, and WebSocket
// (binary frames) over TLS. Connection logic is written once against this interface; each read or
// write is one virtual call, negligible next to the system call behind it. `kind` names protocol
// and stream for logs: "mqtt", "mqtts", "mqtt-ws", "amqps", "amqp-ws".
#pragma once

#include "auth/client_certificate.hpp"
#include "tls/context.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <boost/beast/websocket/ssl.hpp>
#include <boost/beast/websocket/stream.hpp>

#include <optional>
#include <string>

namespace iothub::net {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using error_code = boost::system::error_code;
constexpr auto as_tuple = asio::as_tuple(asio::use_awaitable);

class transport {
  public:
    virtual ~transport() = default;
    virtual asio::awaitable<std::tuple<error_code, std::size_t>> read_some(
        asio::mutable_buffer b) = 0;
    virtual asio::awaitable<error_code> write(asio::const_buffer b) = 0;
    // Ends the connection politely (TLS close_notify, WebSocket close) if possible, then closes.
    virtual asio::awaitable<void> shutdown() = 0;
    // Aborts pending operations at once.
    virtual void abort() = 0;
    virtual std::optional<auth::client_certificate> client_certificate() = 0;
    virtual std::string peer() const = 0;
    virtual std::string_view kind() const = 0;
};

inline std::string endpoint_text(const tcp::socket& s) {
    error_code ec;
    auto ep = s.remote_endpoint(ec);
    return ec ? std::string("?") : ep.address().to_string() + ":" + std::to_string(ep.port());
}

class tcp_transport final : public transport {
  public:
    tcp_transport(tcp::socket s, std::string kind)
        : socket_(std::move(s)), peer_(endpoint_text(socket_)), kind_(std::move(kind)) {}
    asio::awaitable<std::tuple<error_code, std::size_t>> read_some(
        asio::mutable_buffer b) override {
        co_return co_await socket_.async_read_some(b, as_tuple);
    }
    asio::awaitable<error_code> write(asio::const_buffer b) override {
        auto [ec, n] = co_await asio::async_write(socket_, b, as_tuple);
        co_return ec;
    }
    asio::awaitable<void> shutdown() override {
        error_code ec;
        socket_.shutdown(tcp::socket::shutdown_both, ec);
        socket_.close(ec);
        co_return;
    }
    void abort() override {
        error_code ec;
        socket_.close(ec);
    }
    std::optional<auth::client_certificate> client_certificate() override { return std::nullopt; }
    std::string peer() const override { return peer_; }
    std::string_view kind() const override { return kind_; }

  private:
    tcp::socket socket_;
    std::string peer_;
    std::string kind_;
};

class tls_transport final : public transport {
  public:
    tls_transport(tcp::socket s, asio::ssl::context& ctx, std::string kind)
        : peer_(endpoint_text(s)), kind_(std::move(kind)), stream_(std::move(s), ctx) {}
    asio::awaitable<error_code> handshake() {
        auto [ec] = co_await stream_.async_handshake(asio::ssl::stream_base::server, as_tuple);
        co_return ec;
    }
    asio::awaitable<std::tuple<error_code, std::size_t>> read_some(
        asio::mutable_buffer b) override {
        co_return co_await stream_.async_read_some(b, as_tuple);
    }
    asio::awaitable<error_code> write(asio::const_buffer b) override {
        auto [ec, n] = co_await asio::async_write(stream_, b, as_tuple);
        co_return ec;
    }
    asio::awaitable<void> shutdown() override {
        // Bounded by the caller's abort timer; a peer that never answers close_notify is cut.
        co_await stream_.async_shutdown(as_tuple);
        abort();
    }
    void abort() override {
        error_code ec;
        stream_.next_layer().close(ec);
    }
    std::optional<auth::client_certificate> client_certificate() override {
        return tls::peer_certificate(stream_.native_handle());
    }
    std::string peer() const override { return peer_; }
    std::string_view kind() const override { return kind_; }
    tcp::socket& socket() { return stream_.next_layer(); }

  private:
    std::string peer_;
    std::string kind_;
    asio::ssl::stream<tcp::socket> stream_;
};

class websocket_transport final : public transport {
  public:
    using ws_stream =
        boost::beast::websocket::stream<boost::beast::ssl_stream<boost::beast::tcp_stream>>;
    websocket_transport(ws_stream ws, std::string peer, std::string kind)
        : ws_(std::move(ws)), peer_(std::move(peer)), kind_(std::move(kind)) {
        ws_.binary(true);
    }
    asio::awaitable<std::tuple<error_code, std::size_t>> read_some(
        asio::mutable_buffer b) override {
        co_return co_await ws_.async_read_some(b, as_tuple);
    }
    asio::awaitable<error_code> write(asio::const_buffer b) override {
        auto [ec, n] = co_await ws_.async_write(b, as_tuple);
        co_return ec;
    }
    asio::awaitable<void> shutdown() override {
        co_await ws_.async_close(boost::beast::websocket::close_code::normal, as_tuple);
        abort();
    }
    void abort() override { boost::beast::get_lowest_layer(ws_).close(); }
    std::optional<auth::client_certificate> client_certificate() override {
        return tls::peer_certificate(ws_.next_layer().native_handle());
    }
    std::string peer() const override { return peer_; }
    std::string_view kind() const override { return kind_; }

  private:
    ws_stream ws_;
    std::string peer_;
    std::string kind_;
};

}  // namespace iothub::net
