// The routing configuration: reading ARM's properties.routing (and the hub's webhooks and kafka),
// refusing a document by its first fault, and writing it back.
#include "routing/config.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

#include <initializer_list>
#include <string>

namespace iothub::routing {
namespace {
namespace json = boost::json;

const char* const eh_connection =
    "Endpoint=sb://contoso-ehns.servicebus.windows.net/;SharedAccessKeyName=iothubroutes;"
    "SharedAccessKey=q3Rx0mZ1m2Vx8uQ9p7Hn4b5Lk6Jc1dEf2gHi3JkL4mN=";

routing_config ok(std::string_view text, const limits& l = {}) {
    auto r = parse(text, l);
    EXPECT_TRUE(r) << text << "\n" << (r ? "" : r.error().message());
    return r ? *r : default_config();
}

std::string refused(std::string_view text, const limits& l = {}) {
    auto r = parse(text, l);
    EXPECT_FALSE(r) << text;
    if (r) return "(accepted)";
    EXPECT_EQ(r.error().code(), errc::argument_invalid) << r.error().message();
    return r.error().message();
}

testing::AssertionResult mentions(const std::string& message,
                                  std::initializer_list<std::string_view> parts) {
    for (auto p : parts)
        if (message.find(p) == std::string::npos)
            return testing::AssertionFailure()
                   << "'" << message << "' does not mention '" << p << "'";
    return testing::AssertionSuccess();
}

// A document with these endpoint collections and routes.
std::string doc(std::string_view endpoints, std::string_view routes = "[]") {
    return R"({"endpoints":)" + std::string(endpoints) + R"(,"routes":)" + std::string(routes) +
           "}";
}

std::string event_hub(std::string_view name) {
    return R"({"name":")" + std::string(name) + R"(","connectionString":")" + eh_connection +
           R"(","entityPath":"telemetry"})";
}

std::string route_to(std::string_view name, std::string_view endpoint,
                     std::string_view source = "DeviceMessages") {
    return R"({"name":")" + std::string(name) + R"(","source":")" + std::string(source) +
           R"(","condition":"true","endpointNames":[")" + std::string(endpoint) +
           R"("],"isEnabled":true})";
}

std::string with_enrichments(std::string_view enrichments) {
    return R"({"endpoints":{"eventHubs":[)" + event_hub("hot") + R"(]},"enrichments":)" +
           std::string(enrichments) + "}";
}

std::string storage(std::string_view fields) {
    return doc(R"({"storageContainers":[{"name":"archive","containerName":"telemetry")" +
               std::string(fields) + "}]}");
}

std::string webhook(std::string_view fields) {
    return doc(R"({"webhooks":[{"name":"hook")" + std::string(fields) + "}]}");
}

std::string kafka(std::string_view fields) {
    return doc(R"({"kafka":[{"name":"stream")" + std::string(fields) + "}]}");
}

std::string nats(std::string_view fields) {
    return doc(R"({"nats":[{"name":"bus")" + std::string(fields) + "}]}");
}

void expect_same(const routing_config& a, const routing_config& b) {
    ASSERT_EQ(a.endpoints.size(), b.endpoints.size());
    for (std::size_t i = 0; i < a.endpoints.size(); ++i) {
        const endpoint& x = a.endpoints[i];
        const endpoint& y = b.endpoints[i];
        EXPECT_EQ(x.kind, y.kind);
        EXPECT_EQ(x.name, y.name);
        EXPECT_EQ(x.raw, y.raw) << json::serialize(x.raw) << "\n" << json::serialize(y.raw);
        EXPECT_EQ(x.connection_string, y.connection_string);
        EXPECT_EQ(x.entity_path, y.entity_path);
        EXPECT_EQ(x.container_name, y.container_name);
        EXPECT_EQ(x.file_name_format, y.file_name_format);
        EXPECT_EQ(x.batch_frequency_seconds, y.batch_frequency_seconds);
        EXPECT_EQ(x.max_chunk_bytes, y.max_chunk_bytes);
        EXPECT_EQ(x.encoding, y.encoding);
        EXPECT_EQ(x.endpoint_uri, y.endpoint_uri);
        EXPECT_EQ(x.headers, y.headers);
        EXPECT_EQ(x.brokers, y.brokers);
        EXPECT_EQ(x.topic, y.topic);
        EXPECT_EQ(x.kafka_properties, y.kafka_properties);
        EXPECT_EQ(x.servers, y.servers);
        EXPECT_EQ(x.subject, y.subject);
        EXPECT_EQ(x.jetstream, y.jetstream);
        EXPECT_EQ(x.user, y.user);
        EXPECT_EQ(x.credentials_file, y.credentials_file);
    }
    auto same_route = [](const route& x, const route& y) {
        EXPECT_EQ(x.name, y.name);
        EXPECT_EQ(x.from, y.from);
        EXPECT_EQ(x.condition_text, y.condition_text);
        EXPECT_EQ(x.endpoint, y.endpoint);
        EXPECT_EQ(x.enabled, y.enabled);
    };
    ASSERT_EQ(a.routes.size(), b.routes.size());
    for (std::size_t i = 0; i < a.routes.size(); ++i) same_route(a.routes[i], b.routes[i]);
    same_route(a.fallback, b.fallback);
    ASSERT_EQ(a.enrichments.size(), b.enrichments.size());
    for (std::size_t i = 0; i < a.enrichments.size(); ++i) {
        EXPECT_EQ(a.enrichments[i].key, b.enrichments[i].key);
        EXPECT_EQ(a.enrichments[i].value, b.enrichments[i].value);
        EXPECT_EQ(a.enrichments[i].endpoints, b.enrichments[i].endpoints);
    }
}

// --- The model ---

TEST(routing_config, default_has_the_fallback_to_events_and_nothing_else) {
    auto c = default_config();
    EXPECT_TRUE(c.endpoints.empty());
    EXPECT_TRUE(c.routes.empty());
    EXPECT_TRUE(c.enrichments.empty());
    EXPECT_EQ(c.fallback.name, "$fallback");
    EXPECT_EQ(c.fallback.from, source::device_messages);
    EXPECT_EQ(c.fallback.condition_text, "true");
    EXPECT_EQ(c.fallback.condition.evaluate({}), query::truth::true_);
    EXPECT_EQ(c.fallback.endpoint, "events");
    EXPECT_TRUE(c.fallback.enabled);
    for (std::size_t i = 0; i < source_count; ++i)
        EXPECT_FALSE(c.routes_source(static_cast<source>(i)));
}

TEST(routing_config, empty_document_is_the_default) {
    expect_same(ok("{}"), default_config());
    expect_same(ok(R"({"endpoints":{},"routes":[],"enrichments":[]})"), default_config());
    // ARM exports write null for collections left unset.
    expect_same(ok(R"({"endpoints":null,"routes":null,"fallbackRoute":null})"), default_config());
}

TEST(routing_config, default_written_in_arm_shape) {
    auto expected = json::parse(R"({
        "endpoints":{"serviceBusQueues":[],"serviceBusTopics":[],"eventHubs":[],
                     "storageContainers":[],"cosmosDBSqlContainers":[],"webhooks":[],"kafka":[],"nats":[]},
        "routes":[],
        "fallbackRoute":{"name":"$fallback","source":"DeviceMessages","condition":"true",
                         "endpointNames":["events"],"isEnabled":true},
        "enrichments":[]})");
    EXPECT_EQ(json::value(to_json(default_config())), expected)
        << json::serialize(to_json(default_config()));
}

TEST(routing_config, names_of_sources_and_endpoint_kinds) {
    EXPECT_EQ(to_string(source::device_messages), "DeviceMessages");
    EXPECT_EQ(to_string(source::twin_change_events), "TwinChangeEvents");
    EXPECT_EQ(to_string(source::device_lifecycle_events), "DeviceLifecycleEvents");
    EXPECT_EQ(to_string(source::device_connection_state_events), "DeviceConnectionStateEvents");
    EXPECT_EQ(to_string(source::device_job_lifecycle_events), "DeviceJobLifecycleEvents");
    EXPECT_EQ(source_from("twinchangeevents"), source::twin_change_events);
    EXPECT_EQ(source_from("DEVICEMESSAGES"), source::device_messages);
    EXPECT_EQ(source_from("DeviceConnectionStateEvents"), source::device_connection_state_events);
    EXPECT_EQ(source_from("DigitalTwinChangeEvents"), std::nullopt);
    EXPECT_EQ(source_from("Invalid"), std::nullopt);
    EXPECT_EQ(source_from(""), std::nullopt);
    EXPECT_EQ(to_string(endpoint_kind::event_hub), "eventHubs");
    EXPECT_EQ(to_string(endpoint_kind::storage_container), "storageContainers");
    EXPECT_EQ(to_string(endpoint_kind::webhook), "webhooks");
    EXPECT_EQ(to_string(endpoint_kind::kafka), "kafka");
}

