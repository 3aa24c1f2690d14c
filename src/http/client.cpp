#include "http/client.hpp"

#include "common/encoding.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include <algorithm>
#include <charconv>
#include <optional>

namespace iothub::http {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;

result<url> parse_url(std::string_view text) {
    url u;
    auto bad = [&] {
        return error(errc::argument_invalid,
                     "'" + std::string(text) + "' is not an http:// or https:// URL.");
    };
    std::string_view rest;
    if (text.size() > 8 && iequals(text.substr(0, 8), "https://")) {
        u.tls = true;
        rest = text.substr(8);
    } else if (text.size() > 7 && iequals(text.substr(0, 7), "http://")) {
        rest = text.substr(7);
    } else {
        return bad();
    }
    auto slash = rest.find_first_of("/?");
    auto authority = rest.substr(0, slash);
    if (slash != std::string_view::npos) {
        u.target = std::string(rest.substr(slash));
        if (u.target.front() == '?') u.target = "/" + u.target;
    }
    if (authority.find('@') != std::string_view::npos) return bad();
    std::string_view port;
    if (authority.starts_with("[")) {
        auto close = authority.find(']');
        if (close == std::string_view::npos) return bad();
        u.host = std::string(authority.substr(1, close - 1));
        auto after = authority.substr(close + 1);
        if (!after.empty()) {
            if (after.front() != ':') return bad();
            port = after.substr(1);
        }
    } else {
        auto colon = authority.rfind(':');
        u.host = std::string(authority.substr(0, colon));
        if (colon != std::string_view::npos) port = authority.substr(colon + 1);
    }
    if (u.host.empty()) return bad();
    u.port = u.tls ? 443 : 80;
    if (!port.empty()) {
        unsigned v = 0;
        auto [p, ec] = std::from_chars(port.data(), port.data() + port.size(), v);
        if (ec != std::errc{} || p != port.data() + port.size() || v == 0 || v > 65535)
            return bad();
        u.port = static_cast<std::uint16_t>(v);
    }
    return u;
}

struct client::impl {
    url origin;
    client_options options;
    asio::io_context io;
    asio::ssl::context ssl{asio::ssl::context::tls_client};
    std::optional<beast::tcp_stream> plain;
    std::optional<beast::ssl_stream<beast::tcp_stream>> secure;
    beast::flat_buffer buffer;
    bool ssl_ready = false;

    // Runs the io_context until the operation started before it completes; the stream's expiry
    // bounds it.
    void run() {
        io.restart();
        io.run();
    }

    beast::tcp_stream& tcp() { return origin.tls ? beast::get_lowest_layer(*secure) : *plain; }

    result<void> open(std::chrono::steady_clock::time_point deadline) {
        if (origin.tls && !ssl_ready) {
            ssl.set_default_verify_paths();
            for (const auto& f : options.extra_ca_files) {
                boost::system::error_code ec;
                ssl.load_verify_file(f.string(), ec);
                if (ec) return error(errc::server_error, "Cannot read CA file " + f.string());
            }
            ssl.set_verify_mode(asio::ssl::verify_peer);
            ssl_ready = true;
        }
        if (origin.tls)
            secure.emplace(io, ssl);
        else
            plain.emplace(io);
        buffer.clear();
        boost::system::error_code ec;
        asio::ip::tcp::resolver resolver(io);
        asio::ip::tcp::resolver::results_type endpoints;
        resolver.async_resolve(origin.host, std::to_string(origin.port),
                               [&](const boost::system::error_code& e, auto r) {
                                   ec = e;
                                   endpoints = std::move(r);
                               });
        run();
        if (ec) return failure("resolving " + origin.host, ec);
        tcp().expires_at(deadline);
        tcp().async_connect(endpoints,
                            [&](const boost::system::error_code& e, const auto&) { ec = e; });
        run();
        if (ec) return failure("connecting to " + origin.host, ec);
        if (origin.tls) {
            SSL_set_tlsext_host_name(secure->native_handle(), origin.host.c_str());
            secure->set_verify_callback(asio::ssl::host_name_verification(origin.host));
            secure->async_handshake(asio::ssl::stream_base::client,
                                    [&](const boost::system::error_code& e) { ec = e; });
            run();
            if (ec) return failure("TLS with " + origin.host, ec);
        }
        return {};
    }

    error failure(const std::string& what, const boost::system::error_code& ec) {
        close();
        const bool timeout = ec == beast::error::timeout;
        return error(errc::server_error, what + (timeout ? ": timed out" : ": " + ec.message()));
    }

    void close() {
        plain.reset();
        secure.reset();
    }
    bool is_open() const { return plain.has_value() || secure.has_value(); }

    template <class Stream>
    result<client_response> exchange(Stream& s, bhttp::request<bhttp::string_body>& req) {
        boost::system::error_code ec;
        bhttp::async_write(s, req,
                           [&](const boost::system::error_code& e, std::size_t) { ec = e; });
        run();
        if (ec) return failure("sending to " + origin.host, ec);
        bhttp::response_parser<bhttp::string_body> parser;
        parser.body_limit(1024 * 1024);
        bhttp::async_read(s, buffer, parser,
                          [&](const boost::system::error_code& e, std::size_t) { ec = e; });
        run();
        if (ec) return failure("reading from " + origin.host, ec);
        auto res = parser.release();
        client_response out;
        out.status = static_cast<int>(res.result_int());
        out.body = std::move(res.body());
        for (const auto& f : res)
            out.headers.emplace_back(std::string(f.name_string()), std::string(f.value()));
        if (!res.keep_alive()) close();
        return out;
    }

