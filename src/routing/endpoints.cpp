// Reading, validating and writing back custom endpoints, and the JSON field helpers both files of
// the module use.
#include "common/encoding.hpp"
#include "routing/detail.hpp"

#include <boost/json.hpp>

#include <array>
#include <cmath>
#include <limits>
#include <string_view>
#include <vector>

namespace iothub::routing::detail {
namespace json = boost::json;

namespace {

constexpr std::uint64_t min_chunk_bytes = 10485760;   // 10 MB (ARM)
constexpr std::uint64_t max_chunk_bytes = 524288000;  // 500 MB (ARM)
constexpr std::size_t max_topic_length = 249;         // Kafka's limit
constexpr std::size_t max_subject_length = 255;       // a template; NATS has no fixed limit

constexpr std::array<std::string_view, 2> subject_placeholders = {"{deviceId}", "{iothub}"};

// A NATS endpoint's optional text fields: their JSON names and where the model keeps them.
const std::array<std::pair<std::string_view, std::string endpoint::*>, 7> nats_texts = {{
    {"credentialsFile", &endpoint::credentials_file},
    {"user", &endpoint::user},
    {"password", &endpoint::password},
    {"token", &endpoint::token},
    {"caFile", &endpoint::ca_file},
    {"certFile", &endpoint::cert_file},
    {"keyFile", &endpoint::key_file},
}};

constexpr std::array<std::string_view, 4> reserved_names = {"events", "fileNotifications",
                                                            "$default", "eventgrid"};

constexpr std::array<std::string_view, 7> file_name_tokens = {
    "{iothub}", "{partition}", "{YYYY}", "{MM}", "{DD}", "{HH}", "{mm}"};

bool is_digits(std::string_view s) {
    if (s.empty()) return false;
    for (char c : s)
        if (c < '0' || c > '9') return false;
    return true;
}

bool istarts_with(std::string_view s, std::string_view prefix) {
    return s.size() >= prefix.size() && iequals(s.substr(0, prefix.size()), prefix);
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

bool valid_port(std::string_view s) {
    if (!is_digits(s) || s.size() > 5) return false;
    int port = std::stoi(std::string(s));
    return port >= 1 && port <= 65535;
}

// "host", "host:port" or "[v6]:port"; `need_port` for Kafka, whose clients have no default port.
bool valid_host_port(std::string_view s, bool need_port) {
    std::string_view host, port;
    bool has_port = false;
    if (!s.empty() && s.front() == '[') {
        auto close = s.find(']');
        if (close == std::string_view::npos || close == 1) return false;
        host = s.substr(1, close - 1);
        if (host.find_first_not_of("0123456789abcdefABCDEF:.") != std::string_view::npos)
            return false;
        auto rest = s.substr(close + 1);
        if (!rest.empty()) {
            if (rest.front() != ':') return false;
            port = rest.substr(1);
            has_port = true;
        }
    } else {
        auto colon = s.find(':');
        host = s.substr(0, colon);
        if (colon != std::string_view::npos) {
            port = s.substr(colon + 1);
            has_port = true;
        }
        if (host.empty()) return false;
        for (char c : host)
            if (!is_alnum(c) && c != '.' && c != '-' && c != '_') return false;
    }
    if (has_port) return valid_port(port);
    return !need_port;
}

// `Key=Value;...`, keys ignoring case; a value may contain '=' (Base64 keys end with it).
using pairs = std::vector<std::pair<std::string, std::string>>;

result<pairs> split_connection_string(std::string_view text, std::string_view where) {
    pairs out;
    while (!text.empty()) {
        auto semi = text.find(';');
        auto segment = trim(text.substr(0, semi));
        text = semi == std::string_view::npos ? std::string_view() : text.substr(semi + 1);
        if (segment.empty()) continue;
        auto eq = segment.find('=');
        if (eq == std::string_view::npos || trim(segment.substr(0, eq)).empty())
            return fault(std::string(where) +
                         ": the connection string is not a list of Key=Value pairs separated "
                         "by ';'.");
        std::string key(trim(segment.substr(0, eq)));
        for (const auto& [k, v] : out)
            if (iequals(k, key))
                return fault(std::string(where) + ": the connection string gives " + quoted(key) +
                             " twice.");
        out.emplace_back(std::move(key), std::string(trim(segment.substr(eq + 1))));
    }
    return out;
}

const std::string* lookup(const pairs& p, std::string_view key) {
    for (const auto& [k, v] : p)
        if (iequals(k, key)) return &v;
    return nullptr;
}

result<void> check_authentication(const json::object& o, std::string_view where) {
    auto auth = get_string(o, "authenticationType", where);
    if (!auth) return auth.error();
    if (!*auth || iequals(**auth, "keyBased")) return {};
    if (iequals(**auth, "identityBased"))
        return fault(std::string(where) +
                     " uses identity-based authentication, which this hub does not support; give "
                     "a connectionString with a shared access key instead.");
    return fault(std::string(where) + " has unknown authenticationType " + quoted(**auth) +
                 "; use keyBased.");
}

// Without a connection string, an endpointUri means Azure would authenticate with the hub's managed
// identity: nothing here can stand in for that.
result<void> refuse_bare_endpoint_uri(const json::object& o, const endpoint& e,
                                      std::string_view where) {
    auto uri = get_string(o, "endpointUri", where);
    if (!uri) return uri.error();
    if (*uri && !(*uri)->empty() && e.connection_string.empty())
        return fault(std::string(where) +
                     " gives endpointUri without a connectionString; identity-based "
                     "authentication is not supported, give a connectionString with a shared "
                     "access key.");
    return {};
}

result<void> read_event_hub(const json::object& o, endpoint& e, std::string_view where) {
    if (auto r = check_authentication(o, where); !r) return r;
    auto cs = get_string(o, "connectionString", where);
    if (!cs) return cs.error();
    auto entity = get_string(o, "entityPath", where);
    if (!entity) return entity.error();
    e.connection_string = cs->value_or("");
    e.entity_path = entity->value_or("");
    if (auto r = refuse_bare_endpoint_uri(o, e, where); !r) return r;
    if (e.hosted()) return {};

    auto p = split_connection_string(e.connection_string, where);
    if (!p) return p.error();
    const std::string* ep = lookup(*p, "Endpoint");
    std::string_view rest = ep ? std::string_view(*ep) : std::string_view();
    if (!istarts_with(rest, "sb://"))
        return fault(std::string(where) +
                     ": the connection string needs Endpoint=sb://<host>/ (an Event Hubs "
                     "namespace).");
    rest.remove_prefix(5);
    if (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);
    if (!valid_host_port(rest, false))
        return fault(std::string(where) + ": the connection string's Endpoint " + quoted(*ep) +
                     " has no valid host.");
    for (auto key : {"SharedAccessKeyName", "SharedAccessKey"}) {
        const std::string* v = lookup(*p, key);
        if (!v || v->empty())
            return fault(std::string(where) + ": the connection string has no " + key + ".");
    }
    const std::string* in_string = lookup(*p, "EntityPath");
    if (in_string && in_string->empty()) in_string = nullptr;
    if (!in_string && e.entity_path.empty())
        return fault(std::string(where) +
                     " names no event hub: give EntityPath in the connection string or "
                     "entityPath.");
    if (in_string && !e.entity_path.empty() && !iequals(*in_string, e.entity_path))
        return fault(std::string(where) + ": entityPath " + quoted(e.entity_path) +
                     " differs from the connection string's EntityPath " + quoted(*in_string) +
                     ".");
    return {};
}

bool valid_container_name(std::string_view s) {
    if (s.size() < 3 || s.size() > 63) return false;
    for (std::size_t i = 0; i < s.size(); ++i) {
        char c = s[i];
        bool lower_or_digit = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        if (c == '-') {
            if (i == 0 || i + 1 == s.size() || s[i - 1] == '-') return false;
        } else if (!lower_or_digit) {
            return false;
        }
    }
    return true;
}

result<void> check_file_name_format(std::string_view format, std::string_view where) {
    for (auto token : file_name_tokens) {
        std::size_t count = 0;
        for (auto at = format.find(token); at != std::string_view::npos;
             at = format.find(token, at + token.size()))
            ++count;
        if (count != 1)
            return fault(std::string(where) + ": fileNameFormat " + quoted(format) +
                         (count == 0 ? " lacks " : " repeats ") + std::string(token) +
                         "; {iothub}, {partition}, {YYYY}, {MM}, {DD}, {HH} and {mm} must each "
                         "appear exactly once.");
    }
    // Anything else in braces would be written literally, which is never what was meant.
    std::string rest(format);
    for (auto token : file_name_tokens) rest.erase(rest.find(token), token.size());
    if (rest.find_first_of("{}") != std::string::npos)
        return fault(std::string(where) + ": fileNameFormat " + quoted(format) +
                     " has an unknown {token}.");
    return {};
}

result<void> read_storage(const json::object& o, endpoint& e, std::string_view where,
                          const limits& l) {
    if (auto r = check_authentication(o, where); !r) return r;
    auto cs = get_string(o, "connectionString", where);
    if (!cs) return cs.error();
    e.connection_string = cs->value_or("");
    if (auto r = refuse_bare_endpoint_uri(o, e, where); !r) return r;
    if (!e.connection_string.empty()) {
        auto p = split_connection_string(e.connection_string, where);
        if (!p) return p.error();
        if (!lookup(*p, "AccountName") && !lookup(*p, "BlobEndpoint") &&
            !lookup(*p, "UseDevelopmentStorage"))
            return fault(std::string(where) +
                         ": the connection string names no storage account (AccountName or "
                         "BlobEndpoint).");
    }

    auto container = get_string(o, "containerName", where);
    if (!container) return container.error();
    if (!*container || (*container)->empty())
        return fault(std::string(where) + " has no containerName.");
    e.container_name = **container;
    if (!valid_container_name(e.container_name))
        return fault(std::string(where) + ": containerName " + quoted(e.container_name) +
                     " is not a valid container name (3 to 63 lower-case letters, digits and "
                     "single hyphens, starting and ending with a letter or digit).");

    auto format = get_string(o, "fileNameFormat", where);
    if (!format) return format.error();
    if (*format) e.file_name_format = **format;
    if (auto r = check_file_name_format(e.file_name_format, where); !r) return r;

    auto frequency = get_integer(o, "batchFrequencyInSeconds", where);
    if (!frequency) return frequency.error();
    if (*frequency) {
        if (**frequency < l.min_batch_frequency_seconds ||
            **frequency > l.max_batch_frequency_seconds)
            return fault(std::string(where) + ": batchFrequencyInSeconds is " +
                         std::to_string(**frequency) + "; it must be between " +
                         std::to_string(l.min_batch_frequency_seconds) + " and " +
                         std::to_string(l.max_batch_frequency_seconds) + ".");
        e.batch_frequency_seconds = static_cast<std::uint32_t>(**frequency);
    }

    auto chunk = get_integer(o, "maxChunkSizeInBytes", where);
    if (!chunk) return chunk.error();
    if (*chunk) {
        if (**chunk < static_cast<std::int64_t>(min_chunk_bytes) ||
            **chunk > static_cast<std::int64_t>(max_chunk_bytes))
            return fault(std::string(where) + ": maxChunkSizeInBytes is " +
                         std::to_string(**chunk) + "; it must be between " +
                         std::to_string(min_chunk_bytes) + " and " +
                         std::to_string(max_chunk_bytes) + ".");
        e.max_chunk_bytes = static_cast<std::uint64_t>(**chunk);
    }

    auto encoding = get_string(o, "encoding", where);
    if (!encoding) return encoding.error();
    if (*encoding) {
        if (iequals(**encoding, "avro"))
            e.encoding = blob_encoding::avro;
        else if (iequals(**encoding, "avrodeflate"))
            e.encoding = blob_encoding::avro_deflate;
        else if (iequals(**encoding, "json"))
            e.encoding = blob_encoding::json;
        else
            return fault(std::string(where) + " has unknown encoding " + quoted(**encoding) +
                         "; use avro, avroDeflate or JSON.");
    }
    return {};
}

// RFC 9110 token characters.
bool is_token(std::string_view s) {
    if (s.empty()) return false;
    for (char c : s)
        if (!is_alnum(c) && std::string_view("!#$%&'*+-.^_`|~").find(c) == std::string_view::npos)
            return false;
    return true;
}

bool has_control(std::string_view s) {
    for (char c : s)
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) return true;
    return false;
}

bool valid_http_uri(std::string_view uri) {
    std::string_view rest;
    if (istarts_with(uri, "http://"))
        rest = uri.substr(7);
    else if (istarts_with(uri, "https://"))
        rest = uri.substr(8);
    else
        return false;
    if (has_control(uri) || uri.find(' ') != std::string_view::npos) return false;
    auto authority = rest.substr(0, rest.find_first_of("/?#"));
    if (auto at = authority.rfind('@'); at != std::string_view::npos)
        authority = authority.substr(at + 1);
    return valid_host_port(authority, false);
}

result<void> read_webhook(const json::object& o, endpoint& e, std::string_view where) {
    auto uri = get_string(o, "endpointUri", where);
    if (!uri) return uri.error();
    if (!*uri || (*uri)->empty()) return fault(std::string(where) + " has no endpointUri.");
    e.endpoint_uri = **uri;
    if (!valid_http_uri(e.endpoint_uri))
        return fault(std::string(where) + ": endpointUri " + quoted(e.endpoint_uri) +
                     " is not an http:// or https:// URL with a host.");

    const json::value* headers = find(o, "headers");
    if (!headers) return {};
    if (!headers->is_object()) return fault(std::string(where) + ": headers must be an object.");
    std::string header_where = std::string(where) + "'s headers";
    if (auto r = check_unique_keys(headers->get_object(), header_where); !r) return r;
    for (const auto& [name, value] : headers->get_object()) {
        if (!is_token(name))
            return fault(std::string(where) + ": header name " + quoted(name) +
                         " is not a valid HTTP header name.");
        if (!value.is_string())
            return fault(std::string(where) + ": header " + quoted(name) +
                         " must have a string value.");
        if (has_control(value.get_string()))
            return fault(std::string(where) + ": header " + quoted(name) +
                         " has a control character in its value.");
        e.headers.emplace_back(std::string(name), std::string(value.get_string()));
    }
    return {};
}

bool valid_topic(std::string_view t) {
    if (t.empty() || t.size() > max_topic_length || t == "." || t == "..") return false;
    for (char c : t)
        if (!is_alnum(c) && c != '.' && c != '_' && c != '-') return false;
    return true;
}

result<void> read_kafka(const json::object& o, endpoint& e, std::string_view where) {
    auto brokers = get_string(o, "brokers", where);
    if (!brokers) return brokers.error();
    if (!*brokers || (*brokers)->empty()) return fault(std::string(where) + " has no brokers.");
    e.brokers = **brokers;
    std::string_view list = e.brokers;
    while (true) {
        auto comma = list.find(',');
        auto broker = trim(list.substr(0, comma));
        if (!valid_host_port(broker, true))
            return fault(std::string(where) + ": brokers " + quoted(e.brokers) +
                         " is not a list of host:port separated by ','.");
        if (comma == std::string_view::npos) break;
        list.remove_prefix(comma + 1);
    }

    auto topic = get_string(o, "topic", where);
    if (!topic) return topic.error();
    if (!*topic || (*topic)->empty()) return fault(std::string(where) + " has no topic.");
    e.topic = **topic;
    if (!valid_topic(e.topic))
        return fault(std::string(where) + ": topic " + quoted(e.topic) +
                     " is not a valid Kafka topic (letters, digits, '.', '_' and '-', at most 249 "
                     "characters).");

    const json::value* properties = find(o, "properties");
    if (!properties) return {};
    if (!properties->is_object())
        return fault(std::string(where) + ": properties must be an object.");
    for (const auto& [name, value] : properties->get_object()) {
        if (name.empty()) return fault(std::string(where) + " has a property with no name.");
        if (!value.is_string())
            return fault(std::string(where) + ": property " + quoted(name) +
                         " must have a string value.");
        e.kafka_properties.emplace(std::string(name), std::string(value.get_string()));
    }
    return {};
}

// NATS subjects are tokens separated by '.'; '*' and '>' are wildcards a publish may not use, and
// subjects starting with '$' are the server's own ($JS, $KV, $SYS).
result<void> check_subject_template(std::string_view subject, std::string_view where) {
    auto bad = [&](std::string_view why) {
        return fault(std::string(where) + ": subject " + quoted(subject) + " " + std::string(why));
    };
    if (subject.empty()) return fault(std::string(where) + " has no subject.");
    if (subject.size() > max_subject_length)
        return bad("is longer than " + std::to_string(max_subject_length) + " characters.");
    if (subject.front() == '$')
        return bad("starts with '$', which NATS keeps for its own subjects.");
    std::string_view rest = subject;
    while (true) {
        auto dot = rest.find('.');
        auto token = rest.substr(0, dot);
        if (token.empty()) return bad("has an empty token (a leading, trailing or double '.').");
        if (dot == std::string_view::npos) break;
        rest.remove_prefix(dot + 1);
    }
    std::string literal(subject);
    for (auto placeholder : subject_placeholders)
        for (auto at = literal.find(placeholder); at != std::string::npos;
             at = literal.find(placeholder))
            literal.erase(at, placeholder.size());
    if (literal.find_first_of("{}") != std::string::npos)
        return bad("has an unknown {placeholder}; use {deviceId} or {iothub}.");
    if (literal.find_first_of("*>") != std::string::npos)
        return bad("has a wildcard ('*' or '>'), which a message cannot be published to.");
    for (char c : literal)
        if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f)
            return bad("has a space or a control character.");
    return {};
}

result<void> read_nats(const json::object& o, endpoint& e, std::string_view where) {
    if (const json::value* servers = find(o, "servers")) {
        std::vector<std::string> listed;
        if (servers->is_string()) {
            std::string_view list = servers->get_string();
            while (!list.empty()) {
                auto comma = list.find(',');
                if (auto one = trim(list.substr(0, comma)); !one.empty()) listed.emplace_back(one);
                list =
                    comma == std::string_view::npos ? std::string_view() : list.substr(comma + 1);
            }
        } else if (servers->is_array()) {
            for (const auto& v : servers->get_array()) {
                if (!v.is_string()) return fault(std::string(where) + ": servers must be strings.");
                listed.emplace_back(trim(v.get_string()));
            }
        } else {
            return fault(std::string(where) +
                         ": servers must be a string (separated by ',') or an array of strings.");
        }
        for (const auto& url : listed) {
            std::string_view host = url;
            for (std::string_view scheme : {"nats://", "tls://"})
                if (istarts_with(host, scheme)) host.remove_prefix(scheme.size());
            if (auto at = host.rfind('@'); at != std::string_view::npos)
                host.remove_prefix(at + 1);  // user:password@ in the URL
            if (!host.empty() && host.back() == '/') host.remove_suffix(1);
            if (host.find("://") != std::string_view::npos || !valid_host_port(host, false))
                return fault(std::string(where) + ": server " + quoted(url) +
                             " is not nats://host:port or tls://host:port.");
        }
        e.servers = std::move(listed);
    }
    auto subject = get_string(o, "subject", where);
    if (!subject) return subject.error();
    e.subject = subject->value_or("");
    if (auto r = check_subject_template(e.subject, where); !r) return r;
    auto jetstream = get_bool(o, "jetStream", where);
    if (!jetstream) return jetstream.error();
    e.jetstream = jetstream->value_or(false);
    for (const auto& [key, field] : nats_texts) {
        auto v = get_string(o, key, where);
        if (!v) return v.error();
        e.*field = v->value_or("");
    }
    if (e.cert_file.empty() != e.key_file.empty())
        return fault(std::string(where) + ": certFile and keyFile go together.");
    if (e.password.size() && e.user.empty())
        return fault(std::string(where) + ": a password needs a user.");
    return {};
}

// The fields of each kind that endpoint_json writes from the model rather than from `raw`.
std::vector<std::string_view> interpreted_fields(endpoint_kind k) {
    switch (k) {
        case endpoint_kind::event_hub:
            return {"name", "connectionString", "entityPath"};
        case endpoint_kind::storage_container:
            return {"name",           "connectionString",        "containerName",
                    "fileNameFormat", "batchFrequencyInSeconds", "maxChunkSizeInBytes",
                    "encoding"};
        case endpoint_kind::webhook:
            return {"name", "endpointUri", "headers"};
        case endpoint_kind::kafka:
            return {"name", "brokers", "topic", "properties"};
        case endpoint_kind::nats:
            return {"name",     "servers", "subject", "jetStream", "credentialsFile", "user",
                    "password", "token",   "caFile",  "certFile",  "keyFile"};
    }
    return {"name"};
}

std::string_view encoding_name(blob_encoding b) {
    switch (b) {
        case blob_encoding::avro:
            return "avro";
        case blob_encoding::avro_deflate:
            return "avroDeflate";
        case blob_encoding::json:
            return "JSON";
    }
    return "avro";
}

}  // namespace

