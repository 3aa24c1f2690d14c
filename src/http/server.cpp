#include "http/server.hpp"

#include "common/encoding.hpp"
#include "runtime/listener.hpp"
#include "tls/context.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/websocket/rfc6455.hpp>
#include <spdlog/spdlog.h>

#include <array>
#include <mutex>
#include <set>
#include <tuple>

namespace iothub::http {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
using tcp = asio::ip::tcp;
using asio::awaitable;
using asio::use_awaitable;
constexpr auto as_tuple = asio::as_tuple(use_awaitable);

namespace {

struct connection {
    explicit connection(tcp::socket socket, asio::ssl::context& ctx)
        : stream(std::move(socket), ctx) {}
    beast::ssl_stream<beast::tcp_stream> stream;
    bool busy = false;  // handling a request (touched only on the connection's shard)
    bool stopping = false;
};

std::string address_of(const tcp::socket& s) {
    boost::system::error_code ec;
    auto ep = s.remote_endpoint(ec);
    return ec ? std::string("?") : ep.address().to_string() + ":" + std::to_string(ep.port());
}

bhttp::response<bhttp::string_body> to_beast(response r, unsigned version, bool keep_alive) {
    bhttp::response<bhttp::string_body> out{static_cast<bhttp::status>(r.status), version};
    out.set(bhttp::field::server, "iothub");
    for (auto& [k, v] : r.headers) out.set(k, v);
    out.body() = std::move(r.body);
    out.keep_alive(keep_alive);
    // An answer to HEAD states the length of the body it does not carry.
    const bool head_answer =
        out.body().empty() && out.find(bhttp::field::content_length) != out.end();
    if (!head_answer) out.prepare_payload();
    return out;
}

}  // namespace

struct server::impl : std::enable_shared_from_this<server::impl> {
    runtime::shard_set& shards;
    runtime::blocking_pool& blocking;
    std::shared_ptr<asio::ssl::context> tls;
    const router& routes;
    server_settings settings;
    std::size_t largest_body;

    std::mutex mutex;
    std::vector<std::shared_ptr<tcp::acceptor>> acceptors;
    std::set<std::shared_ptr<connection>> connections;
    bool stopping = false;
    std::vector<std::pair<std::string, websocket_handler>> websocket_protocols;

    impl(runtime::shard_set& s, runtime::blocking_pool& b, std::shared_ptr<asio::ssl::context> t,
         const router& r, server_settings st)
        : shards(s),
          blocking(b),
          tls(std::move(t)),
          routes(r),
          settings(st),
          largest_body(r.largest_body(st.max_body)) {}

    // A connection accepted onto its shard: kept for shutdown, then served there.
    void start(tcp::socket socket) {
        auto ex = socket.get_executor();
        auto conn = std::make_shared<connection>(std::move(socket), *tls);
        {
            std::lock_guard lock(mutex);
            if (stopping) return;
            connections.insert(conn);
        }
        asio::co_spawn(ex, serve(conn), asio::detached);
    }

    awaitable<response> dispatch(request& req) {
        auto matched = routes.match(req);
        if (!matched) co_return error_response(matched.error());
        const router::route* route = *matched;
        co_return co_await asio::async_initiate<decltype(use_awaitable), void(response)>(
            [this, route, &req](auto handler) {
                auto ex = asio::get_associated_executor(handler);
                req.executor = ex;
                auto h = std::make_shared<decltype(handler)>(std::move(handler));
                responder done([h, ex](response r) {
                    asio::post(ex, [h, r = std::move(r)]() mutable { (*h)(std::move(r)); });
                });
                if (route->opts.blocking) {
                    blocking.post([route, &req, done] { route->fn(req, done); });
                } else {
                    route->fn(req, done);
                }
            },
            use_awaitable);
    }

    // Whether bytes of a next request have reached the hub (in the socket or TLS's buffer).
    static bool bytes_waiting(connection& c) {
        boost::system::error_code ec;
        return beast::get_lowest_layer(c.stream).socket().available(ec) > 0 ||
               SSL_pending(c.stream.native_handle()) > 0;
    }

