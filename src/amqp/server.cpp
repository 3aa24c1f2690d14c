#include "amqp/server.hpp"

#include "amqp/detail/connection.hpp"

namespace iothub::amqp {

server::server(runtime::shard_set& shards, services svc, session::services& sessions,
               server_settings settings)
    : server(shards, std::make_shared<detail::server_state>(std::move(svc), sessions, settings),
             settings.tls_handshake_timeout) {}

server::server(runtime::shard_set& shards, std::shared_ptr<detail::server_state> state,
               std::chrono::seconds tls_handshake_timeout)
    : net::device_server(shards, "amqp", tls_handshake_timeout,
                         [state](net::connection_io& io) -> std::unique_ptr<net::protocol_handler> {
                             return std::make_unique<detail::connection>(state, io);
                         }) {}

void server::revoke(const std::string& device_id, const std::string& module_id) {
    post_to_each([device_id, module_id](net::protocol_handler& h) {
        static_cast<detail::connection&>(h).revoke(device_id, module_id);
    });
}

}  // namespace iothub::amqp