const json::value* find(const json::object& o, std::string_view key) {
    for (const auto& [k, v] : o)
        if (iequals(k, key)) return v.is_null() ? nullptr : &v;
    return nullptr;
}

result<void> check_unique_keys(const json::object& o, std::string_view where) {
    for (auto a = o.begin(); a != o.end(); ++a)
        for (auto b = std::next(a); b != o.end(); ++b)
            if (iequals(a->key(), b->key()))
                return fault(std::string(where) + " gives " + quoted(a->key()) + " and " +
                             quoted(b->key()) + ", which are the same key ignoring case.");
    return {};
}

result<std::optional<std::string>> get_string(const json::object& o, std::string_view key,
                                              std::string_view where) {
    const json::value* v = find(o, key);
    if (!v) return std::optional<std::string>();
    if (!v->is_string())
        return fault(std::string(where) + ": " + std::string(key) + " must be a string.");
    return std::optional<std::string>(std::string(v->get_string()));
}

result<std::optional<bool>> get_bool(const json::object& o, std::string_view key,
                                     std::string_view where) {
    const json::value* v = find(o, key);
    if (!v) return std::optional<bool>();
    if (!v->is_bool())
        return fault(std::string(where) + ": " + std::string(key) + " must be true or false.");
    return std::optional<bool>(v->get_bool());
}