TEST(routing_config, finds_endpoints_ignoring_case) {
    auto c = ok(doc(R"({"eventHubs":[)" + event_hub("Hot-Path") + "]}"));
    ASSERT_NE(c.find_endpoint("hot-path"), nullptr);
    EXPECT_EQ(c.find_endpoint("HOT-PATH")->name, "Hot-Path");
    EXPECT_EQ(c.find_endpoint("cold"), nullptr);
    EXPECT_EQ(c.find_endpoint("events"), nullptr);
}

TEST(routing_config, which_sources_go_through_routes) {
    auto eh = R"({"eventHubs":[)" + event_hub("hot") + "]}";
    auto c = ok(doc(eh, "[" + route_to("twin", "hot", "TwinChangeEvents") + "]"));
    EXPECT_TRUE(c.routes_source(source::twin_change_events));
    EXPECT_FALSE(c.routes_source(source::device_messages));
    EXPECT_FALSE(c.routes_source(source::device_lifecycle_events));

    c = ok(doc(eh, "[" + route_to("telemetry", "hot") + "]"));
    EXPECT_TRUE(c.routes_source(source::device_messages));
    EXPECT_FALSE(c.routes_source(source::twin_change_events));

    // A disabled route does not count.
    c = ok(doc(eh, R"([{"name":"off","source":"DeviceLifecycleEvents","endpointNames":["hot"],
                      "isEnabled":false}])"));
    EXPECT_FALSE(c.routes_source(source::device_lifecycle_events));

    c = ok(R"({"fallbackRoute":{"endpointNames":["events"],"isEnabled":false}})");
    EXPECT_TRUE(c.routes_source(source::device_messages));
    EXPECT_FALSE(c.routes_source(source::twin_change_events));

    c = ok(R"({"endpoints":{"eventHubs":[)" + event_hub("hot") +
           R"(]},"fallbackRoute":{"endpointNames":["hot"],"isEnabled":true}})");
    EXPECT_TRUE(c.routes_source(source::device_messages));

    c = ok(R"({"fallbackRoute":{"endpointNames":["EVENTS"]}})");
    EXPECT_FALSE(c.routes_source(source::device_messages));

    c = ok(with_enrichments(R"([{"key":"k","value":"v","endpointNames":["hot"]}])"));
    EXPECT_FALSE(c.routes_source(source::device_messages));
    c = ok(with_enrichments(R"([{"key":"k","value":"v","endpointNames":["hot","Events"]}])"));
    EXPECT_TRUE(c.routes_source(source::device_messages));
    EXPECT_FALSE(c.routes_source(source::twin_change_events));
}

// --- Document shape ---

TEST(routing_parse, accepts_the_wrappers) {
    const std::string inner = R"({"endpoints":{"eventHubs":[)" + event_hub("hot") +
                              R"(]},"routes":[)" + route_to("r1", "hot") + "]}";
    for (const auto& text :
         {inner, R"({"properties":{"routing":)" + inner + "}}", R"({"routing":)" + inner + "}",
          R"({"Properties":{"Routing":)" + inner + "}}",
          R"({"type":"Microsoft.Devices/IotHubs","name":"hub","location":"westeurope",
              "properties":{"enableFileUploadNotifications":false,"routing":)" +
              inner + "}}"}) {
        auto c = ok(text);
        ASSERT_EQ(c.endpoints.size(), 1u) << text;
        EXPECT_EQ(c.endpoints[0].name, "hot");
        ASSERT_EQ(c.routes.size(), 1u);
        EXPECT_EQ(c.routes[0].name, "r1");
    }
    EXPECT_TRUE(mentions(refused(R"({"properties":{"sku":{}}})"), {"properties.routing"}));
    EXPECT_TRUE(mentions(refused(R"({"properties":[]})"), {"properties must be an object"}));
    EXPECT_TRUE(mentions(refused(R"({"routing":[]})"), {"routing must be an object"}));
}

TEST(routing_parse, refuses_what_is_not_an_object) {
    for (auto text : {"[]", "\"routing\"", "null", "42", R"({"routing":1})"})
        EXPECT_TRUE(mentions(refused(text), {"object"})) << text;
    auto bad = parse(std::string_view(R"({"routes":[)"));
    ASSERT_FALSE(bad);
    EXPECT_EQ(bad.error().code(), errc::format_error);
    EXPECT_TRUE(mentions(bad.error().message(), {"not valid JSON"}));
}

TEST(routing_parse, accepts_template_comments_and_trailing_commas) {
    auto c = ok(R"({
        // from main.json
        "routes": [ /* none yet */ ],
        "fallbackRoute": {"endpointNames": ["events"], "isEnabled": false,},
    })");
    EXPECT_FALSE(c.fallback.enabled);
}

TEST(routing_parse, refuses_unknown_keys_and_wrong_types) {
    EXPECT_TRUE(mentions(refused(R"({"route":[]})"), {"Unknown key 'route'"}));
    EXPECT_TRUE(mentions(refused(R"({"endpoints":[]})"), {"endpoints must be an object"}));
    EXPECT_TRUE(mentions(refused(R"({"routes":{}})"), {"routes must be an array"}));
    EXPECT_TRUE(mentions(refused(R"({"enrichments":"x"})"), {"enrichments must be an array"}));
    EXPECT_TRUE(mentions(refused(R"({"fallbackRoute":[]})"), {"fallbackRoute must be an object"}));
    EXPECT_TRUE(mentions(refused(doc(R"({"eventHubs":{}})")), {"eventHubs must be an array"}));
    EXPECT_TRUE(mentions(refused(doc(R"({"eventHub":[]})")), {"Unknown endpoint type 'eventHub'"}));
    EXPECT_TRUE(mentions(refused(doc(R"({"eventHubs":["hot"]})")), {"eventHubs[0]", "object"}));
    EXPECT_TRUE(mentions(refused(R"({"routes":[1]})"), {"routes[0] must be an object"}));
    EXPECT_TRUE(mentions(refused(R"({"enrichments":[true]})"), {"enrichments[0]", "object"}));
    EXPECT_TRUE(mentions(refused(R"({"routes":[],"Routes":[]})"), {"'routes'", "'Routes'"}));
}

TEST(routing_parse, matches_keys_ignoring_case_and_writes_camel_case) {
    auto c = ok(R"({"ENDPOINTS":{"EventHubs":[{"Name":"hot","ConnectionString":")" +
                std::string(eh_connection) + R"(;EntityPath=t"}]},
        "Routes":[{"NAME":"r1","Source":"devicemessages","Condition":"level = 'x'",
                   "EndpointNames":["HOT"],"IsEnabled":false}],
        "FallbackRoute":{"Name":"$fallback","Source":"DEVICEMESSAGES","EndpointNames":["Events"],
                         "ISENABLED":true},
        "Enrichments":[{"KEY":"k","VALUE":"$iothubname","ENDPOINTNAMES":["hot"]}]})");
    ASSERT_EQ(c.endpoints.size(), 1u);
    EXPECT_EQ(c.endpoints[0].name, "hot");
    EXPECT_FALSE(c.endpoints[0].hosted());
    ASSERT_EQ(c.routes.size(), 1u);
    EXPECT_EQ(c.routes[0].from, source::device_messages);
    EXPECT_EQ(c.routes[0].condition_text, "level = 'x'");
    EXPECT_EQ(c.routes[0].endpoint, "HOT");  // as spelled
    EXPECT_FALSE(c.routes[0].enabled);
    EXPECT_EQ(c.fallback.endpoint, "Events");
    ASSERT_EQ(c.enrichments.size(), 1u);
    EXPECT_EQ(c.enrichments[0].value, "$iothubname");

    auto out = to_json(c);
    const auto& eh = out.at("endpoints").at("eventHubs").at(0).as_object();
    EXPECT_EQ(eh.at("name"), "hot");
    EXPECT_TRUE(eh.contains("connectionString"));
    EXPECT_FALSE(eh.contains("ConnectionString"));
    EXPECT_FALSE(eh.contains("Name"));
    EXPECT_EQ(out.at("routes").at(0).at("source"), "DeviceMessages");
    EXPECT_EQ(out.at("routes").at(0).at("isEnabled"), false);
    EXPECT_EQ(out.at("enrichments").at(0).at("endpointNames").at(0), "hot");
}

// --- Endpoints in general ---

