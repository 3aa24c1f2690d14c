// How the hub reaches NATS (cluster mode): the servers and credentials every NATS connection of a
// node uses. Kept apart from libnats' header, which only the NATS code includes.
#pragma once

#include <string>
#include <vector>

namespace iothub::nats {

struct connection_settings {
    std::vector<std::string> servers;  // nats://host:port (tls:// for TLS)
    std::string name = "iothub";       // the connection's name, as NATS shows it
    std::string credentials_file;      // NATS .creds (user JWT and NKey seed)
    std::string user, password, token;
    std::string ca_file, cert_file, key_file;  // TLS (client certificate optional)
};

}  // namespace iothub::nats