result<std::optional<std::int64_t>> get_integer(const json::object& o, std::string_view key,
                                                std::string_view where) {
    const json::value* v = find(o, key);
    if (!v) return std::optional<std::int64_t>();
    if (v->is_int64()) return std::optional<std::int64_t>(v->get_int64());
    if (v->is_uint64()) return std::optional(std::numeric_limits<std::int64_t>::max());
    // 300.0 is still a whole number of seconds.
    if (v->is_double() && std::trunc(v->get_double()) == v->get_double() &&
        std::fabs(v->get_double()) < 9e18)
        return std::optional<std::int64_t>(static_cast<std::int64_t>(v->get_double()));
    return fault(std::string(where) + ": " + std::string(key) + " must be a whole number.");
}

result<void> check_name(std::string_view name, std::string_view what, const limits& l) {
    if (name.size() > l.max_name_length)
        return fault(std::string(what) + " name " + quoted(name) + " is longer than " +
                     std::to_string(l.max_name_length) + " characters.");
    for (char c : name)
        if (!is_alnum(c) && c != '.' && c != '_' && c != '-')
            return fault(std::string(what) + " name " + quoted(name) +
                         " may contain only letters, digits, '.', '_' and '-'.");
    return {};
}

result<endpoint> parse_endpoint(endpoint_kind kind, const json::object& o, std::string_view where,
                                const limits& l) {
    if (auto r = check_unique_keys(o, where); !r) return r.error();
    endpoint e;
    e.kind = kind;
    auto name = get_string(o, "name", where);
    if (!name) return name.error();
    if (!*name || (*name)->empty()) return fault(std::string(where) + " has no name.");
    e.name = **name;
    // Before the character check, so `$default` is called reserved rather than misspelt.
    for (auto reserved : reserved_names)
        if (iequals(e.name, reserved))
            return fault("Endpoint name " + quoted(e.name) +
                         " is reserved (events, fileNotifications, $default and eventgrid are).");
    if (auto r = check_name(e.name, "Endpoint", l); !r) return r.error();

    std::string named = "Endpoint " + quoted(e.name);
    result<void> read;
    switch (kind) {
        case endpoint_kind::event_hub:
            read = read_event_hub(o, e, named);
            break;
        case endpoint_kind::storage_container:
            read = read_storage(o, e, named, l);
            break;
        case endpoint_kind::webhook:
            read = read_webhook(o, e, named);
            break;
        case endpoint_kind::kafka:
            read = read_kafka(o, e, named);
            break;
        case endpoint_kind::nats:
            read = read_nats(o, e, named);
            break;
    }
    if (!read) return read.error();
    e.raw = o;
    // Normalized now, so a configuration read back from its own JSON is identical to it.
    e.raw = endpoint_json(e);
    return e;
}

