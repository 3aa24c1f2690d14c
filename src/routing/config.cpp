// Reading the routing document as a whole and writing it back; endpoints.cpp reads each custom
// endpoint.
#include "routing/config.hpp"

#include "common/encoding.hpp"
#include "routing/detail.hpp"

#include <boost/json.hpp>

#include <array>

namespace iothub::routing {
namespace json = boost::json;
using detail::fault;
using detail::find;
using detail::is_alnum;
using detail::quoted;

namespace {

constexpr std::array<std::string_view, source_count> source_names = {
    "DeviceMessages", "TwinChangeEvents", "DeviceLifecycleEvents", "DeviceConnectionStateEvents",
    "DeviceJobLifecycleEvents"};

// ARM RoutingSource values the hub has nothing to carry for.
constexpr std::array<std::string_view, 3> unsupported_sources = {
    "Invalid", "DigitalTwinChangeEvents", "MqttBrokerMessages"};

constexpr std::string_view fallback_name = "$fallback";

constexpr std::array<std::string_view, 4> routing_keys = {"endpoints", "routes", "fallbackRoute",
                                                          "enrichments"};

// ARM's five collections and the hub's three, in the order to_json writes them. The ones without a
// kind must be empty.
struct collection {
    std::string_view key;
    std::optional<endpoint_kind> kind;
};
constexpr std::array<collection, 8> collections = {{
    {"serviceBusQueues", std::nullopt},
    {"serviceBusTopics", std::nullopt},
    {"eventHubs", endpoint_kind::event_hub},
    {"storageContainers", endpoint_kind::storage_container},
    {"cosmosDBSqlContainers", std::nullopt},
    {"webhooks", endpoint_kind::webhook},
    {"kafka", endpoint_kind::kafka},
    {"nats", endpoint_kind::nats},
}};

constexpr std::array<std::string_view, 3> twin_prefixes = {
    "$twin.tags.", "$twin.properties.desired.", "$twin.properties.reported."};

template <std::size_t N>
bool contains_ignoring_case(const std::array<std::string_view, N>& names, std::string_view s) {
    for (auto n : names)
        if (iequals(n, s)) return true;
    return false;
}

// An absent array is empty; `key` is written as ARM spells it.
result<const json::array*> get_array(const json::object& o, std::string_view key,
                                     std::string_view where) {
    const json::value* v = find(o, key);
    if (!v) return static_cast<const json::array*>(nullptr);
    if (!v->is_array())
        return fault(std::string(where) + ": " + std::string(key) + " must be an array.");
    return &v->get_array();
}

// The routing object, out of the `properties` (a whole IotHubs resource) or `routing` wrapper.
result<const json::object*> routing_object(const json::object& document) {
    for (const auto& [k, v] : document) {
        if (iequals(k, "properties")) {
            if (!v.is_object()) return fault("properties must be an object.");
            const json::value* r = find(v.get_object(), "routing");
            if (!r || !r->is_object())
                return fault("The document has properties but no properties.routing object.");
            return &r->get_object();
        }
        if (iequals(k, "routing")) {
            if (!v.is_object()) return fault("routing must be an object.");
            return &v.get_object();
        }
    }
    return &document;
}

bool endpoint_exists(const routing_config& c, std::string_view name) {
    return iequals(name, builtin_events) || iequals(name, builtin_eventgrid) ||
           c.find_endpoint(name) != nullptr;
}

result<void> read_endpoints(const json::object& o, routing_config& c, const limits& l) {
    const json::value* v = find(o, "endpoints");
    if (!v) return {};
    if (!v->is_object()) return fault("endpoints must be an object.");
    const json::object& eo = v->get_object();
    if (auto r = detail::check_unique_keys(eo, "endpoints"); !r) return r;

    std::size_t count = 0;
    for (const auto& [k, _] : eo) {
        const collection* col = nullptr;
        for (const auto& candidate : collections)
            if (iequals(k, candidate.key)) col = &candidate;
        if (!col)
            return fault(
                "Unknown endpoint type " + quoted(k) +
                " in endpoints; use eventHubs, storageContainers, webhooks, kafka or nats.");
        auto a = get_array(eo, col->key, "endpoints");
        if (!a) return a.error();
        if (!*a) continue;
        if (!col->kind && !(*a)->empty())
            return fault(std::string(col->key) +
                         " endpoints are not supported by this hub; use eventHubs, "
                         "storageContainers, webhooks, kafka or nats.");
        count += (*a)->size();
    }
    if (count > l.max_endpoints)
        return fault("There are " + std::to_string(count) + " custom endpoints; at most " +
                     std::to_string(l.max_endpoints) + " are allowed.");

    for (const auto& col : collections) {
        if (!col.kind) continue;
        auto a = get_array(eo, col.key, "endpoints");
        if (!a) return a.error();
        if (!*a) continue;
        for (std::size_t i = 0; i < (*a)->size(); ++i) {
            std::string where = std::string(col.key) + "[" + std::to_string(i) + "]";
            const json::value& item = (**a)[i];
            if (!item.is_object()) return fault(where + " must be an object.");
            auto e = detail::parse_endpoint(*col.kind, item.get_object(), where, l);
            if (!e) return e.error();
            if (c.find_endpoint(e->name))
                return fault("Endpoint name " + quoted(e->name) +
                             " is used more than once; endpoint names are unique across all "
                             "types, ignoring case.");
            c.endpoints.push_back(std::move(*e));
        }
    }
    return {};
}

result<query::condition> read_condition(const json::object& o, const std::string& where,
                                        std::string& text, const limits& l) {
    auto given = detail::get_string(o, "condition", where);
    if (!given) return given.error();
    // ARM: no condition means every message; an empty one is read the same way.
    text = given->value_or("");
    if (text.empty()) text = "true";
    if (text.size() > l.max_condition_length)
        return fault(where + "'s condition is " + std::to_string(text.size()) +
                     " characters long; at most " + std::to_string(l.max_condition_length) +
                     " are allowed.");
    auto c = query::parse_condition(text);
    if (!c) return fault(where + " has an invalid condition: " + c.error().message());
    return std::move(*c);
}

result<std::string> read_route_endpoint(const json::object& o, const std::string& where,
                                        const routing_config& c, source from) {
    const json::value* v = find(o, "endpointNames");
    if (!v) return fault(where + " has no endpointNames; a route names exactly one endpoint.");
    if (!v->is_array()) return fault(where + ": endpointNames must be an array.");
    const json::array& a = v->get_array();
    if (a.size() != 1)
        return fault(where + " names " + std::to_string(a.size()) +
                     " endpoints; a route names exactly one.");
    if (!a[0].is_string() || a[0].get_string().empty())
        return fault(where + ": endpointNames must hold an endpoint name.");
    std::string name(a[0].get_string());
    if (iequals(name, builtin_eventgrid) && from != source::device_messages)
        return fault(where + " names endpoint " + quoted(name) +
                     ", which only DeviceMessages routes may use.");
    if (!endpoint_exists(c, name))
        return fault(where + " names endpoint " + quoted(name) + ", which does not exist.");
    return name;
}

result<source> read_source(const json::object& o, const std::string& where) {
    auto given = detail::get_string(o, "source", where);
    if (!given) return given.error();
    if (!*given || (*given)->empty()) return fault(where + " has no source.");
    if (auto s = source_from(**given)) return *s;
    if (contains_ignoring_case(unsupported_sources, **given))
        return fault(where + " has source " + quoted(**given) +
                     ", which this hub does not support.");
    return fault(where + " has unknown source " + quoted(**given) +
                 "; use DeviceMessages, TwinChangeEvents, DeviceLifecycleEvents, "
                 "DeviceConnectionStateEvents or DeviceJobLifecycleEvents.");
}

result<route> read_route(const json::object& o, std::size_t index, const routing_config& c,
                         const limits& l) {
    std::string where = "routes[" + std::to_string(index) + "]";
    if (auto r = detail::check_unique_keys(o, where); !r) return r.error();
    auto name = detail::get_string(o, "name", where);
    if (!name) return name.error();
    if (!*name || (*name)->empty()) return fault(where + " has no name.");
    if (auto r = detail::check_name(**name, "Route", l); !r) return r.error();
    where = "Route " + quoted(**name);

    auto from = read_source(o, where);
    if (!from) return from.error();
    std::string text;
    auto condition = read_condition(o, where, text, l);
    if (!condition) return condition.error();
    auto target = read_route_endpoint(o, where, c, *from);
    if (!target) return target.error();
    auto enabled = detail::get_bool(o, "isEnabled", where);
    if (!enabled) return enabled.error();
    // ARM requires isEnabled; a template that leaves it out means the route to work.
    return route{std::move(**name),  *from,
                 std::move(text),    std::move(*condition),
                 std::move(*target), enabled->value_or(true)};
}

result<void> read_routes(const json::object& o, routing_config& c, const limits& l) {
    auto a = get_array(o, "routes", "The routing document");
    if (!a) return a.error();
    if (!*a) return {};
    if ((*a)->size() > l.max_routes)
        return fault("There are " + std::to_string((*a)->size()) + " routes; at most " +
                     std::to_string(l.max_routes) + " are allowed.");
    for (std::size_t i = 0; i < (*a)->size(); ++i) {
        const json::value& item = (**a)[i];
        if (!item.is_object()) return fault("routes[" + std::to_string(i) + "] must be an object.");
        auto r = read_route(item.get_object(), i, c, l);
        if (!r) return r.error();
        for (const auto& other : c.routes)
            if (iequals(other.name, r->name))
                return fault("Route name " + quoted(r->name) +
                             " is used more than once; route names are unique ignoring case.");
        c.routes.push_back(std::move(*r));
    }
    return {};
}

result<void> read_fallback(const json::object& o, routing_config& c, const limits& l) {
    const json::value* v = find(o, "fallbackRoute");
    if (!v) return {};
    const std::string where = "fallbackRoute";
    if (!v->is_object()) return fault("fallbackRoute must be an object.");
    const json::object& fo = v->get_object();
    if (auto r = detail::check_unique_keys(fo, where); !r) return r;

    // Azure names it `$fallback`, which route names could not be, so only its length is checked.
    auto name = detail::get_string(fo, "name", where);
    if (!name) return name.error();
    std::string fallback = name->value_or(std::string(fallback_name));
    if (fallback.empty()) fallback = fallback_name;
    if (fallback.size() > l.max_name_length)
        return fault("fallbackRoute's name " + quoted(fallback) + " is longer than " +
                     std::to_string(l.max_name_length) + " characters.");

    auto given = detail::get_string(fo, "source", where);
    if (!given) return given.error();
    if (*given && !iequals(**given, to_string(source::device_messages)))
        return fault("fallbackRoute's source must be DeviceMessages, not " + quoted(**given) + ".");

    std::string text;
    auto condition = read_condition(fo, where, text, l);
    if (!condition) return condition.error();
    auto target = read_route_endpoint(fo, where, c, source::device_messages);
    if (!target) return target.error();
    auto enabled = detail::get_bool(fo, "isEnabled", where);
    if (!enabled) return enabled.error();
    c.fallback = route{std::move(fallback),   source::device_messages, std::move(text),
                       std::move(*condition), std::move(*target),      enabled->value_or(true)};
    return {};
}

result<void> check_enrichment_value(const std::string& value, const std::string& where) {
    if (value.empty()) return fault(where + " has no value.");
    if (value.front() != '$' || value == "$iothubname") return {};
    for (auto prefix : twin_prefixes) {
        if (!value.starts_with(prefix)) continue;
        std::string_view path = std::string_view(value).substr(prefix.size());
        if (!path.empty() && path.front() != '.' && path.back() != '.' &&
            path.find("..") == std::string_view::npos)
            return {};
    }
    return fault(where + " has value " + quoted(value) +
                 "; a value starting with '$' must be $iothubname, $twin.tags.<path>, "
                 "$twin.properties.desired.<path> or $twin.properties.reported.<path>.");
}

result<enrichment> read_enrichment(const json::object& o, std::size_t index,
                                   const routing_config& c) {
    std::string where = "enrichments[" + std::to_string(index) + "]";
    if (auto r = detail::check_unique_keys(o, where); !r) return r.error();
    auto key = detail::get_string(o, "key", where);
    if (!key) return key.error();
    if (!*key || (*key)->empty()) return fault(where + " has no key.");
    for (char ch : **key)
        if (!is_alnum(ch) && ch != '-' && ch != '_' && ch != '.')
            return fault("Enrichment key " + quoted(**key) +
                         " may contain only letters, digits, '-', '_' and '.'.");
    where = "Enrichment " + quoted(**key);

    auto value = detail::get_string(o, "value", where);
    if (!value) return value.error();
    if (auto r = check_enrichment_value(value->value_or(""), where); !r) return r.error();

    auto names = get_array(o, "endpointNames", where);
    if (!names) return names.error();
    if (!*names || (*names)->empty()) return fault(where + " names no endpoint in endpointNames.");
    enrichment out{std::move(**key), std::move(**value), {}};
    for (const auto& n : **names) {
        if (!n.is_string() || n.get_string().empty())
            return fault(where + ": endpointNames must hold endpoint names.");
        std::string name(n.get_string());
        if (!endpoint_exists(c, name))
            return fault(where + " names endpoint " + quoted(name) + ", which does not exist.");
        // Route conditions read application properties ignoring case, so `Site` and `site`
        // would be one property.
        bool repeated = false;
        for (const auto& e : out.endpoints) repeated = repeated || iequals(e, name);
        for (const auto& other : c.enrichments)
            if (iequals(other.key, out.key))
                for (const auto& e : other.endpoints) repeated = repeated || iequals(e, name);
        if (repeated)
            return fault("Enrichment key " + quoted(out.key) +
                         " is given more than once for "
                         "endpoint " +
                         quoted(name) + ".");
        out.endpoints.push_back(std::move(name));
    }
    return out;
}

result<void> read_enrichments(const json::object& o, routing_config& c, const limits& l) {
    auto a = get_array(o, "enrichments", "The routing document");
    if (!a) return a.error();
    if (!*a) return {};
    if ((*a)->size() > l.max_enrichments)
        return fault("There are " + std::to_string((*a)->size()) + " enrichments; at most " +
                     std::to_string(l.max_enrichments) + " are allowed.");
    for (std::size_t i = 0; i < (*a)->size(); ++i) {
        const json::value& item = (**a)[i];
        if (!item.is_object())
            return fault("enrichments[" + std::to_string(i) + "] must be an object.");
        auto e = read_enrichment(item.get_object(), i, c);
        if (!e) return e.error();
        c.enrichments.push_back(std::move(*e));
    }
    return {};
}

json::object route_json(const route& r) {
    return {{"name", r.name},
            {"source", to_string(r.from)},
            {"condition", r.condition_text},
            {"endpointNames", json::array{json::value(r.endpoint)}},
            {"isEnabled", r.enabled}};
}

}  // namespace

std::string_view to_string(source s) {
    return source_names[static_cast<std::size_t>(s)];
}

std::optional<source> source_from(std::string_view name) {
    for (std::size_t i = 0; i < source_names.size(); ++i)
        if (iequals(name, source_names[i])) return static_cast<source>(i);
    return std::nullopt;
}

std::string_view to_string(endpoint_kind k) {
    for (const auto& col : collections)
        if (col.kind == k) return col.key;
    return "eventHubs";
}

const endpoint* routing_config::find_endpoint(std::string_view name) const {
    for (const auto& e : endpoints)
        if (iequals(e.name, name)) return &e;
    return nullptr;
}

bool routing_config::routes_source(source s) const {
    for (const auto& r : routes)
        if (r.enabled && r.from == s) return true;
    if (s != source::device_messages) return false;
    if (!fallback.enabled || !iequals(fallback.endpoint, builtin_events)) return true;
    for (const auto& e : enrichments)
        for (const auto& name : e.endpoints)
            if (iequals(name, builtin_events)) return true;
    return false;
}

routing_config default_config() {
    // Immutable and shareable, so parsed once.
    static const query::condition always = query::parse_condition("true").value();
    return routing_config{
        {},
        {},
        route{std::string(fallback_name), source::device_messages, "true", always,
              std::string(builtin_events), true},
        {},
    };
}

result<routing_config> parse(const json::value& document, const limits& l) {
    if (!document.is_object()) return fault("The routing document must be a JSON object.");
    auto o = routing_object(document.get_object());
    if (!o) return o.error();
    if (auto r = detail::check_unique_keys(**o, "The routing document"); !r) return r.error();
    for (const auto& [k, _] : **o)
        if (!contains_ignoring_case(routing_keys, k))
            return fault("Unknown key " + quoted(k) +
                         " in the routing document; it has endpoints, routes, fallbackRoute and "
                         "enrichments.");

    routing_config c = default_config();
    if (auto r = read_endpoints(**o, c, l); !r) return r.error();
    if (auto r = read_routes(**o, c, l); !r) return r.error();
    if (auto r = read_fallback(**o, c, l); !r) return r.error();
    if (auto r = read_enrichments(**o, c, l); !r) return r.error();
    return c;
}

result<routing_config> parse(std::string_view json_text, const limits& l) {
    // ARM templates may carry comments and trailing commas.
    json::parse_options options;
    options.allow_comments = true;
    options.allow_trailing_commas = true;
    boost::system::error_code ec;
    json::value v = json::parse(json_text, ec, {}, options);
    if (ec)
        return error(errc::format_error,
                     "The routing document is not valid JSON: " + ec.message() + ".");
    return parse(v, l);
}

json::object to_json(const routing_config& c) {
    json::object endpoints;
    for (const auto& col : collections) {
        json::array a;
        for (const auto& e : c.endpoints)
            if (col.kind == e.kind) a.push_back(detail::endpoint_json(e));
        endpoints[col.key] = std::move(a);
    }
    json::array routes;
    for (const auto& r : c.routes) routes.push_back(route_json(r));
    json::array enrichments;
    for (const auto& e : c.enrichments) {
        json::array names;
        for (const auto& n : e.endpoints) names.emplace_back(n);
        enrichments.push_back(
            json::object{{"key", e.key}, {"value", e.value}, {"endpointNames", std::move(names)}});
    }
    return {{"endpoints", std::move(endpoints)},
            {"routes", std::move(routes)},
            {"fallbackRoute", route_json(c.fallback)},
            {"enrichments", std::move(enrichments)}};
}

}  // namespace iothub::routing