TEST(routing_endpoints, refuses_service_bus_and_cosmos_db) {
    for (auto kind : {"serviceBusQueues", "serviceBusTopics", "cosmosDBSqlContainers"}) {
        auto text = doc(R"({")" + std::string(kind) + R"(":[{"name":"x"}]})");
        EXPECT_TRUE(
            mentions(refused(text), {kind, "not supported by this hub",
                                     "use eventHubs, storageContainers, webhooks, kafka or nats"}));
    }
    // Empty collections are what ARM exports always carry.
    ok(doc(R"({"serviceBusQueues":[],"serviceBusTopics":[],"cosmosDBSqlContainers":[]})"));
}

TEST(routing_endpoints, refuses_bad_names) {
    EXPECT_TRUE(mentions(refused(doc(R"({"webhooks":[{"endpointUri":"http://h/"}]})")),
                         {"webhooks[0] has no name"}));
    EXPECT_TRUE(mentions(refused(doc(R"({"webhooks":[{"name":"","endpointUri":"http://h/"}]})")),
                         {"webhooks[0] has no name"}));
    EXPECT_TRUE(mentions(refused(doc(R"({"webhooks":[{"name":7,"endpointUri":"http://h/"}]})")),
                         {"webhooks[0]", "name must be a string"}));
    for (auto bad : {"a b", "a/b", "caf\xc3\xa9", "x$"})
        EXPECT_TRUE(mentions(refused(doc(R"({"eventHubs":[)" + event_hub(bad) + "]}")),
                             {"Endpoint name '" + std::string(bad) + "'", "only letters"}));
    ok(doc(R"({"eventHubs":[)" + event_hub("A.b_c-9") + "]}"));
    std::string long_name(65, 'n');
    EXPECT_TRUE(mentions(refused(doc(R"({"eventHubs":[)" + event_hub(long_name) + "]}")),
                         {"longer than 64"}));
    ok(doc(R"({"eventHubs":[)" + event_hub(std::string(64, 'n')) + "]}"));
    limits small;
    small.max_name_length = 4;
    EXPECT_TRUE(mentions(refused(doc(R"({"eventHubs":[)" + event_hub("abcde") + "]}"), small),
                         {"'abcde'", "longer than 4"}));
}

TEST(routing_endpoints, refuses_reserved_names) {
    for (auto name : {"events", "EVENTS", "fileNotifications", "filenotifications", "$default",
                      "eventgrid", "EventGrid"})
        EXPECT_TRUE(mentions(refused(doc(R"({"eventHubs":[)" + event_hub(name) + "]}")),
                             {"'" + std::string(name) + "'", "reserved"}));
}

TEST(routing_endpoints, names_are_unique_across_types_ignoring_case) {
    auto text = doc(R"({"eventHubs":[)" + event_hub("sink") +
                    R"(],"webhooks":[{"name":"SINK","endpointUri":"https://h/"}]})");
    EXPECT_TRUE(mentions(refused(text), {"'SINK'", "more than once"}));
    text = doc(R"({"eventHubs":[)" + event_hub("a") + "," + event_hub("A") + "]}");
    EXPECT_TRUE(mentions(refused(text), {"'A'", "more than once"}));
}

TEST(routing_endpoints, at_most_max_endpoints) {
    std::string hubs;
    for (int i = 0; i < 11; ++i) hubs += (i ? "," : "") + event_hub("e" + std::to_string(i));
    EXPECT_TRUE(mentions(refused(doc(R"({"eventHubs":[)" + hubs + "]}")),
                         {"11 custom endpoints", "at most 10"}));
    limits one;
    one.max_endpoints = 1;
    auto two = doc(R"({"eventHubs":[)" + event_hub("a") +
                   R"(],"kafka":[{"name":"k","brokers":"b:9092","topic":"t"}]})");
    EXPECT_TRUE(mentions(refused(two, one), {"2 custom endpoints", "at most 1"}));
    EXPECT_EQ(ok(doc(R"({"eventHubs":[)" + event_hub("a") + "]}"), one).endpoints.size(), 1u);
    EXPECT_EQ(ok(two).endpoints.size(), 2u);
}

TEST(routing_endpoints, keeps_fields_it_does_not_use_and_normalizes_its_own) {
    auto c = ok(doc(R"({"eventHubs":[{"Name":"hot","CONNECTIONSTRING":")" +
                    std::string(eh_connection) + R"(","entityPath":"t",
        "subscriptionId":"1111","resourceGroup":"rg","id":"abc","authenticationType":"keyBased",
        "extra":{"nested":[1,2]}}]})"));
    ASSERT_EQ(c.endpoints.size(), 1u);
    const auto& raw = c.endpoints[0].raw;
    EXPECT_EQ(raw.at("subscriptionId"), "1111");
    EXPECT_EQ(raw.at("resourceGroup"), "rg");
    EXPECT_EQ(raw.at("id"), "abc");
    EXPECT_EQ(raw.at("authenticationType"), "keyBased");
    EXPECT_EQ(raw.at("extra"), json::parse(R"({"nested":[1,2]})"));
    EXPECT_EQ(raw.at("connectionString"), eh_connection);
    EXPECT_FALSE(raw.contains("CONNECTIONSTRING"));
    EXPECT_FALSE(raw.contains("Name"));
    auto written = to_json(c).at("endpoints").at("eventHubs").at(0).as_object();
    EXPECT_EQ(written, raw);
    EXPECT_EQ(written.size(), 8u);
}

// --- eventHubs ---

TEST(routing_event_hubs, reads_a_connection_string_and_entity) {
    auto c = ok(doc(R"({"eventHubs":[{"name":"a","connectionString":")" +
                    std::string(eh_connection) + R"(;EntityPath=telemetry"},
        {"name":"b","connectionString":")" +
                    std::string(eh_connection) +
                    R"(","entityPath":"other"},
        {"name":"c","connectionString":"Endpoint=sb://localhost:5672;SharedAccessKeyName=n;SharedAccessKey=k;EntityPath=x;UseDevelopmentEmulator=true"},
        {"name":"hosted"}]})"));
    ASSERT_EQ(c.endpoints.size(), 4u);
    EXPECT_EQ(c.endpoints[0].kind, endpoint_kind::event_hub);
    EXPECT_EQ(c.endpoints[0].connection_string,
              std::string(eh_connection) + ";EntityPath=telemetry");
    EXPECT_EQ(c.endpoints[0].entity_path, "");
    EXPECT_EQ(c.endpoints[1].entity_path, "other");
    EXPECT_FALSE(c.endpoints[2].hosted());
    EXPECT_TRUE(c.endpoints[3].hosted());
}

TEST(routing_event_hubs, refuses_bad_connection_strings) {
    auto with = [](std::string_view cs, std::string_view extra = R"(,"entityPath":"t")") {
        return doc(R"({"eventHubs":[{"name":"hot","connectionString":")" + std::string(cs) + "\"" +
                   std::string(extra) + "}]}");
    };
    EXPECT_TRUE(mentions(refused(with("just text")), {"Endpoint 'hot'", "Key=Value"}));
    EXPECT_TRUE(mentions(refused(with("SharedAccessKeyName=n;SharedAccessKey=k")),
                         {"Endpoint 'hot'", "Endpoint=sb://"}));
    EXPECT_TRUE(mentions(refused(with("Endpoint=https://ns.servicebus.windows.net/;"
                                      "SharedAccessKeyName=n;SharedAccessKey=k")),
                         {"Endpoint=sb://"}));
    EXPECT_TRUE(mentions(refused(with("Endpoint=sb:///;SharedAccessKeyName=n;SharedAccessKey=k")),
                         {"no valid host"}));
    EXPECT_TRUE(mentions(refused(with("Endpoint=sb://ns/;SharedAccessKey=k")),
                         {"'hot'", "no SharedAccessKeyName"}));
    EXPECT_TRUE(mentions(refused(with("Endpoint=sb://ns/;SharedAccessKeyName=n")),
                         {"'hot'", "no SharedAccessKey"}));
    EXPECT_TRUE(mentions(refused(with("Endpoint=sb://ns/;SharedAccessKeyName=n;SharedAccessKey=")),
                         {"no SharedAccessKey"}));
    EXPECT_TRUE(mentions(
        refused(with("Endpoint=sb://ns/;SharedAccessKeyName=n;SharedAccessKey=k;endpoint=sb://x/")),
        {"twice"}));
    EXPECT_TRUE(
        mentions(refused(with("Endpoint=sb://ns/;SharedAccessKeyName=n;SharedAccessKey=k", "")),
                 {"'hot'", "names no event hub", "EntityPath"}));
    EXPECT_TRUE(mentions(refused(with("Endpoint=sb://ns/;SharedAccessKeyName=n;SharedAccessKey=k;"
                                      "EntityPath=one",
                                      R"(,"entityPath":"two")")),
                         {"'two'", "'one'", "differs"}));
    // The same entity given twice is fine.
    ok(with("Endpoint=sb://ns/;SharedAccessKeyName=n;SharedAccessKey=k;EntityPath=one",
            R"(,"entityPath":"ONE")"));
    EXPECT_TRUE(mentions(refused(doc(R"({"eventHubs":[{"name":"hot","connectionString":5}]})")),
                         {"Endpoint 'hot'", "connectionString must be a string"}));
}

