#include "net/stream_listeners.hpp"

#include "runtime/listener.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <openssl/err.h>
#include <spdlog/spdlog.h>

#include <array>
#include <mutex>
#include <vector>

namespace iothub::net {
namespace beast = boost::beast;
namespace {
constexpr auto as_tuple = asio::as_tuple(asio::use_awaitable);
}

struct stream_listeners::state : std::enable_shared_from_this<state> {
    runtime::shard_set& shards;
    std::string protocol;
    stream_handler on_stream;
    std::mutex mutex;
    std::vector<std::shared_ptr<tcp::acceptor>> acceptors;
    bool closed = false;

    state(runtime::shard_set& s, std::string p, stream_handler h)
        : shards(s), protocol(std::move(p)), on_stream(std::move(h)) {}

    // Called on the accepting shard with a socket that belongs to another: the stream is made
    // (for TLS, its SSL object) and handed over on the socket's own shard.
    void accepted(tcp::socket socket, const std::shared_ptr<asio::ssl::context>& tls) {
        auto ex = socket.get_executor();
        asio::dispatch(
            ex, [self = shared_from_this(), socket = std::move(socket), tls, ex]() mutable {
                if (!tls)
                    return self->on_stream(make_tcp_stream(std::move(socket), self->protocol), ex);
                self->on_stream(make_tls_stream(std::move(socket), *tls, tls_role::server,
                                                self->protocol + "s"),
                                ex);
            });
    }
};

stream_listeners::stream_listeners(runtime::shard_set& shards, std::string protocol,
                                   stream_handler on_stream)
    : state_(std::make_shared<state>(shards, std::move(protocol), std::move(on_stream))) {}

stream_listeners::~stream_listeners() {
    close();
}

result<std::uint16_t> stream_listeners::listen(const std::string& address, std::uint16_t port,
                                               std::shared_ptr<asio::ssl::context> tls) {
    auto& ctx = state_->shards.at(0);
    auto acceptor = runtime::open_acceptor(ctx, address, port);
    if (!acceptor) return acceptor.error();
    error_code ec;
    auto bound = (*acceptor)->local_endpoint(ec).port();
    {
        std::lock_guard lock(state_->mutex);
        state_->acceptors.push_back(*acceptor);
    }
    auto what = tls ? state_->protocol + "s" : state_->protocol;
    asio::co_spawn(ctx,
                   runtime::accept_connections(*acceptor, state_->shards, what,
                                               [s = state_, tls](tcp::socket socket) {
                                                   s->accepted(std::move(socket), tls);
                                               }),
                   asio::detached);
    return bound;
}

void stream_listeners::accept_websocket(beast::ssl_stream<beast::tcp_stream> stream,
                                        beast::http::request<beast::http::string_body> request,
                                        std::string subprotocol, std::string early) {
    auto ex = stream.get_executor();
    auto peer = endpoint_text(beast::get_lowest_layer(stream).socket());
    asio::co_spawn(
        ex,
        [s = state_, stream = std::move(stream), request = std::move(request),
         subprotocol = std::move(subprotocol), early = std::move(early), peer = std::move(peer),
         ex]() mutable -> asio::awaitable<void> {
            auto kind = s->protocol + "-ws";
            auto& tcp = beast::get_lowest_layer(stream);
            tcp.expires_after(std::chrono::seconds(10));
            // RFC 6455 4.2: version 13 and a key; the answer carries the key's digest.
            const auto key = request[beast::http::field::sec_websocket_key];
            std::string answer;
            if (request[beast::http::field::sec_websocket_version] != "13") {
                answer =
                    "HTTP/1.1 426 Upgrade Required\r\nSec-WebSocket-Version: 13\r\n"
                    "Content-Length: 0\r\nConnection: close\r\nServer: iothub\r\n\r\n";
            } else if (key.empty()) {
                answer =
                    "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n"
                    "Server: iothub\r\n\r\n";
            }
            if (!answer.empty()) {
                spdlog::debug("{} {}: upgrade refused", kind, peer);
                co_await asio::async_write(stream, asio::buffer(answer), as_tuple);
                co_return;
            }
            answer =
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Accept: " +
                websocket_accept_key(key) + "\r\nSec-WebSocket-Protocol: " + subprotocol +
                "\r\nServer: iothub\r\n\r\n";
            auto [ec, n] = co_await asio::async_write(stream, asio::buffer(answer), as_tuple);
            if (ec) {
                spdlog::debug("{} {}: upgrade failed: {}", kind, peer, ec.message());
                co_return;
            }
            // The session leaves Asio's TLS stream, whose buffers (four of 17 KiB: its own and
            // its BIO pair's) would last as long as the connection, for the hub's own, which
            // holds none while idle. The answer is written out; a record the client sent without
            // waiting for it is decrypted here and decoded first.
            SSL* ssl = stream.native_handle();
            std::array<char, 4096> chunk;
            for (;;) {
                const int got = SSL_read(ssl, chunk.data(), static_cast<int>(chunk.size()));
                if (got <= 0) break;
                early.append(chunk.data(), static_cast<std::size_t>(got));
            }
            ERR_clear_error();
            SSL_up_ref(ssl);
            tcp.expires_never();
            auto tls = adopt_tls_stream(tcp.release_socket(), ssl, kind);
            s->on_stream(make_websocket_stream(std::move(tls), std::move(early), kind), ex);
        },
        asio::detached);
}

void stream_listeners::close() {
    std::vector<std::shared_ptr<tcp::acceptor>> acceptors;
    {
        std::lock_guard lock(state_->mutex);
        if (state_->closed) return;
        state_->closed = true;
        acceptors.swap(state_->acceptors);
    }
    for (auto& a : acceptors)
        asio::post(a->get_executor(), [a] {
            error_code ec;
            a->close(ec);
        });
}

}  // namespace iothub::net
