// An HTTP/1.1 client for the hub's outgoing calls (webhook endpoints, Event Grid subscriptions,
// the provisioning service's allocation webhooks and linked hubs): one keep-alive connection to one
// origin, over TCP or TLS (the system's trusted CAs plus any the caller adds, host names verified),
// reopened when it breaks; and a pool of them for callers on several threads. Blocking, with a
// deadline per request: it is used from delivery and blocking threads, never from the network
// shards.
#pragma once

#include "common/error.hpp"

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
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

// Keep-alive clients to one origin for calls from several threads at once: a call borrows an
// idle client (opening one when none is idle) and gives it back, so successive calls reuse a
// connection and its TLS context (loading the system's CAs and a handshake cost more than most
// calls). After a transport failure the origin is held: calls fail at once with
// errc::service_unavailable until `hold` has passed, instead of each waiting out the timeout
// against a peer that is down.
class client_pool {
  public:
    client_pool(url origin, client_options options, std::chrono::milliseconds hold,
                std::size_t max_idle = 8);

    result<client_response> request(
        std::string_view method, std::string_view target, std::string_view body,
        const std::vector<std::pair<std::string, std::string>>& headers);
    // Opened so far (for tests and statistics).
    std::size_t opened() const;

  private:
    url origin_;
    client_options options_;
    std::chrono::milliseconds hold_;
    std::size_t max_idle_;
    mutable std::mutex mutex_;
    std::vector<client> idle_;
    std::size_t opened_ = 0;
    std::optional<std::chrono::steady_clock::time_point> failed_at_;
};

// Pools by origin (scheme, host, port) and trust (the extra CA files), for callers whose peers
// are named at run time (webhook URLs, linked hubs). Bounded: beyond `max_origins` the least
// recently asked-for pool is let go (its borrowed clients finish their calls).
class client_pools {
  public:
    explicit client_pools(std::chrono::milliseconds hold, std::size_t max_origins = 64);
    std::shared_ptr<client_pool> get(const url& origin, const client_options& options);

  private:
    std::chrono::milliseconds hold_;
    std::size_t max_origins_;
    std::mutex mutex_;
    std::uint64_t clock_ = 0;
    std::map<std::string, std::pair<std::shared_ptr<client_pool>, std::uint64_t>> pools_;
};

}  // namespace iothub::http