TEST(routing_event_hubs, refuses_identity_based_authentication) {
    auto text = doc(R"({"eventHubs":[{"name":"hot","authenticationType":"identityBased",
        "endpointUri":"sb://ns.servicebus.windows.net","entityPath":"t",
        "identity":{"userAssignedIdentity":"/subscriptions/x"}}]})");
    EXPECT_TRUE(mentions(refused(text), {"Endpoint 'hot'", "identity-based", "not support"}));
    text = doc(R"({"eventHubs":[{"name":"hot","endpointUri":"sb://ns.servicebus.windows.net",
        "entityPath":"t"}]})");
    EXPECT_TRUE(
        mentions(refused(text), {"Endpoint 'hot'", "endpointUri without a connectionString"}));
    text = doc(R"({"eventHubs":[{"name":"hot","authenticationType":"magic"}]})");
    EXPECT_TRUE(mentions(refused(text), {"Endpoint 'hot'", "authenticationType 'magic'"}));
    // endpointUri next to a connection string is kept and not used.
    auto c = ok(doc(R"({"eventHubs":[{"name":"hot","authenticationType":"KEYBASED",
        "endpointUri":"sb://ns.servicebus.windows.net","connectionString":")" +
                    std::string(eh_connection) + R"(;EntityPath=t"}]})"));
    EXPECT_EQ(c.endpoints[0].raw.at("endpointUri"), "sb://ns.servicebus.windows.net");
}

// --- storageContainers ---

TEST(routing_storage, defaults_and_hosting) {
    auto c = ok(storage(""));
    ASSERT_EQ(c.endpoints.size(), 1u);
    const auto& e = c.endpoints[0];
    EXPECT_EQ(e.kind, endpoint_kind::storage_container);
    EXPECT_EQ(e.container_name, "telemetry");
    EXPECT_TRUE(e.connection_string.empty());
    EXPECT_FALSE(e.hosted());  // hosted() speaks of event hubs only
    EXPECT_EQ(e.file_name_format, "{iothub}/{partition}/{YYYY}/{MM}/{DD}/{HH}/{mm}");
    EXPECT_EQ(e.batch_frequency_seconds, 300u);
    EXPECT_EQ(e.max_chunk_bytes, 314572800u);
    EXPECT_EQ(e.encoding, blob_encoding::avro);
    auto written = to_json(c).at("endpoints").at("storageContainers").at(0);
    EXPECT_EQ(written, json::parse(R"({"name":"archive","containerName":"telemetry",
        "fileNameFormat":"{iothub}/{partition}/{YYYY}/{MM}/{DD}/{HH}/{mm}",
        "batchFrequencyInSeconds":300,"maxChunkSizeInBytes":314572800,"encoding":"avro"})"));
}

TEST(routing_storage, reads_every_field) {
    auto c = ok(storage(
        R"(,"connectionString":"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=a2V5;EndpointSuffix=core.windows.net",
        "fileNameFormat":"{YYYY}-{MM}-{DD}/{HH}{mm}/{iothub}/{partition}.avro",
        "batchFrequencyInSeconds":60.0,"maxChunkSizeInBytes":10485760,"encoding":"AvroDeflate")"));
    const auto& e = c.endpoints[0];
    EXPECT_EQ(e.connection_string,
              "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=a2V5;EndpointSuffix=core."
              "windows.net");
    EXPECT_EQ(e.file_name_format, "{YYYY}-{MM}-{DD}/{HH}{mm}/{iothub}/{partition}.avro");
    EXPECT_EQ(e.batch_frequency_seconds, 60u);
    EXPECT_EQ(e.max_chunk_bytes, 10485760u);
    EXPECT_EQ(e.encoding, blob_encoding::avro_deflate);
    ok(storage(R"(,"connectionString":"UseDevelopmentStorage=true")"));
    ok(storage(
        R"(,"connectionString":"BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;SharedAccessSignature=sv=x")"));
}

TEST(routing_storage, encodings_ignore_case_and_are_written_as_arm_spells_them) {
    struct {
        const char* given;
        blob_encoding want;
        const char* written;
    } cases[] = {{"avro", blob_encoding::avro, "avro"},
                 {"AVRO", blob_encoding::avro, "avro"},
                 {"avrodeflate", blob_encoding::avro_deflate, "avroDeflate"},
                 {"json", blob_encoding::json, "JSON"},
                 {"JSON", blob_encoding::json, "JSON"}};
    for (const auto& k : cases) {
        auto c = ok(storage(R"(,"encoding":")" + std::string(k.given) + "\""));
        EXPECT_EQ(c.endpoints[0].encoding, k.want) << k.given;
        EXPECT_EQ(to_json(c).at("endpoints").at("storageContainers").at(0).at("encoding"),
                  k.written);
    }
    EXPECT_TRUE(mentions(refused(storage(R"(,"encoding":"csv")")),
                         {"Endpoint 'archive'", "encoding 'csv'"}));
}

TEST(routing_storage, refuses_bad_container_names) {
    EXPECT_TRUE(mentions(refused(doc(R"({"storageContainers":[{"name":"archive"}]})")),
                         {"Endpoint 'archive' has no containerName"}));
    for (auto bad : {"ab", "Telemetry", "tele--metry", "-tele", "tele-", "tele_metry",
                     "a234567890123456789012345678901234567890123456789012345678901234"}) {
        auto text = doc(R"({"storageContainers":[{"name":"archive","containerName":")" +
                        std::string(bad) + R"("}]})");
        EXPECT_TRUE(mentions(refused(text), {"Endpoint 'archive'", "'" + std::string(bad) + "'",
                                             "not a valid container name"}));
    }
    for (const auto& good :
         std::vector<std::string>{"abc", "a-b-c", "9lives", std::string(63, 'z')})
        ok(doc(R"({"storageContainers":[{"name":"archive","containerName":")" + good + R"("}]})"));
}

TEST(routing_storage, file_name_format_has_each_token_once) {
    EXPECT_TRUE(mentions(
        refused(storage(R"(,"fileNameFormat":"{iothub}/{partition}/{YYYY}/{MM}/{DD}/{HH}")")),
        {"Endpoint 'archive'", "lacks {mm}"}));
    EXPECT_TRUE(mentions(
        refused(
            storage(R"(,"fileNameFormat":"{iothub}/{partition}/{YYYY}/{MM}/{DD}/{HH}/{mm}/{HH}")")),
        {"repeats {HH}"}));
    EXPECT_TRUE(mentions(
        refused(
            storage(R"(,"fileNameFormat":"{iothub}/{partition}/{YYYY}/{MM}/{DD}/{HH}/{mm}/{ss}")")),
        {"unknown {token}"}));
    // Tokens are case-sensitive: {mm} is minutes, {MM} the month.
    EXPECT_TRUE(mentions(
        refused(storage(R"(,"fileNameFormat":"{IOTHUB}/{partition}/{YYYY}/{MM}/{DD}/{HH}/{mm}")")),
        {"lacks {iothub}"}));
}

TEST(routing_storage, numbers_within_their_ranges) {
    EXPECT_TRUE(
        mentions(refused(storage(R"(,"batchFrequencyInSeconds":0)")),
                 {"Endpoint 'archive'", "batchFrequencyInSeconds is 0", "between 1 and 720"}));
    EXPECT_TRUE(mentions(refused(storage(R"(,"batchFrequencyInSeconds":721)")),
                         {"batchFrequencyInSeconds is 721"}));
    EXPECT_TRUE(mentions(refused(storage(R"(,"batchFrequencyInSeconds":-5)")),
                         {"batchFrequencyInSeconds is -5"}));
    EXPECT_TRUE(mentions(refused(storage(R"(,"batchFrequencyInSeconds":"300")")),
                         {"batchFrequencyInSeconds must be a whole number"}));
    EXPECT_TRUE(mentions(refused(storage(R"(,"batchFrequencyInSeconds":1.5)")),
                         {"batchFrequencyInSeconds must be a whole number"}));
    EXPECT_EQ(ok(storage(R"(,"batchFrequencyInSeconds":720)")).endpoints[0].batch_frequency_seconds,
              720u);
    limits azure;
    azure.min_batch_frequency_seconds = 60;
    EXPECT_TRUE(mentions(refused(storage(R"(,"batchFrequencyInSeconds":59)"), azure),
                         {"between 60 and 720"}));
    EXPECT_TRUE(mentions(refused(storage(R"(,"maxChunkSizeInBytes":10485759)")),
                         {"maxChunkSizeInBytes is 10485759", "between 10485760 and 524288000"}));
    EXPECT_TRUE(mentions(refused(storage(R"(,"maxChunkSizeInBytes":524288001)")),
                         {"maxChunkSizeInBytes is 524288001"}));
    EXPECT_EQ(ok(storage(R"(,"maxChunkSizeInBytes":524288000)")).endpoints[0].max_chunk_bytes,
              524288000u);
}

