// The hub's configuration: defaults, overridden by a TOML file, then by IOTHUB_* environment
// variables, then by command-line flags. One table (settings.cpp) names every setting once with
// its TOML key, environment variable and flag, so the three layers cannot drift apart.
#pragma once

#include "common/error.hpp"

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace iothub::config {

struct settings {
    std::filesystem::path data_dir = "iothub-data";
    // Unset means: what the data directory recorded last time, else "localhost".
    std::optional<std::string> hostname;
    std::vector<std::string> aliases;

    std::string bind_address = "::";  // dual-stack; falls back to 0.0.0.0 without IPv6
    std::uint16_t https_port = 443;
    std::uint16_t mqtt_port = 8883;
    std::uint16_t amqp_port = 5671;
    std::uint16_t mqtt_plain_port = 1883;  // with mqtt_plain_enabled; 0 = any free port
    bool mqtt_plain_enabled = false;

    std::filesystem::path tls_cert;  // both set: use this certificate instead of the dev CA
    std::filesystem::path tls_key;

    std::string storage_engine = "rocksdb";  // rocksdb | memory (ignored in cluster mode)
    bool storage_sync = true;
    std::uint64_t group_commit_delay_us = 1000;  // see storage::event_log_settings

    // Cluster mode: the NATS servers of the JetStream cluster that holds the hub's state (empty:
    // one node with embedded storage). Every node of a hub names the same servers and prefix.
    std::vector<std::string> cluster_nats;
    std::string cluster_prefix = "IOTHUB";
    int cluster_replicas = 0;                   // 0: 3 when three or more servers are named, else 1
    std::filesystem::path cluster_credentials;  // NATS .creds file
    std::string cluster_user, cluster_password, cluster_token;
    std::filesystem::path cluster_ca, cluster_cert, cluster_key;  // TLS to NATS
    std::uint32_t cluster_timeout_ms = 5000;

    std::string log_level = "info";
    unsigned threads = 0;           // 0 = one per core
    unsigned blocking_threads = 4;  // the blocking pool

    int event_partitions = 4;  // fixed once a data directory has events
    std::chrono::seconds retention{std::chrono::hours(24)};  // telemetry kept this long
    std::uint64_t retention_max_bytes = 0;                   // per partition; 0 = no size limit
    std::size_t max_consumer_groups = 20;  // $Default included (Azure's limit for a paid hub)

    std::size_t max_request_body = 1024 * 1024;
    std::size_t max_modules_per_device = 50;
    // Twin limits (Azure's defaults): section sizes in bytes as Azure counts them, nesting depth.
    std::size_t twin_tags_bytes = 8 * 1024;
    std::size_t twin_desired_bytes = 32 * 1024;
    std::size_t twin_reported_bytes = 32 * 1024;
    std::size_t twin_depth = 10;
    // Device connects (MQTT and AMQP, over TCP or WebSockets) the hub accepts per second, as
    // Azure's "device connections per second" throttle; 0 = unlimited. The burst is how many may
    // come at once (0 = the rate).
    std::uint32_t device_connects_per_second = 0;
    std::uint32_t device_connects_burst = 0;
    // Cloud-to-device queues (Azure's defaults; its ranges where it has them).
    std::size_t c2d_max_depth = 50;
    std::uint32_t c2d_max_delivery_count = 10;
    std::chrono::seconds c2d_lock_timeout{60};
    std::chrono::seconds c2d_default_ttl{std::chrono::hours(1)};
    std::chrono::seconds c2d_max_ttl{std::chrono::hours(48)};
    std::size_t c2d_max_message_bytes = 64 * 1024;
    // File upload: largest blob, lifetime of an upload's SAS (Azure: 1 to 24 hours; shorter here
    // for tests).
    std::uint64_t files_max_bytes = 256ull << 20;
    std::chrono::seconds files_sas_ttl{std::chrono::hours(1)};
    std::chrono::seconds shutdown_grace{10};
    // Message routing: a JSON document in ARM's properties.routing shape put in force at start
    // (it replaces what the hub stored), and the limits on documents (Azure's paid tier).
    std::filesystem::path routing_file;
    // The same document written in the TOML file's [routing] table (endpoints, routes,
    // fallbackRoute, enrichments), as JSON; at most one of the two may be given.
    std::string routing_document;
    std::size_t routing_max_endpoints = 10;
    std::size_t routing_max_routes = 100;
    std::size_t routing_max_enrichments = 10;
    std::chrono::seconds routing_dead_after{3600};  // failing this long: the endpoint is dead
    // Device messages' routes decided as they arrive where the configuration allows (see
    // docs/routing.md); off: always through the ingest log and the endpoints' workers.
    bool routing_decide_on_append = true;
    // CA certificates (PEM) that routing trusts besides the system's when it delivers over TLS
    // (webhooks, Event Grid subscriptions, external event hubs): receivers with a private CA.
    std::filesystem::path routing_trusted_ca_file;
};

struct setting_info {
    std::string key;   // TOML path, e.g. "listen.https_port"
    std::string env;   // e.g. "IOTHUB_HTTPS_PORT"
    std::string flag;  // e.g. "--https-port"
    std::string help;
    bool boolean = false;  // a flag on the command line (`--x`, `--x=false`)
};
const std::vector<setting_info>& all_settings();

// Overrides keyed by TOML path, as parsed from flags.
using overrides = std::map<std::string, std::string>;
using env_lookup = std::function<std::optional<std::string>(const std::string&)>;

// Builds the settings: defaults, then `config_file` (if given, it must exist; if not, the data
// directory's iothub.toml is read when present), then the environment, then `flags`.
result<settings> load(const std::optional<std::filesystem::path>& config_file,
                      const overrides& flags, const env_lookup& env);
env_lookup process_environment();

}  // namespace iothub::config