    awaitable<void> serve(std::shared_ptr<connection> conn) {
        auto self = shared_from_this();
        auto& stream = conn->stream;
        const std::string peer = address_of(beast::get_lowest_layer(stream).socket());
        beast::get_lowest_layer(stream).expires_after(settings.handshake_timeout);
        auto [hec] = co_await stream.async_handshake(asio::ssl::stream_base::server, as_tuple);
        if (hec) {
            spdlog::debug("https: TLS handshake with {} failed: {}", peer, hec.message());
            finish(conn);
            co_return;
        }
        std::shared_ptr<const auth::client_certificate> client_certificate;
        if (auto cert = tls::peer_certificate(stream.native_handle()))
            client_certificate = std::make_shared<const auth::client_certificate>(std::move(*cert));
        beast::flat_buffer buffer;
        bool clean_close = true;
        for (;;) {
            // Stopping: no new request, but one whose bytes have arrived is served.
            if (conn->stopping && buffer.size() == 0 && !bytes_waiting(*conn)) break;
            bhttp::request_parser<bhttp::string_body> parser;
            // The largest limit of any route until the header names the route; then its own.
            parser.body_limit(largest_body);
            parser.header_limit(16 * 1024);
            // Idle until a request's header arrives; from then on the request is in flight and
            // a shutdown lets it finish (its body included). Bytes already read past the last
            // request (a pipelined one) count as arrived.
            beast::get_lowest_layer(stream).expires_after(settings.idle_timeout);
            conn->busy = buffer.size() > 0;
            auto [rec, n] = co_await bhttp::async_read_header(stream, buffer, parser, as_tuple);
            conn->busy = true;
            const router::route* target_route = nullptr;
            std::size_t limit = settings.max_body;
            if (!rec || rec == bhttp::error::body_limit) {
                target_route = route_for(parser.get());
                if (target_route && target_route->opts.max_body)
                    limit = target_route->opts.max_body;
                if (auto len = parser.content_length(); !rec && len && *len > limit)
                    rec = bhttp::error::body_limit;
                else if (!rec)
                    parser.body_limit(limit);
            }
            if (!rec && !parser.is_done()) {
                beast::get_lowest_layer(stream).expires_after(settings.request_timeout);
                std::tie(rec, n) = co_await bhttp::async_read(stream, buffer, parser, as_tuple);
            }
            if (rec == bhttp::error::end_of_stream || rec == asio::ssl::error::stream_truncated)
                break;
            std::optional<response> early;
            if (rec == bhttp::error::body_limit) {
                early = target_route && target_route->opts.too_large
                            ? target_route->opts.too_large(limit)
                            : error_response(error(errc::request_too_large,
                                                   "The request body is larger than the limit of " +
                                                       std::to_string(limit) + " bytes."));
            } else if (rec == bhttp::error::header_limit) {
                early =
                    error_response(error(errc::bad_request, "The request headers are too large."));
            } else if (rec && rec.category() ==
                                  bhttp::make_error_code(bhttp::error::bad_method).category()) {
                early = error_response(
                    error(errc::bad_request, "Malformed HTTP request: " + rec.message()));
            } else if (rec) {
                clean_close = false;  // timeout, reset or cancellation by begin_stop()
                break;
            }
            if (early) {
                auto out = to_beast(std::move(*early), 11, false);
                beast::get_lowest_layer(stream).expires_after(settings.write_timeout);
                auto [wec, wn] = co_await bhttp::async_write(stream, out, as_tuple);
                if (!wec) co_await linger(stream);
                break;
            }

            auto& raw = parser.get();
            if (beast::websocket::is_upgrade(raw)) {
                if (auto hand_off = websocket_for(raw)) {
                    finish(conn);  // the connection belongs to the protocol server from here on
                    auto early = beast::buffers_to_string(buffer.data());
                    hand_off->first(std::move(conn->stream), parser.release(), hand_off->second,
                                    std::move(early));
                    co_return;
                }
                auto out = to_beast(
                    error_response(error(errc::bad_request,
                                         "WebSocket upgrades are served on /$iothub/websocket with "
                                         "subprotocol mqtt or AMQPWSB10.")),
                    raw.version(), false);
                beast::get_lowest_layer(stream).expires_after(settings.write_timeout);
                co_await bhttp::async_write(stream, out, as_tuple);
                break;
            }
            request req;
            req.method = std::string(raw.method_string());
            req.target = std::string(raw.target());
            req.remote_address = peer;
            req.client_certificate = client_certificate;
            for (const auto& f : raw) {
                std::string name(f.name_string());
                for (auto& c : name)
                    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
                req.headers.emplace_back(std::move(name), std::string(f.value()));
            }
            req.body = std::move(raw.body());
            response res;
            if (auto t = parse_target(req.target); !t) {
                res = error_response(t.error());
            } else {
                req.path = std::move(t->path);
                req.segments = std::move(t->segments);
                req.query = std::move(t->query);
                // A handler may rightly take minutes (a direct method waits for the device), so
                // no I/O deadline runs while it works.
                beast::get_lowest_layer(stream).expires_never();
                res = co_await dispatch(req);
            }
            spdlog::debug("https: {} {} {} -> {}", peer, req.method, req.target, res.status);
            const bool keep_alive = raw.keep_alive() && !conn->stopping;
            auto out = to_beast(std::move(res), raw.version(), keep_alive);
            beast::get_lowest_layer(stream).expires_after(settings.write_timeout);
            auto [wec, wn] = co_await bhttp::async_write(stream, out, as_tuple);
            if (wec || !keep_alive) {
                clean_close = !wec;
                break;
            }
        }
        if (clean_close) {
            beast::get_lowest_layer(stream).expires_after(std::chrono::seconds(2));
            co_await stream.async_shutdown(as_tuple);
        }
        beast::get_lowest_layer(stream).close();
        finish(conn);
    }