TEST(routing_storage, refuses_unusable_credentials) {
    EXPECT_TRUE(
        mentions(refused(storage(R"(,"connectionString":"EndpointSuffix=core.windows.net")")),
                 {"Endpoint 'archive'", "names no storage account"}));
    EXPECT_TRUE(mentions(refused(storage(R"(,"connectionString":"garbage")")), {"Key=Value"}));
    EXPECT_TRUE(mentions(refused(storage(R"(,"authenticationType":"identityBased",
        "endpointUri":"https://acct.blob.core.windows.net")")),
                         {"Endpoint 'archive'", "identity-based"}));
    EXPECT_TRUE(mentions(refused(storage(R"(,"endpointUri":"https://acct.blob.core.windows.net")")),
                         {"endpointUri without a connectionString"}));
}

// --- webhooks ---

TEST(routing_webhooks, reads_uri_and_headers) {
    auto c = ok(webhook(R"(,"endpointUri":"https://user@example.com:8443/hook?x=1",
        "headers":{"Authorization":"Bearer abc","X-Custom_1":"v"})"));
    ASSERT_EQ(c.endpoints.size(), 1u);
    const auto& e = c.endpoints[0];
    EXPECT_EQ(e.kind, endpoint_kind::webhook);
    EXPECT_EQ(e.endpoint_uri, "https://user@example.com:8443/hook?x=1");
    ASSERT_EQ(e.headers.size(), 2u);
    EXPECT_EQ(e.headers[0], (std::pair<std::string, std::string>{"Authorization", "Bearer abc"}));
    EXPECT_EQ(e.headers[1], (std::pair<std::string, std::string>{"X-Custom_1", "v"}));
    for (auto uri : {"http://localhost", "HTTP://10.0.0.1:80/", "http://[::1]:8080/x"})
        EXPECT_EQ(
            ok(webhook(R"(,"endpointUri":")" + std::string(uri) + "\"")).endpoints[0].endpoint_uri,
            uri);
}

TEST(routing_webhooks, refuses_bad_uris_and_headers) {
    EXPECT_TRUE(mentions(refused(webhook("")), {"Endpoint 'hook' has no endpointUri"}));
    for (auto uri : {"ftp://example.com/", "example.com/hook", "https://", "https:///path",
                     "http://:80/", "http://host:port/", "http://ho st/"})
        EXPECT_TRUE(mentions(refused(webhook(R"(,"endpointUri":")" + std::string(uri) + "\"")),
                             {"Endpoint 'hook'", "not an http:// or https:// URL"}))
            << uri;
    const std::string uri = R"(,"endpointUri":"https://h/")";
    EXPECT_TRUE(
        mentions(refused(webhook(uri + R"(,"headers":[])")), {"headers must be an object"}));
    EXPECT_TRUE(mentions(refused(webhook(uri + R"(,"headers":{"X-Count":3})")),
                         {"Endpoint 'hook'", "header 'X-Count'", "string"}));
    EXPECT_TRUE(mentions(refused(webhook(uri + R"(,"headers":{"Bad Name":"v"})")),
                         {"'Bad Name'", "not a valid HTTP header name"}));
    EXPECT_TRUE(mentions(refused(webhook(uri + R"(,"headers":{"":"v"})")),
                         {"not a valid HTTP header name"}));
    EXPECT_TRUE(mentions(refused(webhook(uri + R"(,"headers":{"X-A":"v\r\nInjected: 1"})")),
                         {"'X-A'", "control character"}));
    EXPECT_TRUE(mentions(refused(webhook(uri + R"(,"headers":{"X-A":"1","x-a":"2"})")),
                         {"same key ignoring case"}));
}

// --- kafka ---

TEST(routing_kafka, reads_brokers_topic_and_properties) {
    auto c = ok(kafka(R"(,"brokers":"kafka-1:9092, kafka-2.local:9093,[::1]:9094",
        "topic":"iot.telemetry_v1-raw",
        "properties":{"security.protocol":"SASL_SSL","sasl.mechanism":"PLAIN"})"));
    ASSERT_EQ(c.endpoints.size(), 1u);
    const auto& e = c.endpoints[0];
    EXPECT_EQ(e.kind, endpoint_kind::kafka);
    EXPECT_EQ(e.brokers, "kafka-1:9092, kafka-2.local:9093,[::1]:9094");
    EXPECT_EQ(e.topic, "iot.telemetry_v1-raw");
    EXPECT_EQ(e.kafka_properties,
              (std::map<std::string, std::string>{{"sasl.mechanism", "PLAIN"},
                                                  {"security.protocol", "SASL_SSL"}}));
}

TEST(routing_kafka, refuses_bad_brokers_topics_and_properties) {
    const std::string topic = R"(,"topic":"t")";
    EXPECT_TRUE(mentions(refused(kafka(topic)), {"Endpoint 'stream' has no brokers"}));
    for (auto bad : {"kafka", "kafka:", "kafka:99999", ":9092", "a:1,,b:2", "a:1,", "a b:1"})
        EXPECT_TRUE(mentions(refused(kafka(R"(,"brokers":")" + std::string(bad) + "\"" + topic)),
                             {"Endpoint 'stream'", "host:port"}))
            << bad;
    const std::string brokers = R"(,"brokers":"b:9092")";
    EXPECT_TRUE(mentions(refused(kafka(brokers)), {"Endpoint 'stream' has no topic"}));
    for (auto bad : {"a/b", "a b", ".", "..", "t\xc3\xa9"})
        EXPECT_TRUE(mentions(refused(kafka(brokers + R"(,"topic":")" + std::string(bad) + "\"")),
                             {"Endpoint 'stream'", "not a valid Kafka topic"}))
            << bad;
    EXPECT_TRUE(mentions(refused(kafka(brokers + R"(,"topic":")" + std::string(250, 't') + "\"")),
                         {"not a valid Kafka topic"}));
    ok(kafka(brokers + R"(,"topic":")" + std::string(249, 't') + "\""));
    EXPECT_TRUE(mentions(refused(kafka(brokers + topic + R"(,"properties":{"linger.ms":5})")),
                         {"Endpoint 'stream'", "property 'linger.ms'", "string"}));
    EXPECT_TRUE(mentions(refused(kafka(brokers + topic + R"(,"properties":"acks=all")")),
                         {"properties must be an object"}));
}

// --- nats ---

TEST(routing_nats, reads_servers_subject_and_options) {
    auto c = ok(nats(R"(,"servers":"nats://n1:4222, tls://n2.local:4443,[::1]:4222",
        "subject":"{iothub}.telemetry.{deviceId}","jetStream":true,"user":"hub","password":"pw",
        "caFile":"/etc/nats/ca.pem")"));
    ASSERT_EQ(c.endpoints.size(), 1u);
    const auto& e = c.endpoints[0];
    EXPECT_EQ(e.kind, endpoint_kind::nats);
    EXPECT_EQ(e.servers,
              (std::vector<std::string>{"nats://n1:4222", "tls://n2.local:4443", "[::1]:4222"}));
    EXPECT_EQ(e.subject, "{iothub}.telemetry.{deviceId}");
    EXPECT_TRUE(e.jetstream);
    EXPECT_EQ(e.user, "hub");
    EXPECT_EQ(e.password, "pw");
    EXPECT_EQ(e.ca_file, "/etc/nats/ca.pem");
    // An array of servers reads the same; none at all means the cluster's own.
    auto listed = ok(nats(R"(,"servers":["nats://n1:4222"],"subject":"t")"));
    EXPECT_EQ(listed.endpoints[0].servers, (std::vector<std::string>{"nats://n1:4222"}));
    EXPECT_FALSE(listed.endpoints[0].jetstream);
    EXPECT_TRUE(ok(nats(R"(,"subject":"t.{deviceId}")")).endpoints[0].servers.empty());
    // Written back as read.
    auto again = ok(json::serialize(to_json(c)));
    expect_same(c, again);
}

TEST(routing_nats, refuses_bad_subjects_and_servers) {
    EXPECT_TRUE(mentions(refused(nats("")), {"Endpoint 'bus' has no subject"}));
    for (auto bad : {"a..b", ".a", "a.", "a.*.b", "a.>", "a.b*", "$JS.API.x", "a b", "a.{device}",
                     "{deviceid}"})
        EXPECT_TRUE(mentions(refused(nats(R"(,"subject":")" + std::string(bad) + "\"")),
                             {"Endpoint 'bus'", "subject"}))
            << bad;
    EXPECT_TRUE(mentions(refused(nats(R"(,"subject":")" + std::string(256, 's') + "\"")),
                         {"longer than 255"}));
    const std::string subject = R"(,"subject":"t")";
    for (auto bad : {"http://h:1", "nats://", "nats://h:99999", "h h:1"})
        EXPECT_TRUE(mentions(refused(nats(R"(,"servers":")" + std::string(bad) + "\"" + subject)),
                             {"Endpoint 'bus'", "nats://host:port"}))
            << bad;
    EXPECT_TRUE(
        mentions(refused(nats(R"(,"servers":[1])" + subject)), {"servers must be strings"}));
    EXPECT_TRUE(mentions(refused(nats(subject + R"(,"jetStream":"yes")")), {"true or false"}));
    EXPECT_TRUE(mentions(refused(nats(subject + R"(,"certFile":"c.pem")")),
                         {"certFile and keyFile go together"}));
    EXPECT_TRUE(mentions(refused(nats(subject + R"(,"password":"p")")), {"password needs a user"}));
}

