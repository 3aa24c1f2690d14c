// An HTTP/1.1 client for the hub's outgoing calls (webhook endpoints, Event Grid subscriptions,
// the provisioning service's allocation webhooks and linked hubs): one keep-alive connection to one
// origin, over TCP or TLS (the system's trusted CAs plus any the caller adds, host names verified),
// reopened when it breaks. Blocking, with a deadline per request: it is used from delivery threads,
// never from the network shards.
#pragma once

#include "common/error.hpp"

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace iothub::http {

struct url {
    bool tls = false;
    std::string host;
    std::uint16_t port = 0;
    std::string target = "/";  // path and query
};
// http:// or https:// URLs only; errc::argument_invalid otherwise.
result<url> parse_url(std::string_view text);

struct client_response {
    int status = 0;
    std::string body;
    std::vector<std::pair<std::string, std::string>> headers;
};

struct client_options {
    std::chrono::milliseconds timeout{30000};           // connect, send and receive together
    std::vector<std::filesystem::path> extra_ca_files;  // trusted besides the system's
};

class client {
  public:
    explicit client(url origin, client_options options = {});
    ~client();
    client(client&&) noexcept;
    client& operator=(client&&) noexcept;

    // POSTs `body` to the origin's target. A transport failure (refused, reset, timed out, TLS)
    // is errc::server_error with what happened; any HTTP status is a response.
    result<client_response> post(std::string_view body,
                                 const std::vector<std::pair<std::string, std::string>>& headers);
    // Any method to `target` (path and query) on the same origin; an empty body sends none.
    result<client_response> request(
        std::string_view method, std::string_view target, std::string_view body,
        const std::vector<std::pair<std::string, std::string>>& headers);

  private:
    struct impl;
    std::unique_ptr<impl> impl_;
};

}  // namespace iothub::http
