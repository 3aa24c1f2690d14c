// The routing configuration: what Azure's ARM `properties.routing` says (endpoints, routes, the
// fallback route, enrichments), in that JSON shape so a document can be pasted from an ARM or
// Bicep template, plus the hub's own endpoint types (webhooks, kafka, nats). This module owns the
// model, reading and validating a document as a whole (the first fault is named and nothing of the
// document is kept), and writing it back. No I/O.
//
// Endpoint names are unique across every type, compared ignoring case, and may not be Azure's
// reserved `events`, `fileNotifications`, `$default` or the hub's `eventgrid`. Route names are
// unique ignoring case. A route names exactly one endpoint: a custom one, `events` (the built-in
// stream) or `eventgrid` (DeviceMessages only: telemetry to Event Grid subscriptions).
#pragma once

#include "common/error.hpp"
#include "query/query.hpp"

#include <boost/json/value.hpp>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace iothub::routing {

// ARM's RoutingSource values the hub serves (DeviceJobLifecycleEvents is accepted and carries
// nothing until jobs exist).
enum class source : std::uint8_t {
    device_messages,
    twin_change_events,
    device_lifecycle_events,
    device_connection_state_events,
    device_job_lifecycle_events,
};
inline constexpr std::size_t source_count = 5;
std::string_view to_string(source s);                      // "DeviceMessages", ...
std::optional<source> source_from(std::string_view name);  // case-insensitive

// The endpoint names that need no declaration.
inline constexpr std::string_view builtin_events = "events";
inline constexpr std::string_view builtin_eventgrid = "eventgrid";

enum class endpoint_kind : std::uint8_t { event_hub, storage_container, webhook, kafka, nats };
std::string_view to_string(endpoint_kind k);  // the ARM collection: "eventHubs", ...

enum class blob_encoding : std::uint8_t { avro, avro_deflate, json };

struct endpoint {
    endpoint_kind kind = endpoint_kind::event_hub;
    std::string name;
    // Everything the document said about it, kept to be written back as it was given (ARM
    // fields the hub does not use, such as subscriptionId or resourceGroup, included).
    boost::json::object raw;

    // eventHubs: hosted by the hub when there is no connection string (or endpointUri).
    std::string connection_string;  // may carry EntityPath
    std::string entity_path;        // `entityPath`, when the connection string has none
    bool hosted() const { return kind == endpoint_kind::event_hub && connection_string.empty(); }

    // storageContainers: hosted in the hub's own Blob endpoint when there is no connection string.
    std::string container_name;
    std::string file_name_format = "{iothub}/{partition}/{YYYY}/{MM}/{DD}/{HH}/{mm}";
    std::uint32_t batch_frequency_seconds = 300;
    std::uint64_t max_chunk_bytes = 314572800;
    blob_encoding encoding = blob_encoding::avro;

    // webhooks: POST to endpoint_uri (http or https), with these extra headers.
    std::string endpoint_uri;
    std::vector<std::pair<std::string, std::string>> headers;

    // kafka: bootstrap servers ("host:port,..."), topic, and librdkafka properties to pass on.
    std::string brokers;
    std::string topic;
    std::map<std::string, std::string> kafka_properties;

    // nats: publish to `subject` (a template: {deviceId} and {iothub} are replaced, escaped so
    // that each stays one token) on these servers; none means the cluster's own NATS (cluster
    // mode only). `jetstream`: wait for a stream's acknowledgement of every message (which also
    // drops repeats by message id); otherwise core publish, flushed to the server.
    std::vector<std::string> servers;
    std::string subject;
    bool jetstream = false;
    std::string credentials_file, user, password, token;
    std::string ca_file, cert_file, key_file;
};

struct route {
    std::string name;
    source from = source::device_messages;
    std::string condition_text = "true";
    query::condition condition;  // compiled condition_text
    std::string endpoint;        // as the document spelled it
    bool enabled = true;
};

struct enrichment {
    std::string key;
    std::string value;  // static text, $iothubname, or $twin.tags.* / $twin.properties.*
    std::vector<std::string> endpoints;
};

struct routing_config {
    std::vector<endpoint> endpoints;
    std::vector<route> routes;
    // The fallback route (source DeviceMessages): messages no enabled DeviceMessages route matched
    // go to its endpoint. Enabled by default, to `events`.
    route fallback;
    std::vector<enrichment> enrichments;

    const endpoint* find_endpoint(std::string_view name) const;  // case-insensitive
    // Messages of `s` are delivered only through routes (device messages stop going straight to
    // the built-in stream): any enabled route of that source exists, or (device messages) the
    // fallback is off or goes elsewhere, or an enrichment applies to `events`.
    bool routes_source(source s) const;
};

// Limits (Azure's paid-tier values by default), settings of the hub.
struct limits {
    std::size_t max_endpoints = 10;  // custom ones, every type together
    std::size_t max_routes = 100;
    std::size_t max_enrichments = 10;
    std::size_t max_name_length = 64;
    std::size_t max_condition_length = 1024;
    std::uint32_t min_batch_frequency_seconds = 1;  // Azure: 60
    std::uint32_t max_batch_frequency_seconds = 720;
};

// The configuration of a new hub: no endpoints, no routes, fallback on to `events`.
routing_config default_config();

// Reads a document as `properties.routing` shows it; `{"properties":{"routing":...}}` and
// `{"routing":...}` wrappers are accepted too. errc::argument_invalid names the first fault, e.g.
// "Route 'hot' names endpoint 'nowhere', which does not exist.".
result<routing_config> parse(const boost::json::value& document, const limits& l = {});
result<routing_config> parse(std::string_view json_text, const limits& l = {});

// The document, in ARM's shape: `endpoints` with all five ARM collections plus `webhooks`,
// `kafka` and `nats`, `routes`, `fallbackRoute`, `enrichments`. parse(to_json(c)) gives back c.
boost::json::object to_json(const routing_config& c);

}  // namespace iothub::routing