    result<client_response> request(
        bhttp::verb verb, std::string_view target, std::string_view body,
        const std::vector<std::pair<std::string, std::string>>& headers) {
        const auto deadline = std::chrono::steady_clock::now() + options.timeout;
        bhttp::request<bhttp::string_body> req{verb, target, 11};
        req.set(bhttp::field::host, origin.host);
        req.set(bhttp::field::user_agent, "iothub");
        for (const auto& [k, v] : headers) req.set(k, v);
        req.body() = std::string(body);
        req.prepare_payload();
        req.keep_alive(true);
        // A kept connection may have been closed by the server meanwhile: one fresh attempt.
        for (int attempt = 0; attempt < 2; ++attempt) {
            const bool reused = is_open();
            if (!reused)
                if (auto r = open(deadline); !r) return r.error();
            tcp().expires_at(deadline);
            auto r = origin.tls ? exchange(*secure, req) : exchange(*plain, req);
            if (r || !reused) return r;
        }
        return error(errc::server_error, "The connection to " + origin.host + " failed.");
    }
};

client::client(url origin, client_options options) : impl_(std::make_unique<impl>()) {
    impl_->origin = std::move(origin);
    impl_->options = std::move(options);
}
client::~client() = default;
client::client(client&&) noexcept = default;
client& client::operator=(client&&) noexcept = default;

result<client_response> client::post(
    std::string_view body, const std::vector<std::pair<std::string, std::string>>& headers) {
    return impl_->request(bhttp::verb::post, impl_->origin.target, body, headers);
}

result<client_response> client::request(
    std::string_view method, std::string_view target, std::string_view body,
    const std::vector<std::pair<std::string, std::string>>& headers) {
    const auto verb = bhttp::string_to_verb(method);
    if (verb == bhttp::verb::unknown)
        return error(errc::argument_invalid, "Unknown HTTP method '" + std::string(method) + "'.");
    return impl_->request(verb, target, body, headers);
}

client_pool::client_pool(url origin, client_options options, std::chrono::milliseconds hold,
                         std::size_t max_idle)
    : origin_(std::move(origin)), options_(std::move(options)), hold_(hold), max_idle_(max_idle) {}

std::size_t client_pool::opened() const {
    std::lock_guard lock(mutex_);
    return opened_;
}

result<client_response> client_pool::request(
    std::string_view method, std::string_view target, std::string_view body,
    const std::vector<std::pair<std::string, std::string>>& headers) {
    std::optional<client> borrowed;
    {
        std::lock_guard lock(mutex_);
        if (failed_at_) {
            const auto since = std::chrono::steady_clock::now() - *failed_at_;
            if (since < hold_)
                return error(
                    errc::service_unavailable,
                    "The last call to " + origin_.host + ", " +
                        std::to_string(
                            std::chrono::duration_cast<std::chrono::seconds>(since).count()) +
                        " s ago, did not reach it; it is called again " +
                        std::to_string(
                            std::chrono::duration_cast<std::chrono::seconds>(hold_).count()) +
                        " s after that.");
        }
        if (!idle_.empty()) {
            borrowed.emplace(std::move(idle_.back()));
            idle_.pop_back();
        } else {
            ++opened_;
        }
    }
    if (!borrowed) borrowed.emplace(origin_, options_);
    auto r = borrowed->request(method, target, body, headers);
    std::lock_guard lock(mutex_);
    if (!r) {
        // A transport failure: the client closed its connection; the next call after the hold
        // opens a fresh one.
        failed_at_ = std::chrono::steady_clock::now();
        return r;
    }
    failed_at_.reset();
    if (idle_.size() < max_idle_) idle_.push_back(std::move(*borrowed));
    return r;
}

client_pools::client_pools(std::chrono::milliseconds hold, std::size_t max_origins)
    : hold_(hold), max_origins_(max_origins) {}

std::shared_ptr<client_pool> client_pools::get(const url& origin, const client_options& options) {
    auto key = (origin.tls ? "https://" : "http://") + to_lower(origin.host) + ":" +
               std::to_string(origin.port) + " " + std::to_string(options.timeout.count());
    for (const auto& f : options.extra_ca_files) key += "\n" + f.string();
    std::lock_guard lock(mutex_);
    auto& [pool, used] = pools_[key];
    used = ++clock_;
    if (!pool) {
        pool = std::make_shared<client_pool>(url{origin.tls, origin.host, origin.port, "/"},
                                             options, hold_);
        if (pools_.size() > max_origins_)
            pools_.erase(std::min_element(pools_.begin(), pools_.end(), [](auto& a, auto& b) {
                return a.second.second < b.second.second;
            }));
    }
    return pool;
}

}  // namespace iothub::http