// --- Routes ---

const std::string hot_hub = R"({"eventHubs":[)" + event_hub("hot") + "]}";

TEST(routing_routes, reads_a_route) {
    auto c = ok(doc(hot_hub, R"([{"name":"alerts","source":"DeviceMessages",
        "condition":"$body.temperature > 30","endpointNames":["hot"],"isEnabled":true},
        {"name":"twins","source":"TwinChangeEvents","endpointNames":["events"]}])"));
    ASSERT_EQ(c.routes.size(), 2u);
    EXPECT_EQ(c.routes[0].name, "alerts");
    EXPECT_EQ(c.routes[0].condition_text, "$body.temperature > 30");
    EXPECT_TRUE(c.routes[0].condition.refers_to("$body"));
    EXPECT_EQ(
        c.routes[0].condition.evaluate(json::parse(R"({"$body":{"temperature":31}})").as_object()),
        query::truth::true_);
    EXPECT_EQ(c.routes[0].endpoint, "hot");
    // Missing condition is `true`, missing isEnabled is on.
    EXPECT_EQ(c.routes[1].from, source::twin_change_events);
    EXPECT_EQ(c.routes[1].condition_text, "true");
    EXPECT_EQ(c.routes[1].condition.evaluate({}), query::truth::true_);
    EXPECT_TRUE(c.routes[1].enabled);
}

TEST(routing_routes, refuses_bad_names_and_duplicates) {
    EXPECT_TRUE(
        mentions(refused(doc(hot_hub, R"([{"source":"DeviceMessages","endpointNames":["hot"]}])")),
                 {"routes[0] has no name"}));
    EXPECT_TRUE(mentions(refused(doc(hot_hub, "[" + route_to("bad name", "hot") + "]")),
                         {"Route name 'bad name'", "only letters"}));
    EXPECT_TRUE(mentions(refused(doc(hot_hub, "[" + route_to(std::string(65, 'r'), "hot") + "]")),
                         {"Route name", "longer than 64"}));
    EXPECT_TRUE(mentions(
        refused(doc(hot_hub, "[" + route_to("r1", "hot") + "," + route_to("R1", "events") + "]")),
        {"Route name 'R1'", "more than once"}));
}

TEST(routing_routes, at_most_max_routes) {
    std::string routes;
    for (int i = 0; i < 101; ++i)
        routes += (i ? "," : "") + route_to("r" + std::to_string(i), "events");
    EXPECT_TRUE(mentions(refused(doc("{}", "[" + routes + "]")), {"101 routes", "at most 100"}));
    limits two;
    two.max_routes = 2;
    auto three = "[" + route_to("a", "events") + "," + route_to("b", "events") + "," +
                 route_to("c", "events") + "]";
    EXPECT_TRUE(mentions(refused(doc("{}", three), two), {"3 routes", "at most 2"}));
    EXPECT_EQ(ok(doc("{}", three)).routes.size(), 3u);
}

TEST(routing_routes, refuses_missing_unknown_and_unsupported_sources) {
    EXPECT_TRUE(mentions(refused(doc(hot_hub, R"([{"name":"r","endpointNames":["hot"]}])")),
                         {"Route 'r' has no source"}));
    EXPECT_TRUE(mentions(refused(doc(hot_hub, "[" + route_to("r", "hot", "Telemetry") + "]")),
                         {"Route 'r'", "unknown source 'Telemetry'"}));
    for (auto s :
         {"Invalid", "DigitalTwinChangeEvents", "MqttBrokerMessages", "digitaltwinchangeevents"})
        EXPECT_TRUE(mentions(refused(doc(hot_hub, "[" + route_to("r", "hot", s) + "]")),
                             {"Route 'r'", "'" + std::string(s) + "'", "does not support"}));
    auto c = ok(doc(hot_hub, "[" + route_to("r", "hot", "devicelifecycleevents") + "," +
                                 route_to("s", "hot", "DeviceJobLifecycleEvents") + "," +
                                 route_to("t", "hot", "DeviceConnectionStateEvents") + "]"));
    EXPECT_EQ(c.routes[0].from, source::device_lifecycle_events);
    EXPECT_EQ(c.routes[1].from, source::device_job_lifecycle_events);
    EXPECT_EQ(c.routes[2].from, source::device_connection_state_events);
}

TEST(routing_routes, name_exactly_one_existing_endpoint) {
    auto with = [](std::string_view names) {
        return doc(hot_hub, R"([{"name":"r","source":"DeviceMessages","endpointNames":)" +
                                std::string(names) + "}]");
    };
    EXPECT_TRUE(mentions(refused(with("[]")), {"Route 'r' names 0 endpoints", "exactly one"}));
    EXPECT_TRUE(mentions(refused(with(R"(["hot","events"])")), {"Route 'r' names 2 endpoints"}));
    EXPECT_TRUE(
        mentions(refused(with(R"("hot")")), {"Route 'r'", "endpointNames must be an array"}));
    EXPECT_TRUE(mentions(refused(with("[1]")), {"Route 'r'", "endpoint name"}));
    EXPECT_TRUE(mentions(refused(with(R"([""])")), {"Route 'r'", "endpoint name"}));
    EXPECT_TRUE(mentions(refused(doc(hot_hub, R"([{"name":"r","source":"DeviceMessages"}])")),
                         {"Route 'r' has no endpointNames"}));
    EXPECT_EQ(refused(with(R"(["nowhere"])")),
              "Route 'r' names endpoint 'nowhere', which does not exist.");
    EXPECT_EQ(ok(with(R"(["HOT"])")).routes[0].endpoint, "HOT");
    EXPECT_EQ(ok(with(R"(["events"])")).routes[0].endpoint, "events");
    EXPECT_EQ(ok(with(R"(["eventgrid"])")).routes[0].endpoint, "eventgrid");
    EXPECT_TRUE(
        mentions(refused(doc(hot_hub, "[" + route_to("r", "EventGrid", "TwinChangeEvents") + "]")),
                 {"Route 'r'", "'EventGrid'", "only DeviceMessages"}));
}

TEST(routing_routes, refuses_bad_conditions) {
    auto with = [](std::string_view condition) {
        json::object r{{"name", "r"},
                       {"source", "DeviceMessages"},
                       {"condition", condition},
                       {"endpointNames", json::array{"events"}}};
        return json::serialize(json::object{{"routes", json::array{r}}});
    };
    auto message = refused(with("level = "));
    EXPECT_TRUE(mentions(message, {"Route 'r' has an invalid condition: "}));
    auto direct = query::parse_condition("level = ");
    ASSERT_FALSE(direct);
    EXPECT_TRUE(mentions(message, {direct.error().message()}));
    EXPECT_TRUE(
        mentions(refused(with("SELECT * FROM devices")), {"Route 'r' has an invalid condition"}));
    std::string long_condition = "a = '" + std::string(1020, 'x') + "'";
    EXPECT_TRUE(
        mentions(refused(with(long_condition)), {"Route 'r'", "1026 characters", "at most 1024"}));
    limits tight;
    tight.max_condition_length = 5;
    EXPECT_TRUE(mentions(refused(with("a = 12"), tight), {"6 characters", "at most 5"}));
    ok(with("a = 1"), tight);
    EXPECT_EQ(ok(with("")).routes[0].condition_text, "true");
    EXPECT_TRUE(
        mentions(refused(doc("{}", R"([{"name":"r","source":"DeviceMessages","condition":true,
        "endpointNames":["events"]}])")),
                 {"Route 'r'", "condition must be a string"}));
    EXPECT_TRUE(mentions(refused(doc("{}", R"([{"name":"r","source":"DeviceMessages",
        "endpointNames":["events"],"isEnabled":"yes"}])")),
                         {"Route 'r'", "isEnabled must be true or false"}));
}

