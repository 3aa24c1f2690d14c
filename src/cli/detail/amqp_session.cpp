#include "cli/detail/amqp_session.hpp"

#include "common/crypto.hpp"

#include <proton/connection_options.hpp>
#include <proton/message_id.hpp>
#include <proton/ssl.hpp>

namespace iothub::cli::detail {

void connect_amqps(proton::container& c, const hub_access& hub, const std::string& who) {
    proton::connection_options o;
    o.sasl_enabled(false)
        .virtual_host(hub.verify_name)
        .container_id("iothub-cli-" + who + "-" + random_uuid());
    o.ssl_client_options(hub.ca.empty() ? proton::ssl_client_options()
                                        : proton::ssl_client_options(hub.ca.string()));
    c.connect("amqps://" + hub.connect_host + ":" + std::to_string(hub.amqp_port), o);
}

proton::message put_token_request(const std::string& id, const std::string& audience,
                                  const std::string& token) {
    proton::message m;
    m.id(proton::message_id(id));
    m.to("$cbs");
    m.reply_to("cbs");
    m.properties().put("operation", "put-token");
    m.properties().put("type", "servicebus.windows.net:sastoken");
    m.properties().put("name", audience);
    m.body(token);
    return m;
}

}  // namespace iothub::cli::detail
