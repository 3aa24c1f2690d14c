#include "cli/detail/amqp_session.hpp"

#include "common/crypto.hpp"

#include <proton/connection_options.hpp>
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

}  // namespace iothub::cli::detail