// --- The fallback route ---

TEST(routing_fallback, reads_and_defaults) {
    auto c = ok(R"({"endpoints":{"eventHubs":[)" + event_hub("hot") +
                R"(]},"fallbackRoute":{"name":"catchall","source":"DeviceMessages",
        "condition":"level = 'debug'","endpointNames":["hot"],"isEnabled":false}})");
    EXPECT_EQ(c.fallback.name, "catchall");
    EXPECT_EQ(c.fallback.from, source::device_messages);
    EXPECT_EQ(c.fallback.condition_text, "level = 'debug'");
    EXPECT_EQ(c.fallback.endpoint, "hot");
    EXPECT_FALSE(c.fallback.enabled);
    c = ok(R"({"fallbackRoute":{"endpointNames":["events"]}})");
    EXPECT_EQ(c.fallback.name, "$fallback");
    EXPECT_EQ(c.fallback.condition_text, "true");
    EXPECT_TRUE(c.fallback.enabled);
    EXPECT_EQ(ok(R"({"fallbackRoute":{"endpointNames":["eventgrid"]}})").fallback.endpoint,
              "eventgrid");
}

TEST(routing_fallback, refuses_other_sources_and_endpoints) {
    EXPECT_TRUE(mentions(
        refused(R"({"fallbackRoute":{"source":"TwinChangeEvents","endpointNames":["events"]}})"),
        {"fallbackRoute's source must be DeviceMessages", "'TwinChangeEvents'"}));
    EXPECT_TRUE(mentions(refused(R"({"fallbackRoute":{"endpointNames":["events","events"]}})"),
                         {"fallbackRoute names 2 endpoints"}));
    EXPECT_TRUE(mentions(refused(R"({"fallbackRoute":{"isEnabled":true}})"),
                         {"fallbackRoute has no endpointNames"}));
    EXPECT_EQ(refused(R"({"fallbackRoute":{"endpointNames":["gone"]}})"),
              "fallbackRoute names endpoint 'gone', which does not exist.");
    EXPECT_TRUE(
        mentions(refused(R"({"fallbackRoute":{"condition":"(","endpointNames":["events"]}})"),
                 {"fallbackRoute has an invalid condition"}));
    EXPECT_TRUE(mentions(refused(R"({"fallbackRoute":{"name":")" + std::string(65, 'f') +
                                 R"(","endpointNames":["events"]}})"),
                         {"fallbackRoute's name", "longer than 64"}));
}

// --- Enrichments ---

TEST(routing_enrichments, reads_enrichments) {
    auto c = ok(with_enrichments(R"([
        {"key":"hub","value":"$iothubname","endpointNames":["hot","events"]},
        {"key":"building-id","value":"$twin.tags.location.building","endpointNames":["eventgrid"]},
        {"key":"fw_ver","value":"$twin.properties.reported.firmware.version","endpointNames":["hot"]},
        {"key":"mode.x","value":"$twin.properties.desired.mode","endpointNames":["hot"]},
        {"key":"static","value":"plant 7","endpointNames":["hot"]},
        {"key":"hub","value":"again","endpointNames":["eventgrid"]}])"));
    ASSERT_EQ(c.enrichments.size(), 6u);
    EXPECT_EQ(c.enrichments[0].key, "hub");
    EXPECT_EQ(c.enrichments[0].value, "$iothubname");
    EXPECT_EQ(c.enrichments[0].endpoints, (std::vector<std::string>{"hot", "events"}));
    EXPECT_EQ(c.enrichments[1].value, "$twin.tags.location.building");
    EXPECT_EQ(c.enrichments[4].value, "plant 7");
}

TEST(routing_enrichments, refuses_bad_keys_and_values) {
    auto one = [](std::string_view key, std::string_view value) {
        json::object e{{"key", key}, {"value", value}, {"endpointNames", json::array{"hot"}}};
        return with_enrichments(json::serialize(json::array{e}));
    };
    EXPECT_TRUE(mentions(refused(one("", "v")), {"enrichments[0] has no key"}));
    for (auto bad : {"a b", "$key", "k/1", "k:v"})
        EXPECT_TRUE(mentions(refused(one(bad, "v")),
                             {"Enrichment key '" + std::string(bad) + "'", "only letters"}));
    EXPECT_TRUE(mentions(refused(one("k", "")), {"Enrichment 'k' has no value"}));
    for (auto bad : {"$iothub", "$IOTHUBNAME", "$twin.tags.", "$twin.tags", "$twin.properties.x",
                     "$twin.properties.desired.", "$twin.properties.reported..a", "$body.x",
                     "$twin.tags.a.", "$"})
        EXPECT_TRUE(mentions(refused(one("k", bad)),
                             {"Enrichment 'k'", "'" + std::string(bad) + "'", "$iothubname"}))
            << bad;
    EXPECT_TRUE(
        mentions(refused(with_enrichments(R"([{"key":"k","value":3,"endpointNames":["hot"]}])")),
                 {"Enrichment 'k'", "value must be a string"}));
}

TEST(routing_enrichments, refuses_bad_endpoints_and_duplicates) {
    EXPECT_TRUE(
        mentions(refused(with_enrichments(R"([{"key":"k","value":"v","endpointNames":[]}])")),
                 {"Enrichment 'k' names no endpoint"}));
    EXPECT_TRUE(mentions(refused(with_enrichments(R"([{"key":"k","value":"v"}])")),
                         {"Enrichment 'k' names no endpoint"}));
    EXPECT_EQ(
        refused(with_enrichments(R"([{"key":"k","value":"v","endpointNames":["hot","cold"]}])")),
        "Enrichment 'k' names endpoint 'cold', which does not exist.");
    EXPECT_TRUE(mentions(refused(with_enrichments(
                             R"([{"key":"k","value":"a","endpointNames":["hot"]},
                                 {"key":"K","value":"b","endpointNames":["events","HOT"]}])")),
                         {"Enrichment key 'K'", "more than once", "endpoint 'HOT'"}));
    EXPECT_TRUE(mentions(refused(with_enrichments(
                             R"([{"key":"k","value":"a","endpointNames":["events","Events"]}])")),
                         {"Enrichment key 'k'", "more than once", "'Events'"}));
    std::string many;
    for (int i = 0; i < 11; ++i)
        many += std::string(i ? "," : "") + R"({"key":"k)" + std::to_string(i) +
                R"(","value":"v","endpointNames":["hot"]})";
    EXPECT_TRUE(
        mentions(refused(with_enrichments("[" + many + "]")), {"11 enrichments", "at most 10"}));
    limits two;
    two.max_enrichments = 2;
    EXPECT_TRUE(
        mentions(refused(with_enrichments(R"([{"key":"a","value":"v","endpointNames":["hot"]},
        {"key":"b","value":"v","endpointNames":["hot"]},{"key":"c","value":"v","endpointNames":["hot"]}])"),
                         two),
                 {"3 enrichments", "at most 2"}));
}

// --- Writing back ---

const std::string rich = R"({
  "endpoints": {
    "eventHubs": [
      {"name":"hot","connectionString":")" +
                         std::string(eh_connection) +
                         R"(","entityPath":"telemetry","subscriptionId":"s","resourceGroup":"rg"},
      {"name":"local"}
    ],
    "storageContainers": [
      {"name":"archive","containerName":"cold","encoding":"json","batchFrequencyInSeconds":120,
       "fileNameFormat":"{iothub}-{partition}/{YYYY}{MM}{DD}{HH}{mm}.json","id":"x"}
    ],
    "webhooks": [{"name":"hook","endpointUri":"https://example.com/in","headers":{"X-Key":"1"}}],
    "kafka": [{"name":"stream","brokers":"k:9092","topic":"t","properties":{"acks":"all"}}]
  },
  "routes": [
    {"name":"alerts","source":"DeviceMessages","condition":"$body.t > 30","endpointNames":["hot"],"isEnabled":true},
    {"name":"lifecycle","source":"DeviceLifecycleEvents","endpointNames":["hook"],"isEnabled":false},
    {"name":"grid","source":"DeviceMessages","endpointNames":["eventgrid"]},
    {"name":"stream-all","source":"TwinChangeEvents","condition":"true","endpointNames":["STREAM"]}
  ],
  "fallbackRoute": {"name":"$fallback","source":"DeviceMessages","condition":"true","endpointNames":["archive"],"isEnabled":true},
  "enrichments": [{"key":"hub","value":"$iothubname","endpointNames":["hot","events"]}]
})";