json::object endpoint_json(const endpoint& e) {
    auto interpreted = interpreted_fields(e.kind);
    json::object out;
    out["name"] = e.name;
    switch (e.kind) {
        case endpoint_kind::event_hub:
            if (!e.connection_string.empty()) out["connectionString"] = e.connection_string;
            if (!e.entity_path.empty()) out["entityPath"] = e.entity_path;
            break;
        case endpoint_kind::storage_container:
            if (!e.connection_string.empty()) out["connectionString"] = e.connection_string;
            out["containerName"] = e.container_name;
            out["fileNameFormat"] = e.file_name_format;
            out["batchFrequencyInSeconds"] = static_cast<std::int64_t>(e.batch_frequency_seconds);
            out["maxChunkSizeInBytes"] = static_cast<std::int64_t>(e.max_chunk_bytes);
            out["encoding"] = encoding_name(e.encoding);
            break;
        case endpoint_kind::webhook: {
            out["endpointUri"] = e.endpoint_uri;
            json::object headers;
            for (const auto& [k, v] : e.headers) headers[k] = v;
            if (!headers.empty()) out["headers"] = std::move(headers);
            break;
        }
        case endpoint_kind::kafka: {
            out["brokers"] = e.brokers;
            out["topic"] = e.topic;
            json::object properties;
            for (const auto& [k, v] : e.kafka_properties) properties[k] = v;
            if (!properties.empty()) out["properties"] = std::move(properties);
            break;
        }
        case endpoint_kind::nats: {
            if (!e.servers.empty()) {
                json::array servers;
                for (const auto& url : e.servers) servers.emplace_back(url);
                out["servers"] = std::move(servers);
            }
            out["subject"] = e.subject;
            out["jetStream"] = e.jetstream;
            for (const auto& [key, field] : nats_texts)
                if (!(e.*field).empty()) out[key] = e.*field;
            break;
        }
    }
    for (const auto& [k, v] : e.raw) {
        bool ours = false;
        for (auto f : interpreted) ours = ours || iequals(k, f);
        if (!ours) out[k] = v;
    }
    return out;
}

}  // namespace iothub::routing::detail