    // The route a request's header addresses, to pick its body limit before the body is read.
    const router::route* route_for(const bhttp::request<bhttp::string_body>& raw) const {
        auto t = parse_target(raw.target());
        if (!t) return nullptr;
        request probe;
        probe.method = std::string(raw.method_string());
        probe.path = std::move(t->path);
        probe.segments = std::move(t->segments);
        auto m = routes.match(probe);
        return m ? *m : nullptr;
    }

    // After answering a request whose body was refused, the client may still be sending it.
    // Closing at once would reset the connection and the client would never read the answer, so
    // read and discard for a bounded time and amount first.
    static awaitable<void> linger(beast::ssl_stream<beast::tcp_stream>& stream) {
        constexpr std::size_t cap = 64 * 1024 * 1024;
        beast::get_lowest_layer(stream).expires_after(std::chrono::seconds(5));
        std::array<char, 16 * 1024> sink;
        std::size_t drained = 0;
        while (drained < cap) {
            auto [ec, n] = co_await stream.async_read_some(asio::buffer(sink), as_tuple);
            if (ec) break;
            drained += n;
        }
    }

    // The handler for an upgrade request on /$iothub/websocket, with the subprotocol as the client
    // spelled it; none for another path or only unknown subprotocols.
    std::optional<std::pair<websocket_handler, std::string>> websocket_for(
        const bhttp::request<bhttp::string_body>& req) {
        auto target = req.target();
        if (target.substr(0, target.find('?')) != "/$iothub/websocket") return std::nullopt;
        std::string_view offered = req[bhttp::field::sec_websocket_protocol];
        while (!offered.empty()) {
            auto comma = offered.find(',');
            auto name = offered.substr(0, comma);
            offered =
                comma == std::string_view::npos ? std::string_view{} : offered.substr(comma + 1);
            while (!name.empty() && name.front() == ' ') name.remove_prefix(1);
            while (!name.empty() && name.back() == ' ') name.remove_suffix(1);
            for (const auto& [known, handler] : websocket_protocols)
                if (iequals(known, name)) return std::make_pair(handler, std::string(name));
        }
        return std::nullopt;
    }

    void finish(const std::shared_ptr<connection>& conn) {
        std::lock_guard lock(mutex);
        connections.erase(conn);
    }
};

server::server(runtime::shard_set& shards, runtime::blocking_pool& blocking,
               std::shared_ptr<asio::ssl::context> tls, const router& routes,
               server_settings settings)
    : impl_(std::make_shared<impl>(shards, blocking, std::move(tls), routes, settings)) {}

server::~server() {
    begin_stop();
}

void server::add_websocket_protocol(std::string name, websocket_handler handler) {
    impl_->websocket_protocols.emplace_back(std::move(name), std::move(handler));
}

result<std::uint16_t> server::listen(const std::string& address, std::uint16_t port) {
    auto& ctx = impl_->shards.at(0);
    auto acceptor = runtime::open_acceptor(ctx, address, port);
    if (!acceptor) return acceptor.error();
    boost::system::error_code ec;
    auto bound = (*acceptor)->local_endpoint(ec).port();
    {
        std::lock_guard lock(impl_->mutex);
        impl_->acceptors.push_back(*acceptor);
    }
    asio::co_spawn(ctx,
                   runtime::accept_connections(
                       *acceptor, impl_->shards, "https",
                       [impl = impl_](tcp::socket socket) { impl->start(std::move(socket)); }),
                   asio::detached);
    return bound;
}

void server::begin_stop() {
    std::vector<std::shared_ptr<tcp::acceptor>> acceptors;
    std::set<std::shared_ptr<connection>> conns;
    {
        std::lock_guard lock(impl_->mutex);
        if (impl_->stopping) return;
        impl_->stopping = true;
        acceptors = impl_->acceptors;
        conns = impl_->connections;
    }
    for (auto& a : acceptors)
        asio::post(a->get_executor(), [a] {
            boost::system::error_code ec;
            a->close(ec);
        });
    for (auto& c : conns) {
        auto& socket = beast::get_lowest_layer(c->stream);
        asio::post(socket.get_executor(), [c] {
            c->stopping = true;
            // Idle connections are waiting for a request that will not come: cut them now.
            // Busy ones finish their request and close after answering. A request whose first
            // bytes have reached the hub (in the socket or in TLS's buffer) counts as in flight.
            if (!c->busy && !impl::bytes_waiting(*c)) beast::get_lowest_layer(c->stream).cancel();
        });
    }
}

std::size_t server::active_connections() const {
    std::lock_guard lock(impl_->mutex);
    return impl_->connections.size();
}

}  // namespace iothub::http
