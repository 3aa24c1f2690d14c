#include "config/settings.hpp"

#include "common/encoding.hpp"

#include <toml++/toml.h>

#include <charconv>
#include <cstdlib>
#include <sstream>

namespace iothub::config {
namespace {

// A setter returns nothing on success, else what it expected (e.g. "true or false").
using setter = std::function<std::optional<std::string>(settings&, const std::string&)>;

struct setting_def {
    setting_info info;
    setter apply;
};

template <class T>
setter unsigned_number(T settings::*field, std::uint64_t max) {
    return [field, max](settings& s, const std::string& v) -> std::optional<std::string> {
        std::uint64_t n = 0;
        auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
        if (ec != std::errc{} || p != v.data() + v.size() || n > max)
            return "an integer from 0 to " + std::to_string(max);
        s.*field = static_cast<T>(n);
        return std::nullopt;
    };
}

template <class T>
setter number_in(T settings::*field, std::uint64_t min, std::uint64_t max) {
    return [field, min, max](settings& s, const std::string& v) -> std::optional<std::string> {
        std::uint64_t n = 0;
        auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
        if (ec != std::errc{} || p != v.data() + v.size() || n < min || n > max)
            return "an integer from " + std::to_string(min) + " to " + std::to_string(max);
        s.*field = static_cast<T>(n);
        return std::nullopt;
    };
}

setter seconds_in(std::chrono::seconds settings::*field, std::uint64_t min, std::uint64_t max) {
    return [field, min, max](settings& s, const std::string& v) -> std::optional<std::string> {
        std::uint64_t n = 0;
        auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
        if (ec != std::errc{} || p != v.data() + v.size() || n < min || n > max)
            return "a number of seconds from " + std::to_string(min) + " to " + std::to_string(max);
        s.*field = std::chrono::seconds(n);
        return std::nullopt;
    };
}

setter boolean(bool settings::*field) {
    return [field](settings& s, const std::string& v) -> std::optional<std::string> {
        if (iequals(v, "true") || v == "1" || iequals(v, "yes") || iequals(v, "on")) {
            s.*field = true;
        } else if (iequals(v, "false") || v == "0" || iequals(v, "no") || iequals(v, "off")) {
            s.*field = false;
        } else {
            return "true or false";
        }
        return std::nullopt;
    };
}

template <class T>
setter text(T settings::*field) {
    return [field](settings& s, const std::string& v) -> std::optional<std::string> {
        s.*field = v;
        return std::nullopt;
    };
}

setter one_of(std::string settings::*field, std::vector<std::string> allowed) {
    return [field, allowed](settings& s, const std::string& v) -> std::optional<std::string> {
        for (const auto& a : allowed) {
            if (iequals(a, v)) {
                s.*field = a;
                return std::nullopt;
            }
        }
        std::string list;
        for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
        return "one of " + list;
    };
}

// A comma-separated list (a TOML array arrives joined with commas).
setter list(std::vector<std::string> settings::*field) {
    return [field](settings& s, const std::string& v) -> std::optional<std::string> {
        (s.*field).clear();
        std::string_view rest = v;
        while (!rest.empty()) {
            auto comma = rest.find(',');
            auto item = rest.substr(0, comma);
            if (!item.empty()) (s.*field).emplace_back(item);
            rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
        }
        return std::nullopt;
    };
}

setter port(std::uint16_t settings::*field) {
    return unsigned_number(field, 65535);
}

const std::vector<setting_def>& table() {
    static const std::vector<setting_def> defs = {
        {{"data_dir", "IOTHUB_DATA_DIR", "--data-dir",
          "Directory for state, keys and certificates"},
         text(&settings::data_dir)},
        {{"hostname", "IOTHUB_HOSTNAME", "--hostname",
          "Host name devices and services use (put in connection strings and the certificate)"},
         [](settings& s, const std::string& v) -> std::optional<std::string> {
             if (v.empty()) return "a host name";
             s.hostname = v;
             return std::nullopt;
         }},
        {{"aliases", "IOTHUB_ALIASES", "--alias",
          "Further host names the hub answers to, comma-separated"},
         list(&settings::aliases)},
        {{"listen.address", "IOTHUB_BIND", "--bind", "Address to listen on (:: = all, dual-stack)"},
         text(&settings::bind_address)},
        {{"listen.https_port", "IOTHUB_HTTPS_PORT", "--https-port",
          "HTTPS port: REST APIs and WebSockets (0 = any free port)"},
         port(&settings::https_port)},
        {{"listen.mqtt_port", "IOTHUB_MQTT_PORT", "--mqtt-port", "MQTT over TLS port (0 = any)"},
         port(&settings::mqtt_port)},
        {{"listen.amqp_port", "IOTHUB_AMQP_PORT", "--amqp-port", "AMQP over TLS port (0 = any)"},
         port(&settings::amqp_port)},
        {{"listen.mqtt_plain", "IOTHUB_MQTT_PLAIN", "--mqtt-plain",
          "Also serve MQTT without TLS (for local tools and benchmarks)", true},
         boolean(&settings::mqtt_plain_enabled)},
        {{"listen.mqtt_plain_port", "IOTHUB_MQTT_PLAIN_PORT", "--mqtt-plain-port",
          "Plain MQTT port when enabled (default 1883, 0 = any free port); setting it enables it"},
         port(&settings::mqtt_plain_port)},
        {{"tls.cert", "IOTHUB_TLS_CERT", "--tls-cert",
          "PEM certificate chain to serve instead of the development CA's"},
         text(&settings::tls_cert)},
        {{"tls.key", "IOTHUB_TLS_KEY", "--tls-key", "PEM private key for --tls-cert"},
         text(&settings::tls_key)},
        {{"storage.engine", "IOTHUB_STORAGE", "--storage",
          "rocksdb (durable, default) or memory (nothing survives a restart)"},
         one_of(&settings::storage_engine, {"rocksdb", "memory"})},
        {{"storage.sync", "IOTHUB_STORAGE_SYNC", "--storage-sync",
          "fsync each commit (true: survives power loss; false: survives process crashes)", true},
         boolean(&settings::storage_sync)},
        {{"storage.group_commit_delay_us", "IOTHUB_GROUP_COMMIT_DELAY_US",
          "--group-commit-delay-us",
          "Least microseconds between two telemetry fsyncs; an idle log commits at once (0 = no "
          "pacing)"},
         unsigned_number(&settings::group_commit_delay_us, 100000)},
        {{"cluster.nats", "IOTHUB_CLUSTER", "--cluster",
          "Cluster mode: NATS servers of the JetStream cluster holding the hub's state, "
          "comma-separated (nats://a:4222,nats://b:4222,nats://c:4222)"},
         [](settings& s, const std::string& v) -> std::optional<std::string> {
             (void)list (&settings::cluster_nats)(s, v);
             for (const auto& url : s.cluster_nats)
                 if (url.rfind("nats://", 0) != 0 && url.rfind("tls://", 0) != 0)
                     return "nats:// or tls:// URLs, comma-separated";
             return std::nullopt;
         }},
        {{"cluster.prefix", "IOTHUB_CLUSTER_PREFIX", "--cluster-prefix",
          "Names the hub's streams in JetStream, so hubs can share a cluster (letters, digits, "
          "'-', '_')"},
         [](settings& s, const std::string& v) -> std::optional<std::string> {
             if (v.empty() || v.size() > 32 ||
                 v.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                     "0123456789-_") != std::string::npos)
                 return "1 to 32 letters, digits, '-' or '_'";
             s.cluster_prefix = v;
             return std::nullopt;
         }},
        {{"cluster.replicas", "IOTHUB_CLUSTER_REPLICAS", "--cluster-replicas",
          "Copies JetStream keeps of each stream, 1 to 5 (0: 3 when three or more servers are "
          "named, else 1)"},
         number_in(&settings::cluster_replicas, 0, 5)},
        {{"cluster.credentials", "IOTHUB_CLUSTER_CREDENTIALS", "--cluster-credentials",
          "NATS credentials file (.creds)"},
         text(&settings::cluster_credentials)},
        {{"cluster.user", "IOTHUB_CLUSTER_USER", "--cluster-user", "NATS user name"},
         text(&settings::cluster_user)},
        {{"cluster.password", "IOTHUB_CLUSTER_PASSWORD", "--cluster-password", "NATS password"},
         text(&settings::cluster_password)},
        {{"cluster.token", "IOTHUB_CLUSTER_TOKEN", "--cluster-token", "NATS token"},
         text(&settings::cluster_token)},
        {{"cluster.ca_file", "IOTHUB_CLUSTER_CA_FILE", "--cluster-ca-file",
          "PEM CA certificates to trust for TLS to NATS"},
         text(&settings::cluster_ca)},
        {{"cluster.cert_file", "IOTHUB_CLUSTER_CERT_FILE", "--cluster-cert-file",
          "PEM client certificate for TLS to NATS"},
         text(&settings::cluster_cert)},
        {{"cluster.key_file", "IOTHUB_CLUSTER_KEY_FILE", "--cluster-key-file",
          "PEM private key of the NATS client certificate"},
         text(&settings::cluster_key)},
        {{"cluster.timeout_ms", "IOTHUB_CLUSTER_TIMEOUT_MS", "--cluster-timeout-ms",
          "How long a storage request to JetStream may take before the hub answers \"server "
          "busy\", 100 to 60000"},
         number_in(&settings::cluster_timeout_ms, 100, 60000)},
        {{"log.level", "IOTHUB_LOG_LEVEL", "--log-level", "trace, debug, info, warn, error"},
         one_of(&settings::log_level, {"trace", "debug", "info", "warn", "error", "off"})},
        {{"threads", "IOTHUB_THREADS", "--threads", "Network threads (0 = one per core)"},
         unsigned_number(&settings::threads, 256)},
        {{"blocking_threads", "IOTHUB_BLOCKING_THREADS", "--blocking-threads",
          "Threads for storage and disk work, 1 to 64 (registry, twins, C2D, file upload)"},
         [](settings& s, const std::string& v) -> std::optional<std::string> {
             unsigned n = 0;
             auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
             if (ec != std::errc{} || p != v.data() + v.size() || n < 1 || n > 64)
                 return "must be between 1 and 64";
             s.blocking_threads = n;
             return std::nullopt;
         }},
        {{"events.partitions", "IOTHUB_EVENT_PARTITIONS", "--event-partitions",
          "Telemetry partitions, 1 to 32 (fixed once the data directory has telemetry)"},
         [](settings& s, const std::string& v) -> std::optional<std::string> {
             int n = 0;
             auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
             if (ec != std::errc{} || p != v.data() + v.size() || n < 1 || n > 32)
                 return "an integer from 1 to 32";
             s.event_partitions = n;
             return std::nullopt;
         }},
        {{"events.retention", "IOTHUB_RETENTION", "--retention",
          "How long telemetry is kept: 90s, 30m, 24h (default), 7d"},
         [](settings& s, const std::string& v) -> std::optional<std::string> {
             std::uint64_t n = 0;
             auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
             std::string_view unit(p, static_cast<std::size_t>(v.data() + v.size() - p));
             const std::uint64_t per = unit == "s"   ? 1
                                       : unit == "m" ? 60
                                       : unit == "h" ? 3600
                                       : unit == "d" ? 86400
                                                     : 0;
             if (ec != std::errc{} || per == 0 || n == 0 || n * per > 366ull * 86400)
                 return "a duration such as 90s, 30m, 24h or 7d (up to a year)";
             s.retention = std::chrono::seconds(n * per);
             return std::nullopt;
         }},
        {{"events.retention_max_bytes", "IOTHUB_RETENTION_MAX_BYTES", "--retention-max-bytes",
          "Largest size of a telemetry partition before the oldest events go (0 = no limit)"},
         unsigned_number(&settings::retention_max_bytes, std::uint64_t{1} << 50)},
        // Up to 500: the hub lists groups (with their checkpoints) in one storage scan of 1000.
        {{"telemetry.max_consumer_groups", "IOTHUB_MAX_CONSUMER_GROUPS", "--max-consumer-groups",
          "Consumer groups the hub keeps, $Default included, 1 to 500"},
         number_in(&settings::max_consumer_groups, 1, 500)},
        {{"limits.max_request_body", "IOTHUB_MAX_REQUEST_BODY", "--max-request-body",
          "Largest HTTP request body in bytes"},
         unsigned_number(&settings::max_request_body, 64ull << 20)},
        {{"limits.max_modules_per_device", "IOTHUB_MAX_MODULES_PER_DEVICE",
          "--max-modules-per-device", "Modules a device may have"},
         unsigned_number(&settings::max_modules_per_device, 1000)},
        {{"limits.twin_tags_bytes", "IOTHUB_TWIN_TAGS_BYTES", "--twin-tags-bytes",
          "Largest twin tags section in bytes"},
         unsigned_number(&settings::twin_tags_bytes, 16ull << 20)},
        {{"limits.twin_desired_bytes", "IOTHUB_TWIN_DESIRED_BYTES", "--twin-desired-bytes",
          "Largest desired-properties section in bytes"},
         unsigned_number(&settings::twin_desired_bytes, 16ull << 20)},
        {{"limits.twin_reported_bytes", "IOTHUB_TWIN_REPORTED_BYTES", "--twin-reported-bytes",
          "Largest reported-properties section in bytes"},
         unsigned_number(&settings::twin_reported_bytes, 16ull << 20)},
        {{"limits.twin_depth", "IOTHUB_TWIN_DEPTH", "--twin-depth",
          "Deepest nesting of objects in a twin section"},
         unsigned_number(&settings::twin_depth, 64)},
        {{"limits.device_connects_per_second", "IOTHUB_DEVICE_CONNECTS_PER_SECOND",
          "--device-connects-per-second",
          "Device connects (MQTT, AMQP) the hub accepts per second; more are refused as "
          "throttled (0 = unlimited)"},
         unsigned_number(&settings::device_connects_per_second, 1000000)},
        {{"limits.device_connects_burst", "IOTHUB_DEVICE_CONNECTS_BURST", "--device-connects-burst",
          "Device connects accepted at once before the per-second rate applies (0 = the rate)"},
         unsigned_number(&settings::device_connects_burst, 1000000)},
        {{"routing.file", "IOTHUB_ROUTING_FILE", "--routing-file",
          "A routing document (ARM's properties.routing, JSON) put in force at start"},
         text(&settings::routing_file)},
        {{"routing.max_endpoints", "IOTHUB_ROUTING_MAX_ENDPOINTS", "--routing-max-endpoints",
          "Custom routing endpoints, every type together, 1 to 100"},
         number_in(&settings::routing_max_endpoints, 1, 100)},
        {{"routing.max_routes", "IOTHUB_ROUTING_MAX_ROUTES", "--routing-max-routes",
          "Routes, 1 to 1000"},
         number_in(&settings::routing_max_routes, 1, 1000)},
        {{"routing.max_enrichments", "IOTHUB_ROUTING_MAX_ENRICHMENTS", "--routing-max-enrichments",
          "Message enrichments, 0 to 100"},
         number_in(&settings::routing_max_enrichments, 0, 100)},
        {{"routing.dead_after_seconds", "IOTHUB_ROUTING_DEAD_AFTER_SECONDS",
          "--routing-dead-after-seconds",
          "Seconds an endpoint may keep failing before it is dead and its messages are dropped, "
          "10 to 604800"},
         seconds_in(&settings::routing_dead_after, 10, 604800)},
        {{"routing.decide_on_append", "IOTHUB_ROUTING_DECIDE_ON_APPEND",
          "--routing-decide-on-append",
          "Decide device messages' routes as they arrive and write each once, to its endpoints, "
          "where every route leads to a log the hub keeps (true/false); false: always through "
          "the ingest log"},
         boolean(&settings::routing_decide_on_append)},
        {{"routing.trusted_ca_file", "IOTHUB_ROUTING_TRUSTED_CA_FILE", "--routing-trusted-ca-file",
          "PEM CA certificates routing trusts besides the system's (webhooks, Event Grid, external "
          "event hubs)"},
         text(&settings::routing_trusted_ca_file)},
        {{"c2d.max_depth", "IOTHUB_C2D_MAX_DEPTH", "--c2d-max-depth",
          "Cloud-to-device messages a device's queue holds, 1 to 5000"},
         number_in(&settings::c2d_max_depth, 1, 5000)},
        {{"c2d.max_delivery_count", "IOTHUB_C2D_MAX_DELIVERY_COUNT", "--c2d-max-delivery-count",
          "Deliveries of a cloud-to-device message before it is dead-lettered, 1 to 100"},
         number_in(&settings::c2d_max_delivery_count, 1, 100)},
        {{"c2d.lock_timeout_seconds", "IOTHUB_C2D_LOCK_TIMEOUT_SECONDS",
          "--c2d-lock-timeout-seconds",
          "Seconds a delivered cloud-to-device message waits for its settlement, 5 to 3600"},
         seconds_in(&settings::c2d_lock_timeout, 5, 3600)},
        {{"c2d.default_ttl_seconds", "IOTHUB_C2D_DEFAULT_TTL_SECONDS", "--c2d-default-ttl-seconds",
          "Lifetime of a cloud-to-device message without an expiry time, 60 to 172800"},
         seconds_in(&settings::c2d_default_ttl, 60, 172800)},
        {{"c2d.max_ttl_seconds", "IOTHUB_C2D_MAX_TTL_SECONDS", "--c2d-max-ttl-seconds",
          "Longest lifetime a sender's expiry time may give, 60 to 172800"},
         seconds_in(&settings::c2d_max_ttl, 60, 172800)},
        {{"c2d.max_message_bytes", "IOTHUB_C2D_MAX_MESSAGE_BYTES", "--c2d-max-message-bytes",
          "Largest cloud-to-device message (body and properties), 1 to 1048576 bytes"},
         number_in(&settings::c2d_max_message_bytes, 1, 1024 * 1024)},
        {{"files.max_bytes", "IOTHUB_FILES_MAX_BYTES", "--files-max-bytes",
          "Largest uploaded file in bytes, 1 to 4294967296"},
         number_in(&settings::files_max_bytes, 1, std::uint64_t{4} << 30)},
        {{"files.sas_ttl_seconds", "IOTHUB_FILES_SAS_TTL_SECONDS", "--files-sas-ttl-seconds",
          "Lifetime of a file upload's SAS, 1 to 86400 seconds"},
         seconds_in(&settings::files_sas_ttl, 1, 86400)},
    };
    return defs;
}

result<void> apply(settings& s, const setting_def& def, const std::string& value,
                   std::string_view source) {
    if (auto expected = def.apply(s, value))
        return error(errc::argument_invalid, std::string(source) + ": " + def.info.key + " = '" +
                                                 value + "' is invalid: expected " + *expected +
                                                 ".");
    if (def.info.key == "listen.mqtt_plain_port") s.mqtt_plain_enabled = true;
    return {};
}

std::optional<std::string> node_text(const toml::node& node) {
    if (auto v = node.value<std::string>()) return *v;
    if (node.is_integer()) return std::to_string(*node.value<std::int64_t>());
    if (node.is_boolean()) return *node.value<bool>() ? "true" : "false";
    if (auto arr = node.as_array()) {
        std::string joined;
        for (const auto& item : *arr) {
            auto t = node_text(item);
            if (!t) return std::nullopt;
            joined += (joined.empty() ? "" : ",") + *t;
        }
        return joined;
    }
    return std::nullopt;
}

// Walks the TOML document so that unknown keys are reported rather than silently ignored.
result<void> apply_toml(settings& s, const toml::table& tbl, const std::string& prefix,
                        const std::string& file) {
    for (const auto& [k, node] : tbl) {
        std::string key =
            prefix.empty() ? std::string(k.str()) : prefix + "." + std::string(k.str());
        if (auto sub = node.as_table()) {
            if (key == "routing") {
                // The routing document itself, in TOML (endpoints, routes, fallbackRoute,
                // enrichments), beside the routing settings: handed on as JSON.
                toml::table document;
                toml::table settings_only;
                for (const auto& [rk, rv] : *sub) {
                    const auto name = std::string(rk.str());
                    if (name == "endpoints" || name == "routes" || name == "fallbackRoute" ||
                        name == "enrichments")
                        document.insert(rk, rv);
                    else
                        settings_only.insert(rk, rv);
                }
                if (!document.empty()) {
                    std::ostringstream json;
                    json << toml::json_formatter{document};
                    s.routing_document = json.str();
                }
                if (auto r = apply_toml(s, settings_only, key, file); !r) return r;
                continue;
            }
            if (auto r = apply_toml(s, *sub, key, file); !r) return r;
            continue;
        }
        const setting_def* def = nullptr;
        for (const auto& d : table())
            if (d.info.key == key) def = &d;
        if (!def) return error(errc::argument_invalid, file + ": unknown setting '" + key + "'.");
        auto value = node_text(node);
        if (!value)
            return error(errc::argument_invalid,
                         file + ": setting '" + key + "' has an unusable type.");
        if (auto r = apply(s, *def, *value, file); !r) return r;
    }
    return {};
}

}  // namespace

