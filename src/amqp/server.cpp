#include "amqp/server.hpp"

#include "amqp/detail/connection.hpp"

namespace iothub::amqp {

server::server(runtime::shard_set& shards, services svc, session::services& sessions,
               server_settings settings)
    : state_(std::make_shared<detail::server_state>(std::move(svc), sessions, settings)) {
    shell_ = std::make_unique<net::device_server>(
        shards, "amqp", settings.tls_handshake_timeout,
        [state = state_](net::connection_io& io) -> std::unique_ptr<net::protocol_handler> {
            return std::make_unique<detail::connection>(state, io);
        });
}

server::~server() {
    begin_stop();
}

result<std::uint16_t> server::listen_tls(const std::string& address, std::uint16_t port,
                                         std::shared_ptr<boost::asio::ssl::context> tls) {
    return shell_->listen(address, port, std::move(tls));
}

result<std::uint16_t> server::listen_plain(const std::string& address, std::uint16_t port) {
    return shell_->listen(address, port, nullptr);
}

void server::accept_websocket(boost::beast::ssl_stream<boost::beast::tcp_stream> stream,
                              boost::beast::http::request<boost::beast::http::string_body> request,
                              std::string subprotocol) {
    shell_->accept_websocket(std::move(stream), std::move(request), std::move(subprotocol));
}

void server::revoke(const std::string& device_id, const std::string& module_id) {
    shell_->post_to_each([device_id, module_id](net::protocol_handler& h) {
        static_cast<detail::connection&>(h).revoke(device_id, module_id);
    });
}

void server::begin_stop() {
    shell_->begin_stop();
}

std::size_t server::active_connections() const {
    return shell_->active_connections();
}

}  // namespace iothub::amqp
