#include "net/stream_listeners.hpp"

#include "runtime/listener.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/websocket/ssl.hpp>
#include <spdlog/spdlog.h>

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
                                        std::string subprotocol) {
    auto ex = stream.get_executor();
    auto peer = endpoint_text(beast::get_lowest_layer(stream).socket());
    asio::co_spawn(
        ex,
        [s = state_, stream = std::move(stream), request = std::move(request),
         subprotocol = std::move(subprotocol), peer = std::move(peer),
         ex]() mutable -> asio::awaitable<void> {
            namespace ws = beast::websocket;
            auto kind = s->protocol + "-ws";
            websocket_type socket(std::move(stream));
            beast::get_lowest_layer(socket).expires_never();
            socket.set_option(
                ws::stream_base::timeout{std::chrono::seconds(10), ws::stream_base::none(), false});
            socket.set_option(ws::stream_base::decorator([subprotocol](ws::response_type& res) {
                res.set(beast::http::field::sec_websocket_protocol, subprotocol);
                res.set(beast::http::field::server, "iothub");
            }));
            auto [ec] = co_await socket.async_accept(request, as_tuple);
            if (ec) {
                spdlog::debug("{} {}: upgrade failed: {}", kind, peer, ec.message());
                co_return;
            }
            s->on_stream(make_websocket_stream(std::move(socket), peer, kind), ex);
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
