#include "cli/hub_client.hpp"

#include "auth/connection_string.hpp"
#include "auth/sas.hpp"
#include "common/time.hpp"
#include "tls/context.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/json.hpp>

#include <cstdlib>

namespace iothub::cli {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;

namespace {

std::string env_or(const char* name, const std::string& fallback) {
    const char* v = std::getenv(name);
    return v && *v ? std::string(v) : fallback;
}

bool is_ip(const std::string& host) {
    boost::system::error_code ec;
    asio::ip::make_address(host, ec);
    return !ec;
}

}  // namespace

result<hub_access> resolve_access(const access_options& options, bool need_running) {
    hub_access hub;
    std::string cs = options.connection_string.empty() ? env_or("IOTHUB_CONNECTION_STRING", "")
                                                       : options.connection_string;
    if (!cs.empty() && options.data_dir.empty()) {
        auto parsed = auth::connection_string::parse(cs);
        if (!parsed) return parsed.error();
        auto host = parsed->get("HostName");
        auto name = parsed->get("SharedAccessKeyName");
        auto key = parsed->get("SharedAccessKey");
        if (!host || !name || !key)
            return error(errc::argument_invalid,
                         "The connection string needs HostName, SharedAccessKeyName and "
                         "SharedAccessKey (a service connection string).");
        hub.hostname = *host;
        hub.connect_host = *host;
        if (auto colon = host->rfind(':');
            colon != std::string::npos && host->find(']') == std::string::npos) {
            hub.connect_host = host->substr(0, colon);
            hub.port = static_cast<std::uint16_t>(std::atoi(host->c_str() + colon + 1));
            // The Node service SDK dials an explicit HostName port for AMQP too.
            hub.amqp_port = hub.port;
        }
        hub.verify_name = hub.connect_host;
        hub.policy = *name;
        hub.key = *key;
        hub.ca = options.ca_file.empty() ? env_or("IOTHUB_CA_FILE", "") : options.ca_file;
        return hub;
    }

    std::string dir =
        options.data_dir.empty() ? env_or("IOTHUB_DATA_DIR", "iothub-data") : options.data_dir;
    auto where = instance::layout_for(dir);
    auto identity = instance::read_identity(where);
    if (!identity) return identity.error();
    std::string policy = options.policy.empty() ? "iothubowner" : options.policy;
    const auth::access_policy* p = nullptr;
    for (const auto& candidate : identity->policies)
        if (candidate.name == policy) p = &candidate;
    if (!p)
        return error(errc::argument_invalid,
                     "The hub in " + dir + " has no policy '" + policy + "'.");
    hub.hostname = identity->hostname;
    hub.policy = p->name;
    hub.key = p->primary_key;
    hub.connect_host = "localhost";
    hub.verify_name = "localhost";
    auto ca = where.tls_dir / "ca.pem";
    hub.ca = options.ca_file.empty() ? (std::filesystem::exists(ca) ? ca : std::filesystem::path())
                                     : std::filesystem::path(options.ca_file);
    hub.local = std::move(*identity);
    hub.layout = where;
    if (need_running) {
        auto running = instance::read_runtime(where);
        if (!running)
            return error(errc::service_unavailable,
                         "The hub in " + dir +
                             " is not running (no runtime.json); start it with "
                             "`iothub serve --data-dir " +
                             dir + "`.");
        hub.port = running->https_port;
        if (running->amqp_port) hub.amqp_port = running->amqp_port;
    }
    return hub;
}

struct hub_connection::state {
    hub_access hub;
    asio::io_context ioc;
    std::shared_ptr<asio::ssl::context> ctx;
    std::optional<beast::ssl_stream<beast::tcp_stream>> stream;
    beast::flat_buffer buffer;
    std::string where;
};

hub_connection::hub_connection(hub_access hub) : s_(std::make_unique<state>()) {
    s_->hub = std::move(hub);
    s_->where = s_->hub.connect_host + ":" + std::to_string(s_->hub.port);
}

hub_connection::~hub_connection() {
    if (s_->stream) {
        boost::system::error_code ec;
        beast::get_lowest_layer(*s_->stream).expires_after(std::chrono::seconds(2));
        s_->stream->shutdown(ec);
    }
}

result<void> hub_connection::connect() {
    auto& st = *s_;
    const auto& hub = st.hub;
    if (!st.ctx) {
        auto ctx = tls::make_client_context(hub.ca);
        if (!ctx) return ctx.error();
        st.ctx = *ctx;
    }
    st.stream.emplace(st.ioc, *st.ctx);
    st.buffer.clear();
    auto& stream = *st.stream;
    auto unreachable = [&](const boost::system::error_code& ec) {
        st.stream.reset();
        return error(errc::service_unavailable,
                     "Cannot reach the hub at " + st.where + ": " + ec.message());
    };
    if (!is_ip(hub.verify_name))
        SSL_set_tlsext_host_name(stream.native_handle(), hub.verify_name.c_str());
    stream.set_verify_callback(asio::ssl::host_name_verification(hub.verify_name));
    boost::system::error_code ec;
    asio::ip::tcp::resolver resolver(st.ioc);
    auto endpoints = resolver.resolve(hub.connect_host, std::to_string(hub.port), ec);
    if (ec) return unreachable(ec);
    beast::get_lowest_layer(stream).expires_after(std::chrono::seconds(10));
    beast::get_lowest_layer(stream).connect(endpoints, ec);
    if (ec) return unreachable(ec);
    stream.handshake(asio::ssl::stream_base::client, ec);
    if (ec) {
        st.stream.reset();
        return error(errc::service_unavailable,
                     "TLS with the hub at " + st.where + " failed: " + ec.message() +
                         (hub.ca.empty() ? " (trusting the system store; pass --ca-file?)"
                                         : " (trusting " + hub.ca.string() + ")"));
    }
    return {};
}

result<reply> hub_connection::call(
    const std::string& method, const std::string& target, const std::string& body,
    const std::vector<std::pair<std::string, std::string>>& headers) {
    auto& st = *s_;
    const auto& hub = st.hub;
    // A kept-alive connection the hub has since closed fails on first use; a GET is retried once
    // on a fresh one.
    const bool reused = st.stream.has_value();
    if (!reused)
        if (auto r = connect(); !r) return r.error();
    bhttp::request<bhttp::string_body> req{bhttp::string_to_verb(method), target, 11};
    req.set(bhttp::field::host, hub.hostname);
    req.set(bhttp::field::user_agent, "iothub-cli");
    req.set(bhttp::field::authorization,
            auth::make_sas_token(hub.hostname, hub.key, unix_seconds(now()) + 300, hub.policy));
    for (const auto& [k, v] : headers) req.set(k, v);
    if (!body.empty()) {
        req.set(bhttp::field::content_type, "application/json; charset=utf-8");
        req.body() = body;
    }
    req.prepare_payload();
    auto& stream = *st.stream;
    boost::system::error_code ec;
    // Long enough for the slowest legitimate answer: a direct method may wait 300 s for the
    // device to connect and 300 s more for its answer.
    beast::get_lowest_layer(stream).expires_after(std::chrono::seconds(620));
    bhttp::write(stream, req, ec);
    bhttp::response_parser<bhttp::string_body> parser;
    parser.body_limit(64 * 1024 * 1024);
    if (!ec) bhttp::read(stream, st.buffer, parser, ec);
    if (ec) {
        st.stream.reset();
        if (reused && method == "GET") return call(method, target, body, headers);
        return error(errc::service_unavailable,
                     "Cannot reach the hub at " + st.where + ": " + ec.message());
    }
    reply out;
    auto& res = parser.get();
    out.status = static_cast<int>(res.result_int());
    for (const auto& f : res) {
        std::string name(f.name_string());
        for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        out.headers[name] = std::string(f.value());
    }
    if (!res.keep_alive()) st.stream.reset();
    out.body = std::move(res.body());
    return out;
}

result<reply> call(const hub_access& hub, const std::string& method, const std::string& target,
                   const std::string& body,
                   const std::vector<std::pair<std::string, std::string>>& headers) {
    hub_connection c(hub);
    return c.call(method, target, body, headers);
}

std::string describe_failure(const reply& r) {
    boost::system::error_code ec;
    auto v = boost::json::parse(r.body, ec);
    std::string text;
    if (!ec && v.is_object()) {
        if (auto* m = v.get_object().if_contains("Message"); m && m->is_string()) {
            std::string message(m->get_string());
            auto semi = message.find(';');
            if (message.rfind("ErrorCode:", 0) == 0 && semi != std::string::npos)
                text = message.substr(10, semi - 10) + ": " + message.substr(semi + 1);
            else
                text = message;
        }
    }
    if (text.empty()) text = r.body.empty() ? "no details" : r.body;
    return text + " (HTTP " + std::to_string(r.status) + ")";
}

}  // namespace iothub::cli