const std::vector<setting_info>& all_settings() {
    static const std::vector<setting_info> infos = [] {
        std::vector<setting_info> v;
        for (const auto& d : table()) v.push_back(d.info);
        return v;
    }();
    return infos;
}

env_lookup process_environment() {
    return [](const std::string& name) -> std::optional<std::string> {
        if (const char* v = std::getenv(name.c_str())) return std::string(v);
        return std::nullopt;
    };
}

result<settings> load(const std::optional<std::filesystem::path>& config_file,
                      const overrides& flags, const env_lookup& env) {
    settings s;
    // The data directory decides where the default config file lives, so find it first.
    std::filesystem::path data_dir = s.data_dir;
    if (auto v = env("IOTHUB_DATA_DIR")) data_dir = *v;
    if (auto it = flags.find("data_dir"); it != flags.end()) data_dir = it->second;

    std::optional<std::filesystem::path> file = config_file;
    if (!file) {
        if (auto v = env("IOTHUB_CONFIG")) file = *v;
    }
    bool required = file.has_value();
    if (!file) file = data_dir / "iothub.toml";
    std::error_code ec;
    if (std::filesystem::exists(*file, ec)) {
        try {
            auto doc = toml::parse_file(file->string());
            if (auto r = apply_toml(s, doc, "", file->string()); !r) return r.error();
        } catch (const toml::parse_error& e) {
            return error(errc::argument_invalid, file->string() + ": " +
                                                     std::string(e.description()) + " (line " +
                                                     std::to_string(e.source().begin.line) + ")");
        }
    } else if (required) {
        return error(errc::argument_invalid,
                     "Configuration file " + file->string() + " not found.");
    }
    for (const auto& def : table()) {
        if (auto v = env(def.info.env)) {
            if (auto r = apply(s, def, *v, def.info.env); !r) return r.error();
        }
    }
    for (const auto& [key, value] : flags) {
        const setting_def* def = nullptr;
        for (const auto& d : table())
            if (d.info.key == key) def = &d;
        if (!def) return error(errc::argument_invalid, "Unknown setting '" + key + "'.");
        if (auto r = apply(s, *def, value, def->info.flag); !r) return r.error();
    }
    if (s.tls_cert.empty() != s.tls_key.empty())
        return error(errc::argument_invalid, "tls.cert and tls.key must be given together.");
    if (s.c2d_default_ttl > s.c2d_max_ttl)
        return error(errc::argument_invalid,
                     "c2d.default_ttl_seconds must not exceed c2d.max_ttl_seconds.");
    return s;
}

}  // namespace iothub::config