TEST(routing_write, round_trips) {
    auto c = ok(rich);
    ASSERT_EQ(c.endpoints.size(), 5u);
    auto written = to_json(c);
    auto again = ok(json::serialize(written));
    expect_same(c, again);
    EXPECT_EQ(to_json(again), written);
    auto from_value = parse(json::value(written));
    ASSERT_TRUE(from_value);
    expect_same(c, *from_value);
    expect_same(default_config(), ok(json::serialize(to_json(default_config()))));
}

TEST(routing_write, writes_every_collection_in_order_with_values_normalized) {
    auto out = to_json(ok(rich));
    const auto& endpoints = out.at("endpoints").as_object();
    std::vector<std::string> keys;
    for (const auto& [k, v] : endpoints) keys.emplace_back(k);
    EXPECT_EQ(keys, (std::vector<std::string>{"serviceBusQueues", "serviceBusTopics", "eventHubs",
                                              "storageContainers", "cosmosDBSqlContainers",
                                              "webhooks", "kafka", "nats"}));
    EXPECT_EQ(endpoints.at("eventHubs").as_array().size(), 2u);
    EXPECT_EQ(endpoints.at("eventHubs").at(1), json::parse(R"({"name":"local"})"));
    EXPECT_EQ(endpoints.at("storageContainers").at(0), json::parse(R"({"name":"archive",
        "containerName":"cold","fileNameFormat":"{iothub}-{partition}/{YYYY}{MM}{DD}{HH}{mm}.json",
        "batchFrequencyInSeconds":120,"maxChunkSizeInBytes":314572800,"encoding":"JSON","id":"x"})"));
    EXPECT_EQ(endpoints.at("webhooks").at(0), json::parse(R"({"name":"hook",
        "endpointUri":"https://example.com/in","headers":{"X-Key":"1"}})"));
    EXPECT_EQ(endpoints.at("kafka").at(0), json::parse(R"({"name":"stream","brokers":"k:9092",
        "topic":"t","properties":{"acks":"all"}})"));
    EXPECT_EQ(out.at("routes").at(1), json::parse(R"({"name":"lifecycle",
        "source":"DeviceLifecycleEvents","condition":"true","endpointNames":["hook"],
        "isEnabled":false})"));
    EXPECT_EQ(out.at("fallbackRoute").at("endpointNames"), json::parse(R"(["archive"])"));
    EXPECT_EQ(out.at("enrichments"), json::parse(R"([{"key":"hub","value":"$iothubname",
        "endpointNames":["hot","events"]}])"));
}

// As `az iot hub show` / an exported ARM template gives it, wrapped in the IotHubs resource.
TEST(routing_write, reads_an_exported_arm_template) {
    const std::string arm = R"({
  "type": "Microsoft.Devices/IotHubs",
  "apiVersion": "2023-06-30",
  "name": "[parameters('IotHubs_contoso_hub_name')]",
  "location": "westeurope",
  "sku": { "name": "S1", "tier": "Standard", "capacity": 1 },
  "identity": { "type": "None" },
  "properties": {
    "ipFilterRules": [],
    "eventHubEndpoints": {
      "events": { "retentionTimeInDays": 1, "partitionCount": 4 }
    },
    "routing": {
      "endpoints": {
        "serviceBusQueues": [],
        "serviceBusTopics": [],
        "eventHubs": [
          {
            "connectionString": "Endpoint=sb://contoso-ehns.servicebus.windows.net:5671/;SharedAccessKeyName=iothubroutes_contoso-hub;SharedAccessKey=Xq8Tn2b7Rk0pLm4Vw9Zy1Ac3Ef5Gh6Ij7Kl8Mn9Op0=;EntityPath=telemetry-alerts",
            "authenticationType": "keyBased",
            "name": "alerts-eh",
            "id": "5c1f5e0a-7d1b-4a6e-9a1c-2d0f3e4b5a6c",
            "subscriptionId": "9c2b4a7e-1d3f-4e5a-8b6c-0d1e2f3a4b5c",
            "resourceGroup": "contoso-iot-rg"
          }
        ],
        "storageContainers": [
          {
            "connectionString": "DefaultEndpointsProtocol=https;AccountName=contosoarchive;AccountKey=dGhpcyBpcyBub3QgYSByZWFsIGtleQ==;EndpointSuffix=core.windows.net",
            "containerName": "telemetry-archive",
            "fileNameFormat": "{iothub}/{partition}/{YYYY}/{MM}/{DD}/{HH}/{mm}",
            "batchFrequencyInSeconds": 100,
            "maxChunkSizeInBytes": 104857600,
            "encoding": "avro",
            "authenticationType": "keyBased",
            "name": "archive",
            "id": "0b9e8d7c-6f5a-4b3c-2d1e-0f9a8b7c6d5e",
            "subscriptionId": "9c2b4a7e-1d3f-4e5a-8b6c-0d1e2f3a4b5c",
            "resourceGroup": "contoso-iot-rg"
          }
        ],
        "cosmosDBSqlContainers": []
      },
      "routes": [
        {
          "name": "TemperatureAlerts",
          "source": "DeviceMessages",
          "condition": "$body.temperature > 30 AND $connectionDeviceId != 'test-device'",
          "endpointNames": [ "alerts-eh" ],
          "isEnabled": true
        },
        {
          "name": "ArchiveEverything",
          "source": "DeviceMessages",
          "condition": "true",
          "endpointNames": [ "archive" ],
          "isEnabled": true
        },
        {
          "name": "ConnectionEvents",
          "source": "DeviceConnectionStateEvents",
          "condition": "true",
          "endpointNames": [ "events" ],
          "isEnabled": false
        }
      ],
      "fallbackRoute": {
        "name": "$fallback",
        "source": "DeviceMessages",
        "condition": "true",
        "endpointNames": [ "events" ],
        "isEnabled": true
      },
      "enrichments": [
        { "key": "iothub", "value": "$iothubname", "endpointNames": [ "alerts-eh", "events" ] },
        { "key": "site", "value": "$twin.tags.site", "endpointNames": [ "archive" ] }
      ]
    },
    "storageEndpoints": {
      "$default": { "sasTtlAsIso8601": "PT1H", "connectionString": "", "containerName": "" }
    },
    "messagingEndpoints": {
      "fileNotifications": { "lockDurationAsIso8601": "PT1M", "ttlAsIso8601": "PT1H", "maxDeliveryCount": 10 }
    },
    "enableFileUploadNotifications": false,
    "cloudToDevice": { "maxDeliveryCount": 10, "defaultTtlAsIso8601": "PT1H" },
    "features": "None"
  }
})";
    auto c = ok(arm);
    ASSERT_EQ(c.endpoints.size(), 2u);
    const auto& eh = c.endpoints[0];
    EXPECT_EQ(eh.kind, endpoint_kind::event_hub);
    EXPECT_EQ(eh.name, "alerts-eh");
    EXPECT_FALSE(eh.hosted());
    EXPECT_TRUE(eh.entity_path.empty());
    EXPECT_EQ(eh.raw.at("subscriptionId"), "9c2b4a7e-1d3f-4e5a-8b6c-0d1e2f3a4b5c");
    EXPECT_EQ(eh.raw.at("resourceGroup"), "contoso-iot-rg");
    EXPECT_EQ(eh.raw.at("id"), "5c1f5e0a-7d1b-4a6e-9a1c-2d0f3e4b5a6c");
    const auto& st = c.endpoints[1];
    EXPECT_EQ(st.kind, endpoint_kind::storage_container);
    EXPECT_EQ(st.container_name, "telemetry-archive");
    EXPECT_EQ(st.batch_frequency_seconds, 100u);
    EXPECT_EQ(st.max_chunk_bytes, 104857600u);
    ASSERT_EQ(c.routes.size(), 3u);
    EXPECT_EQ(c.routes[0].endpoint, "alerts-eh");
    EXPECT_EQ(c.routes[2].from, source::device_connection_state_events);
    EXPECT_FALSE(c.routes[2].enabled);
    EXPECT_EQ(c.fallback.endpoint, "events");
    ASSERT_EQ(c.enrichments.size(), 2u);
    EXPECT_EQ(c.enrichments[1].value, "$twin.tags.site");
    EXPECT_TRUE(c.routes_source(source::device_messages));
    EXPECT_FALSE(c.routes_source(source::device_connection_state_events));

    // Written back, the ARM fields the hub ignores are still there.
    auto out = to_json(c);
    const auto& written = out.at("endpoints").at("eventHubs").at(0).as_object();
    EXPECT_EQ(written.at("subscriptionId"), "9c2b4a7e-1d3f-4e5a-8b6c-0d1e2f3a4b5c");
    EXPECT_EQ(written.at("authenticationType"), "keyBased");
    EXPECT_EQ(written.at("connectionString"), json::value(eh.connection_string));
    expect_same(c, ok(json::serialize(out)));
}

}  // namespace
}  // namespace iothub::routing
