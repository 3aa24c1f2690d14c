// Message routing and Event Grid subscriptions, in the spirit of `az iot hub message-endpoint`,
// `message-route`, `message-enrichment` and `az eventgrid event-subscription`.
//
// Every routing change is a read-modify-write of the whole document (GET /routing, change,
// PUT /routing): the hub validates the document as a whole and names the fault, so the checks
// live in one place and this file only refuses what it cannot express (unknown names, options of
// another endpoint type). The hub keeps no version of the document, so two edits made at the same
// time race and the last PUT wins.
#include "cli/detail/command_support.hpp"
#include "common/encoding.hpp"

#include <boost/json.hpp>

#include <algorithm>
#include <array>
#include <iostream>
#include <optional>

namespace iothub::cli::detail {
namespace {

const std::string routing_target = "/routing?api-version=2021-04-12";

json::object get_routing(const hub_access& hub) {
    auto v = request_json(hub, "GET", routing_target);
    if (!v.is_object()) throw failure{"The hub answered without a routing document."};
    return std::move(v.get_object());
}

// Returns the document in force, as the hub answers the PUT.
json::object put_routing(const hub_access& hub, const std::string& body) {
    auto v = request_json(hub, "PUT", routing_target, body);
    if (!v.is_object()) throw failure{"The hub answered without a routing document."};
    return std::move(v.get_object());
}

json::array& array_at(json::object& o, std::string_view key) {
    auto& v = o[key];
    if (!v.is_array()) v = json::array();
    return v.get_array();
}

json::object& object_at(json::object& o, std::string_view key) {
    auto& v = o[key];
    if (!v.is_object()) v = json::object();
    return v.get_object();
}

std::string string_at(const json::value& v, std::string_view key) {
    if (!v.is_object()) return {};
    const auto* f = v.get_object().if_contains(key);
    return f && f->is_string() ? std::string(f->get_string()) : std::string();
}

std::optional<std::size_t> find_named(const json::array& a, std::string_view field,
                                      std::string_view name) {
    for (std::size_t i = 0; i < a.size(); ++i)
        if (iequals(string_at(a[i], field), name)) return i;
    return std::nullopt;
}

bool names_endpoint(const json::value& item, std::string_view endpoint) {
    if (!item.is_object()) return false;
    const auto* names = item.get_object().if_contains("endpointNames");
    if (!names || !names->is_array()) return false;
    for (const auto& n : names->get_array())
        if (n.is_string() && iequals(n.get_string(), endpoint)) return true;
    return false;
}

bool parse_bool(const std::string& text) {
    return iequals(text, "true");
}

std::string in_quotes(std::string_view s) {
    return "'" + std::string(s) + "'";
}

// The CLI's endpoint types and the document's collections they live in.
struct endpoint_type {
    std::string_view option;
    std::string_view collection;
};
constexpr std::array<endpoint_type, 5> endpoint_types{{{"eventhub", "eventHubs"},
                                                       {"storage", "storageContainers"},
                                                       {"webhook", "webhooks"},
                                                       {"kafka", "kafka"},
                                                       {"nats", "nats"}}};

std::string_view collection_of(std::string_view type) {
    for (const auto& t : endpoint_types)
        if (t.option == type) return t.collection;
    throw failure{"Unknown endpoint type " + in_quotes(type) + "."};
}

struct located {
    json::array* collection;
    std::size_t index;
};

// Searches every collection, the ones the hub does not serve included: names are unique across
// all of them.
std::optional<located> find_endpoint(json::object& doc, std::string_view name) {
    for (auto& [key, v] : object_at(doc, "endpoints")) {
        if (!v.is_array()) continue;
        if (auto i = find_named(v.get_array(), "name", name)) return located{&v.get_array(), *i};
    }
    return std::nullopt;
}

std::vector<std::string> users_of(json::object& doc, std::string_view endpoint) {
    std::vector<std::string> out;
    for (const auto& r : array_at(doc, "routes"))
        if (names_endpoint(r, endpoint)) out.push_back("route " + in_quotes(string_at(r, "name")));
    if (const auto* f = doc.if_contains("fallbackRoute"); f && names_endpoint(*f, endpoint))
        out.emplace_back("the fallback route");
    for (const auto& e : array_at(doc, "enrichments"))
        if (names_endpoint(e, endpoint))
            out.push_back("enrichment " + in_quotes(string_at(e, "key")));
    return out;
}

std::string joined(const std::vector<std::string>& parts) {
    std::string out;
    for (std::size_t i = 0; i < parts.size(); ++i) {
        if (i) out += i + 1 == parts.size() ? " and " : ", ";
        out += parts[i];
    }
    return out;
}

CLI::Option* name_option(CLI::App* c, std::string& target, const std::string& what) {
    return c->add_option("name,-n,--name", target, what)->required();
}

CLI::Option* enabled_option(CLI::App* c, std::string& target, const std::string& what) {
    return c->add_option("--enabled", target, what)
        ->transform(CLI::IsMember({"true", "false"}, CLI::ignore_case));
}

void add_document_commands(CLI::App& app, const std::shared_ptr<invocation>& inv,
                           const runner& run) {
    struct document_options {
        std::string file, enabled, endpoint, condition;
    };
    auto o = std::make_shared<document_options>();
    auto* group = app.add_subcommand(
        "routing", "The routing document: endpoints, routes, fallback route, enrichments");
    group->require_subcommand(1);

    group->add_subcommand("show", "Print the routing document in force")->final_callback([=] {
        run([=] { print(get_routing(connect(*inv))); });
    });

    auto* set = group->add_subcommand(
        "set", "Replace the routing document as a whole (ARM's properties.routing shape)");
    set->add_option("-f,--file", o->file, "The document's file, - for stdin")->required();
    set->final_callback([=] {
        run([=] {
            // Sent as written: the hub accepts the comments and trailing commas of ARM templates.
            print(put_routing(connect(*inv), read_input(o->file)));
        });
    });

    auto* fallback = group->add_subcommand(
        "fallback", "Turn the fallback route on or off, or change where it leads");
    enabled_option(fallback, o->enabled, "true or false")->required();
    fallback->add_option("-e,--endpoint", o->endpoint, "Where unmatched messages go (events...)");
    fallback->add_option("-c,--condition", o->condition, "The fallback route's condition");
    fallback->final_callback([=] {
        run([=] {
            auto hub = connect(*inv);
            auto doc = get_routing(hub);
            auto& f = object_at(doc, "fallbackRoute");
            f["isEnabled"] = parse_bool(o->enabled);
            if (!o->endpoint.empty()) f["endpointNames"] = json::array{json::value(o->endpoint)};
            if (!o->condition.empty()) f["condition"] = o->condition;
            print(put_routing(hub, json::serialize(doc))["fallbackRoute"]);
        });
    });
}

void add_endpoint_commands(CLI::App& app, const std::shared_ptr<invocation>& inv,
                           const runner& run) {
    struct endpoint_options {
        std::string name, type, connection_string, entity_path, container, encoding,
            file_name_format, url, brokers, topic, servers, subject;
        bool jetstream = false;
        std::int64_t batch_frequency = 0, chunk_size = 0;
        std::vector<std::string> headers, properties;
    };
    auto o = std::make_shared<endpoint_options>();
    auto* group = app.add_subcommand("endpoint", "Custom routing endpoints");
    group->require_subcommand(1);

    auto* create = group->add_subcommand("create", "Add an endpoint to the routing document");
    name_option(create, o->name, "Endpoint name (unique across all types, ignoring case)");
    create->add_option("-t,--type", o->type, "eventhub, storage, webhook, kafka or nats")
        ->required()
        ->transform(
            CLI::IsMember({"eventhub", "storage", "webhook", "kafka", "nats"}, CLI::ignore_case));
    // An option of another type would silently be left out of the document, so it is refused.
    struct typed_option {
        CLI::Option* option;
        std::vector<std::string_view> types;
    };
    auto typed = std::make_shared<std::vector<typed_option>>();
    auto add = [&](std::vector<std::string_view> types, CLI::Option* option) {
        typed->push_back({option, std::move(types)});
    };
    add({"eventhub", "storage"},
        create->add_option(
            "--connection-string", o->connection_string,
            "eventhub, storage: the external service (omitted: hosted by the hub); the hub's "
            "own connection string then goes before `endpoint`"));
    add({"eventhub"}, create->add_option(
                          "--entity-path", o->entity_path,
                          "eventhub: the event hub, when the connection string has no EntityPath"));
    add({"storage"}, create->add_option("--container", o->container, "storage: container name"));
    add({"storage"},
        create
            ->add_option("--encoding", o->encoding, "storage: avro (default), avrodeflate or json")
            ->transform(CLI::IsMember({"avro", "avrodeflate", "json"}, CLI::ignore_case)));
    add({"storage"}, create->add_option("--batch-frequency", o->batch_frequency,
                                        "storage: seconds between blobs (default 300)"));
    add({"storage"}, create->add_option("--chunk-size", o->chunk_size,
                                        "storage: largest blob in bytes (default 314572800)"));
    add({"storage"},
        create->add_option(
            "--file-name-format", o->file_name_format,
            "storage: blob names, e.g. {iothub}/{partition}/{YYYY}/{MM}/{DD}/{HH}/{mm}"));
    add({"webhook"}, create->add_option("--url", o->url, "webhook: the http:// or https:// URL"));
    add({"webhook"}, create->add_option("--header", o->headers,
                                        "webhook: 'Name: value' sent with each POST (repeatable)"));
    add({"kafka"}, create->add_option("--brokers", o->brokers, "kafka: host:port[,host:port...]"));
    add({"kafka"}, create->add_option("--topic", o->topic, "kafka: topic"));
    add({"kafka"}, create->add_option("--property", o->properties,
                                      "kafka: librdkafka property key=value (repeatable)"));
    add({"nats"}, create->add_option("--servers", o->servers,
                                     "nats: nats://host:port[,...] (omitted: the cluster's own)"));
    add({"nats"}, create->add_option("--subject", o->subject,
                                     "nats: subject template, e.g. telemetry.{deviceId}"));
    add({"nats"}, create->add_flag("--jetstream", o->jetstream,
                                   "nats: wait for a JetStream stream's acknowledgement"));
    create->final_callback([=] {
        run([=] {
            for (const auto& t : *typed)
                if (t.option->count() &&
                    std::find(t.types.begin(), t.types.end(), o->type) == t.types.end())
                    throw failure{t.option->get_name() + " does not apply to " + o->type +
                                  " endpoints."};
            json::object e{{"name", o->name}};
            if (!o->connection_string.empty()) e["connectionString"] = o->connection_string;
            if (o->type == "eventhub") {
                if (!o->entity_path.empty()) e["entityPath"] = o->entity_path;
            } else if (o->type == "storage") {
                if (o->container.empty()) throw failure{"storage endpoints need --container."};
                e["containerName"] = o->container;
                if (!o->encoding.empty())
                    e["encoding"] = o->encoding == "avrodeflate" ? "avroDeflate"
                                    : o->encoding == "json"      ? "JSON"
                                                                 : "avro";
                if (!o->file_name_format.empty()) e["fileNameFormat"] = o->file_name_format;
                if (create->get_option("--batch-frequency")->count())
                    e["batchFrequencyInSeconds"] = o->batch_frequency;
                if (create->get_option("--chunk-size")->count())
                    e["maxChunkSizeInBytes"] = o->chunk_size;
            } else if (o->type == "webhook") {
                if (o->url.empty()) throw failure{"webhook endpoints need --url."};
                e["endpointUri"] = o->url;
                json::object headers;
                for (const auto& h : o->headers) {
                    auto colon = h.find(':');
                    if (colon == 0 || colon == std::string::npos)
                        throw failure{"--header takes 'Name: value', not '" + h + "'."};
                    auto value = h.substr(colon + 1);
                    value.erase(0, value.find_first_not_of(" \t"));
                    headers[h.substr(0, colon)] = value;
                }
                if (!headers.empty()) e["headers"] = std::move(headers);
            } else if (o->type == "nats") {
                if (o->subject.empty()) throw failure{"nats endpoints need --subject."};
                if (!o->servers.empty()) e["servers"] = o->servers;
                e["subject"] = o->subject;
                e["jetStream"] = o->jetstream;
            } else {
                if (o->brokers.empty() || o->topic.empty())
                    throw failure{"kafka endpoints need --brokers and --topic."};
                e["brokers"] = o->brokers;
                e["topic"] = o->topic;
                json::object properties;
                for (const auto& p : o->properties) {
                    auto [k, v] = key_value(p, "--property");
                    properties[k] = v;
                }
                if (!properties.empty()) e["properties"] = std::move(properties);
            }
            auto hub = connect(*inv);
            auto doc = get_routing(hub);
            if (auto existing = find_endpoint(doc, o->name))
                throw failure{
                    "Endpoint " +
                    in_quotes(string_at((*existing->collection)[existing->index], "name")) +
                    " already exists."};
            auto collection = collection_of(o->type);
            array_at(object_at(doc, "endpoints"), collection).push_back(e);
            auto stored = put_routing(hub, json::serialize(doc));
            auto& now = array_at(object_at(stored, "endpoints"), collection);
            auto i = find_named(now, "name", o->name);
            print(i ? now[*i] : json::value(e));
        });
    });

    auto* list = group->add_subcommand(
        "list", "List the endpoints: the collections by type, or one type's array with --type");
    list->add_option("-t,--type", o->type, "eventhub, storage, webhook, kafka or nats")
        ->transform(
            CLI::IsMember({"eventhub", "storage", "webhook", "kafka", "nats"}, CLI::ignore_case));
    list->final_callback([=] {
        run([=] {
            auto doc = get_routing(connect(*inv));
            auto& endpoints = object_at(doc, "endpoints");
            if (o->type.empty())
                print(endpoints);
            else
                print(array_at(endpoints, collection_of(o->type)));
        });
    });

    auto* show = group->add_subcommand("show", "Show an endpoint");
    name_option(show, o->name, "Endpoint name");
    show->final_callback([=] {
        run([=] {
            auto doc = get_routing(connect(*inv));
            auto e = find_endpoint(doc, o->name);
            if (!e) throw failure{"No endpoint " + in_quotes(o->name) + "."};
            print((*e->collection)[e->index]);
        });
    });

    auto* del = group->add_subcommand("delete", "Remove an endpoint no route or enrichment names");
    name_option(del, o->name, "Endpoint name");
    del->final_callback([=] {
        run([=] {
            auto hub = connect(*inv);
            auto doc = get_routing(hub);
            auto e = find_endpoint(doc, o->name);
            if (!e) throw failure{"No endpoint " + in_quotes(o->name) + "."};
            if (auto users = users_of(doc, o->name); !users.empty())
                throw failure{"Endpoint " + in_quotes(o->name) + " is still named by " +
                              joined(users) + "; change or delete " +
                              (users.size() == 1 ? "it" : "them") + " first."};
            e->collection->erase(e->collection->begin() + static_cast<std::ptrdiff_t>(e->index));
            put_routing(hub, json::serialize(doc));
        });
    });

    auto* health = group->add_subcommand(
        "health", "Endpoint health: healthy, unhealthy, degraded, dead or unknown (never tried)");
    health->add_option("-n,--name", o->name, "Only this endpoint");
    health->final_callback([=] {
        run([=] {
            auto v = request_json(connect(*inv), "GET",
                                  "/routing/endpoints/health?api-version=2021-04-12");
            json::array all;
            if (v.is_object())
                if (const auto* value = v.get_object().if_contains("value");
                    value && value->is_array())
                    all = value->get_array();
            if (o->name.empty()) {
                print(all);
                return;
            }
            auto i = find_named(all, "endpointId", o->name);
            if (!i) throw failure{"No endpoint " + in_quotes(o->name) + "."};
            print(all[*i]);
        });
    });
}

const std::vector<std::string> route_sources{
    "DeviceMessages", "TwinChangeEvents", "DeviceLifecycleEvents", "DeviceConnectionStateEvents"};

void add_route_commands(CLI::App& app, const std::shared_ptr<invocation>& inv, const runner& run) {
    struct route_options {
        std::string name, source, endpoint, condition, enabled, body, twin;
        std::vector<std::string> app_properties, system_properties;
    };
    auto o = std::make_shared<route_options>();
    auto* group = app.add_subcommand("route", "Message routes");
    group->require_subcommand(1);
    auto source_option = [&](CLI::App* c) {
        return c
            ->add_option("-s,--source", o->source,
                         "DeviceMessages, TwinChangeEvents, "
                         "DeviceLifecycleEvents or "
                         "DeviceConnectionStateEvents")
            ->transform(CLI::IsMember(route_sources, CLI::ignore_case));
    };
    // Where a route exists (show, update, delete): the document and the route's index in it.
    auto locate = [](json::object& doc, const std::string& name) {
        auto i = find_named(array_at(doc, "routes"), "name", name);
        if (!i) throw failure{"No route " + in_quotes(name) + "."};
        return *i;
    };

    auto* create = group->add_subcommand("create", "Add a route");
    name_option(create, o->name, "Route name (unique ignoring case)");
    source_option(create)->required();
    create->add_option("-e,--endpoint", o->endpoint, "The endpoint it leads to (or events)")
        ->required();
    create->add_option("-c,--condition", o->condition, "Which messages (default: true, all)");
    enabled_option(create, o->enabled, "true (default) or false");
    create->final_callback([=] {
        run([=] {
            auto hub = connect(*inv);
            auto doc = get_routing(hub);
            auto& routes = array_at(doc, "routes");
            if (auto i = find_named(routes, "name", o->name))
                throw failure{"Route " + in_quotes(string_at(routes[*i], "name")) +
                              " already exists."};
            routes.push_back(
                json::object{{"name", o->name},
                             {"source", o->source},
                             {"condition", o->condition.empty() ? "true" : o->condition},
                             {"endpointNames", json::array{json::value(o->endpoint)}},
                             {"isEnabled", o->enabled.empty() || parse_bool(o->enabled)}});
            auto stored = put_routing(hub, json::serialize(doc));
            auto& now = array_at(stored, "routes");
            auto i = find_named(now, "name", o->name);
            print(i ? now[*i] : routes.back());
        });
    });

    auto* list = group->add_subcommand("list", "List the routes");
    source_option(list)->description("Only routes of this source");
    list->final_callback([=] {
        run([=] {
            auto doc = get_routing(connect(*inv));
            json::array out;
            for (const auto& r : array_at(doc, "routes"))
                if (o->source.empty() || iequals(string_at(r, "source"), o->source))
                    out.push_back(r);
            print(out);
        });
    });

    auto* show = group->add_subcommand("show", "Show a route");
    name_option(show, o->name, "Route name");
    show->final_callback([=] {
        run([=] {
            auto doc = get_routing(connect(*inv));
            auto i = locate(doc, o->name);
            print(array_at(doc, "routes")[i]);
        });
    });

    auto* update = group->add_subcommand("update",
                                         "Change a route's source, endpoint, "
                                         "condition or whether it is enabled");
    name_option(update, o->name, "Route name");
    source_option(update);
    update->add_option("-e,--endpoint", o->endpoint, "The endpoint it leads to");
    update->add_option("-c,--condition", o->condition, "Which messages");
    enabled_option(update, o->enabled, "true or false");
    update->final_callback([=] {
        run([=] {
            if (o->source.empty() && o->endpoint.empty() && o->condition.empty() &&
                o->enabled.empty())
                throw failure{"Give --source, --endpoint, --condition or --enabled."};
            auto hub = connect(*inv);
            auto doc = get_routing(hub);
            auto i = locate(doc, o->name);
            auto& r = array_at(doc, "routes")[i].as_object();
            if (!o->source.empty()) r["source"] = o->source;
            if (!o->endpoint.empty()) r["endpointNames"] = json::array{json::value(o->endpoint)};
            if (!o->condition.empty()) r["condition"] = o->condition;
            if (!o->enabled.empty()) r["isEnabled"] = parse_bool(o->enabled);
            auto stored = put_routing(hub, json::serialize(doc));
            auto& now = array_at(stored, "routes");
            auto j = find_named(now, "name", o->name);
            print(j ? now[*j] : json::value(r));
        });
    });

    auto* del = group->add_subcommand("delete", "Remove a route");
    name_option(del, o->name, "Route name");
    del->final_callback([=] {
        run([=] {
            auto hub = connect(*inv);
            auto doc = get_routing(hub);
            auto i = locate(doc, o->name);
            auto& routes = array_at(doc, "routes");
            routes.erase(routes.begin() + static_cast<std::ptrdiff_t>(i));
            put_routing(hub, json::serialize(doc));
        });
    });

    auto* test = group->add_subcommand(
        "test", "Evaluate a route's condition against a message: prints true, false or undefined");
    auto* by_name = test->add_option("-n,--name", o->name, "A stored route");
    auto* by_condition = test->add_option("-c,--condition", o->condition, "A condition to try");
    by_name->excludes(by_condition);
    source_option(test)
        ->description("With --condition: the source (default DeviceMessages)")
        ->excludes(by_name);
    test->add_option("-b,--body", o->body, "The message body");
    test->add_option("--app-property", o->app_properties,
                     "Application property key=value (repeatable)");
    test->add_option("--system-property", o->system_properties,
                     "System property key=value, e.g. contentType=application/json (repeatable)");
    test->add_option("--twin", o->twin, "The device twin, as JSON or @file, for $twin conditions");
    test->final_callback([=] {
        run([=] {
            if (o->name.empty() && o->condition.empty())
                throw failure{"Give --name (a stored route) or --condition."};
            auto hub = connect(*inv);
            json::value route;
            if (!o->name.empty()) {
                auto doc = get_routing(hub);
                auto i = locate(doc, o->name);
                route = array_at(doc, "routes")[i];
            } else {
                // The endpoint does not matter to the evaluation; the built-in one is always valid.
                route = json::object{{"name", "test"},
                                     {"source", o->source.empty() ? "DeviceMessages" : o->source},
                                     {"condition", o->condition},
                                     {"endpointNames", json::array{"events"}},
                                     {"isEnabled", true}};
            }
            json::object app_properties, system_properties;
            for (const auto& p : o->app_properties) {
                auto [k, v] = key_value(p, "--app-property");
                app_properties[k] = v;
            }
            for (const auto& p : o->system_properties) {
                auto [k, v] = key_value(p, "--system-property");
                system_properties[k] = v;
            }
            json::object body{{"message", json::object{{"body", o->body},
                                                       {"appProperties", app_properties},
                                                       {"systemProperties", system_properties}}},
                              {"route", route}};
            if (!o->twin.empty()) {
                auto twin = json_argument(o->twin, "--twin");
                if (!twin.is_object()) throw failure{"--twin must be a JSON object."};
                body["twin"] = std::move(twin);
            }
            auto answer =
                request_json(hub, "POST", "/routing/routes/$testnew?api-version=2021-04-12",
                             json::serialize(body));
            auto result = string_at(answer, "result");
            if (result.empty()) throw failure{"The hub answered the test without a result."};
            std::cout << result << "\n";
        });
    });
}

void add_enrichment_commands(CLI::App& app, const std::shared_ptr<invocation>& inv,
                             const runner& run) {
    struct enrichment_options {
        std::string key, value;
        std::vector<std::string> endpoints;
    };
    auto o = std::make_shared<enrichment_options>();
    auto* group = app.add_subcommand(
        "enrichment", "Message enrichments: properties stamped on messages sent to endpoints");
    group->require_subcommand(1);

    auto* create = group->add_subcommand("create", "Add an enrichment");
    create->add_option("-k,--key", o->key, "The application property's name")->required();
    create
        ->add_option("-v,--value", o->value,
                     "Static text, $iothubname or $twin.tags.<path> / "
                     "$twin.properties.<desired|reported>.<path>")
        ->required();
    create->add_option("-e,--endpoints", o->endpoints, "Endpoint names, comma-separated")
        ->required()
        ->delimiter(',');
    create->final_callback([=] {
        run([=] {
            auto hub = connect(*inv);
            auto doc = get_routing(hub);
            auto& enrichments = array_at(doc, "enrichments");
            if (auto i = find_named(enrichments, "key", o->key))
                throw failure{"Enrichment " + in_quotes(string_at(enrichments[*i], "key")) +
                              " already exists; delete it first."};
            json::array names;
            for (const auto& e : o->endpoints) names.emplace_back(e);
            enrichments.push_back(
                json::object{{"key", o->key}, {"value", o->value}, {"endpointNames", names}});
            auto stored = put_routing(hub, json::serialize(doc));
            auto& now = array_at(stored, "enrichments");
            auto i = find_named(now, "key", o->key);
            print(i ? now[*i] : enrichments.back());
        });
    });

    group->add_subcommand("list", "List the enrichments")->final_callback([=] {
        run([=] {
            auto doc = get_routing(connect(*inv));
            print(array_at(doc, "enrichments"));
        });
    });

    auto* del = group->add_subcommand(
        "delete", "Remove an enrichment, or with --endpoints only for those endpoints");
    del->add_option("-k,--key", o->key, "The enrichment's key")->required();
    del->add_option("-e,--endpoints", o->endpoints, "Only for these endpoints, comma-separated")
        ->delimiter(',');
    del->final_callback([=] {
        run([=] {
            auto hub = connect(*inv);
            auto doc = get_routing(hub);
            auto& enrichments = array_at(doc, "enrichments");
            if (!find_named(enrichments, "key", o->key))
                throw failure{"No enrichment " + in_quotes(o->key) + "."};
            for (const auto& endpoint : o->endpoints) {
                bool found = false;
                for (const auto& e : enrichments)
                    found = found ||
                            (iequals(string_at(e, "key"), o->key) && names_endpoint(e, endpoint));
                if (!found)
                    throw failure{"Enrichment " + in_quotes(o->key) +
                                  " does not apply to endpoint " + in_quotes(endpoint) + "."};
            }
            json::array kept;
            for (auto& e : enrichments) {
                if (!iequals(string_at(e, "key"), o->key)) {
                    kept.push_back(std::move(e));
                    continue;
                }
                if (o->endpoints.empty()) continue;
                json::array names;
                for (auto& n : array_at(e.as_object(), "endpointNames")) {
                    bool removed = false;
                    for (const auto& endpoint : o->endpoints)
                        removed = removed || (n.is_string() && iequals(n.get_string(), endpoint));
                    if (!removed) names.push_back(std::move(n));
                }
                // An enrichment for no endpoint is refused by the hub; it is simply gone.
                if (names.empty()) continue;
                e.as_object()["endpointNames"] = std::move(names);
                kept.push_back(std::move(e));
            }
            enrichments = std::move(kept);
            put_routing(hub, json::serialize(doc));
        });
    });
}

void add_event_subscription_commands(CLI::App& app, const std::shared_ptr<invocation>& inv,
                                     const runner& run) {
    struct subscription_options {
        std::string name, url, begins_with, ends_with, schema;
        std::vector<std::string> event_types;
        int max_attempts = 0, ttl_minutes = 0;
    };
    auto o = std::make_shared<subscription_options>();
    auto* group = app.add_subcommand("event-subscription",
                                     "Event Grid subscriptions: device events POSTed to webhooks");
    group->require_subcommand(1);
    auto target = [](const std::string& name) {
        return "/eventSubscriptions/" + percent_encode(name) + "?api-version=2021-04-12";
    };

    auto* create = group->add_subcommand(
        "create", "Create or replace a subscription; the hub then runs the validation handshake");
    name_option(create, o->name, "Subscription name (letters, digits and hyphens)");
    create->add_option("-u,--url", o->url, "The webhook's http:// or https:// URL")->required();
    create
        ->add_option("--event-types", o->event_types,
                     "Comma-separated: DeviceCreated, DeviceDeleted, DeviceConnected, "
                     "DeviceDisconnected, DeviceTelemetry (Microsoft.Devices. may be left off; "
                     "default: all)")
        ->delimiter(',');
    create->add_option("--subject-begins-with", o->begins_with, "e.g. devices/sensor-");
    create->add_option("--subject-ends-with", o->ends_with, "Subject suffix");
    create->add_option("--schema", o->schema, "eventgrid (default) or cloudevents")
        ->transform(CLI::IsMember({"eventgrid", "cloudevents"}, CLI::ignore_case));
    auto* attempts = create->add_option("--max-attempts", o->max_attempts,
                                        "Delivery attempts per event, 1-30 (default 30)");
    auto* ttl = create->add_option("--ttl-minutes", o->ttl_minutes,
                                   "Minutes an event is retried, 1-1440 (default 1440)");
    create->final_callback([=] {
        run([=] {
            json::object properties{
                {"destination",
                 json::object{{"endpointType", "WebHook"},
                              {"properties", json::object{{"endpointUrl", o->url}}}}}};
            json::object filter;
            if (!o->event_types.empty()) {
                json::array types;
                for (const auto& t : o->event_types)
                    types.emplace_back(t.find('.') == std::string::npos ? "Microsoft.Devices." + t
                                                                        : t);
                filter["includedEventTypes"] = std::move(types);
            }
            if (!o->begins_with.empty()) filter["subjectBeginsWith"] = o->begins_with;
            if (!o->ends_with.empty()) filter["subjectEndsWith"] = o->ends_with;
            if (!filter.empty()) properties["filter"] = std::move(filter);
            if (!o->schema.empty())
                properties["eventDeliverySchema"] =
                    o->schema == "cloudevents" ? "CloudEventSchemaV1_0" : "EventGridSchema";
            json::object retry;
            if (attempts->count()) retry["maxDeliveryAttempts"] = o->max_attempts;
            if (ttl->count()) retry["eventTimeToLiveInMinutes"] = o->ttl_minutes;
            if (!retry.empty()) properties["retryPolicy"] = std::move(retry);
            json::object body{{"properties", std::move(properties)}};
            print(request_json(connect(*inv), "PUT", target(o->name), json::serialize(body)));
        });
    });

    group->add_subcommand("list", "List the subscriptions")->final_callback([=] {
        run([=] {
            auto v =
                request_json(connect(*inv), "GET", "/eventSubscriptions?api-version=2021-04-12");
            const json::value* value =
                v.is_object() ? v.get_object().if_contains("value") : nullptr;
            print(value ? *value : json::value(json::array()));
        });
    });

    auto* show = group->add_subcommand(
        "show", "Show a subscription: provisioningState Succeeded once validated, event counts");
    name_option(show, o->name, "Subscription name");
    show->final_callback(
        [=] { run([=] { print(request_json(connect(*inv), "GET", target(o->name))); }); });

    auto* del = group->add_subcommand("delete", "Delete a subscription");
    name_option(del, o->name, "Subscription name");
    del->final_callback(
        [=] { run([=] { request_json(connect(*inv), "DELETE", target(o->name)); }); });
}

}  // namespace

void add_routing_commands(CLI::App& app, const std::shared_ptr<invocation>& inv,
                          const runner& run) {
    add_document_commands(app, inv, run);
    add_endpoint_commands(app, inv, run);
    add_route_commands(app, inv, run);
    add_enrichment_commands(app, inv, run);
    add_event_subscription_commands(app, inv, run);
}

}  // namespace iothub::cli::detail
