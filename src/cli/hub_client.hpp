// How the command-line client reaches a hub and calls its service API.
//
// The hub is named by, in order: --connection-string, IOTHUB_CONNECTION_STRING, or a data
// directory (--data-dir, IOTHUB_DATA_DIR, else ./iothub-data) whose hub.json holds the policies
// and whose runtime.json holds the ports of the running hub. Requests are signed with a fresh
// short-lived SAS token each.
#pragma once

#include "auth/policy.hpp"
#include "common/error.hpp"
#include "instance/instance.hpp"

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace iothub::cli {

struct access_options {
    std::string connection_string;
    std::string data_dir;
    std::string policy;   // with a data directory: which policy to sign with (default iothubowner)
    std::string ca_file;  // trust for a connection-string hub (else IOTHUB_CA_FILE, else system)
};

struct hub_access {
    std::string hostname;      // the hub's name: SAS resources and connection strings
    std::string connect_host;  // where to dial
    std::uint16_t port = 443;
    std::uint16_t amqp_port = 5671;  // service AMQP (C2D send, feedback)
    std::string verify_name;         // the name the server certificate must carry
    std::filesystem::path ca;        // empty: the system trust store
    std::string policy;
    std::string key;
    std::optional<instance::hub_identity> local;  // all policies, when read from a data directory
    std::optional<instance::layout> layout;
};

// `need_running`: the command talks to the hub, so its ports must be known.
result<hub_access> resolve_access(const access_options& options, bool need_running);

struct reply {
    int status = 0;
    std::string body;
    std::map<std::string, std::string> headers;  // lower-cased names
};

// One connection to the hub, kept alive across requests (a poller pays for one TLS handshake,
// not one per request). Not thread-safe; use one per thread.
class hub_connection {
  public:
    explicit hub_connection(hub_access hub);
    ~hub_connection();
    hub_connection(const hub_connection&) = delete;
    hub_connection& operator=(const hub_connection&) = delete;

    result<reply> call(const std::string& method, const std::string& target,
                       const std::string& body = {},
                       const std::vector<std::pair<std::string, std::string>>& headers = {});

  private:
    result<void> connect();
    struct state;
    std::unique_ptr<state> s_;
};

// A single request on a connection of its own.
result<reply> call(const hub_access& hub, const std::string& method, const std::string& target,
                   const std::string& body = {},
                   const std::vector<std::pair<std::string, std::string>>& headers = {});

// Turns an Azure error reply into "<ErrorCode>: <message> (HTTP <status>)".
std::string describe_failure(const reply& r);

}  // namespace iothub::cli
