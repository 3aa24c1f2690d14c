#include "registry/identity.hpp"

#include "common/encoding.hpp"

#include <boost/json.hpp>

#include <charconv>

namespace iothub::registry {
namespace json = boost::json;
namespace {

constexpr std::string_view id_punctuation = "-:.+%_#*?!(),=@;$'";
constexpr std::size_t max_id_length = 128;
constexpr std::size_t max_status_reason = 128;

error invalid(std::string message) {
    return error(errc::argument_invalid, std::move(message));
}

json::value string_or_null(const std::string& s) {
    return s.empty() ? json::value(nullptr) : json::value(s);
}

std::string time_or_never(const std::optional<sys_time>& t) {
    return t ? format_iso8601(*t) : std::string(never_timestamp);
}

// Reads an optional string member: absent and null both give nullopt; any other type is an error.
result<std::optional<std::string>> optional_string(const json::object& o, std::string_view key,
                                                   std::string_view where) {
    auto it = o.find(key);
    if (it == o.end() || it->value().is_null()) return std::optional<std::string>{};
    if (!it->value().is_string())
        return invalid(std::string(where) + std::string(key) + " must be a string.");
    return std::optional<std::string>{std::string(it->value().get_string())};
}

result<const json::object*> optional_object(const json::object& o, std::string_view key,
                                            std::string_view where) {
    auto it = o.find(key);
    if (it == o.end() || it->value().is_null()) return static_cast<const json::object*>(nullptr);
    if (!it->value().is_object())
        return invalid(std::string(where) + std::string(key) + " must be an object.");
    return &it->value().get_object();
}

std::string_view kind_name(auth_kind k) {
    switch (k) {
        case auth_kind::sas:
            return "sas";
        case auth_kind::self_signed:
            return "selfSigned";
        case auth_kind::certificate_authority:
            return "certificateAuthority";
        case auth_kind::none:
            return "none";
    }
    return "sas";
}

std::optional<auth_kind> parse_kind(std::string_view s) {
    for (auto k : {auth_kind::sas, auth_kind::self_signed, auth_kind::certificate_authority,
                   auth_kind::none})
        if (iequals(kind_name(k), s)) return k;
    return std::nullopt;
}

bool is_thumbprint(std::string_view t) {
    if (t.size() != 40 && t.size() != 64) return false;
    for (char c : t)
        if (!std::isxdigit(static_cast<unsigned char>(c))) return false;
    return true;
}

result<void> check_key(const std::string& key, std::string_view name) {
    if (key.empty()) return {};
    auto raw = base64_decode(key);
    if (!raw)
        return invalid("authentication.symmetricKey." + std::string(name) + " is not Base64.");
    if (raw->size() < 16 || raw->size() > 64)
        return invalid("authentication.symmetricKey." + std::string(name) +
                       " must decode to between 16 and 64 bytes.");
    return {};
}

result<credentials> parse_authentication(const json::object& body) {
    credentials c;
    auto auth = optional_object(body, "authentication", "");
    if (!auth) return auth.error();
    if (!*auth) return c;
    const json::object& a = **auth;

    auto sym = optional_object(a, "symmetricKey", "authentication.");
    if (!sym) return sym.error();
    if (*sym) {
        auto pk = optional_string(**sym, "primaryKey", "authentication.symmetricKey.");
        if (!pk) return pk.error();
        auto sk = optional_string(**sym, "secondaryKey", "authentication.symmetricKey.");
        if (!sk) return sk.error();
        c.primary_key = pk->value_or("");
        c.secondary_key = sk->value_or("");
    }
    auto x509 = optional_object(a, "x509Thumbprint", "authentication.");
    if (!x509) return x509.error();
    if (*x509) {
        auto pt = optional_string(**x509, "primaryThumbprint", "authentication.x509Thumbprint.");
        if (!pt) return pt.error();
        auto st = optional_string(**x509, "secondaryThumbprint", "authentication.x509Thumbprint.");
        if (!st) return st.error();
        c.primary_thumbprint = pt->value_or("");
        c.secondary_thumbprint = st->value_or("");
    }
    auto type = optional_string(a, "type", "authentication.");
    if (!type) return type.error();
    if (*type) {
        auto k = parse_kind(**type);
        if (!k)
            return invalid(
                "authentication.type must be sas, selfSigned, certificateAuthority or "
                "none, not '" +
                **type + "'.");
        c.kind = *k;
    } else {
        // As the Node SDK does: thumbprints mean self-signed, anything else SAS.
        c.kind = c.primary_thumbprint.empty() ? auth_kind::sas : auth_kind::self_signed;
    }

    const bool has_keys = !c.primary_key.empty() || !c.secondary_key.empty();
    const bool has_prints = !c.primary_thumbprint.empty() || !c.secondary_thumbprint.empty();
    switch (c.kind) {
        case auth_kind::sas:
            if (has_prints) return invalid("A sas identity cannot have X.509 thumbprints.");
            if (auto r = check_key(c.primary_key, "primaryKey"); !r) return r.error();
            if (auto r = check_key(c.secondary_key, "secondaryKey"); !r) return r.error();
            break;
        case auth_kind::self_signed:
            if (has_keys) return invalid("A selfSigned identity cannot have symmetric keys.");
            if (!is_thumbprint(c.primary_thumbprint))
                return invalid(
                    "authentication.x509Thumbprint.primaryThumbprint must be a hex "
                    "SHA-1 (40) or SHA-256 (64) thumbprint.");
            if (!c.secondary_thumbprint.empty() && !is_thumbprint(c.secondary_thumbprint))
                return invalid(
                    "authentication.x509Thumbprint.secondaryThumbprint must be a hex "
                    "SHA-1 (40) or SHA-256 (64) thumbprint.");
            break;
        case auth_kind::certificate_authority:
        case auth_kind::none:
            if (has_keys || has_prints)
                return invalid("A " + std::string(kind_name(c.kind)) +
                               " identity cannot have keys or thumbprints.");
            break;
    }
    return c;
}

result<const json::object*> require_object(const json::value& body) {
    if (!body.is_object()) return invalid("The request body must be a JSON object.");
    return &body.get_object();
}

// The id in the body, when present, must agree with the one in the path.
result<std::string> body_id(const json::object& o, std::initializer_list<std::string_view> names,
                            std::string_view path_id, std::string_view what) {
    std::optional<std::string> found;
    for (auto name : names) {
        auto v = optional_string(o, name, "");
        if (!v) return v.error();
        if (*v) found = std::move(*v);
    }
    if (found && !path_id.empty() && *found != path_id)
        return invalid("The " + std::string(what) + " in the body ('" + *found +
                       "') does not match the one in the request URI ('" + std::string(path_id) +
                       "').");
    std::string id = found ? *found : std::string(path_id);
    if (auto ok = validate_id(id, what); !ok) return ok.error();
    return id;
}

}  // namespace

result<void> validate_id(std::string_view id, std::string_view what) {
    if (id.empty()) return invalid("The " + std::string(what) + " is missing or empty.");
    if (id.size() > max_id_length)
        return invalid("The " + std::string(what) + " is longer than 128 characters.");
    for (char c : id) {
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  id_punctuation.find(c) != std::string_view::npos;
        if (!ok)
            return invalid("The " + std::string(what) + " '" + std::string(id) +
                           "' contains a character that is not allowed; use ASCII letters, digits "
                           "and - : . + % _ # * ? ! ( ) , = @ ; $ '.");
    }
    return {};
}

std::string etag_for(std::uint64_t version) {
    return base64_encode(std::to_string(version));
}

std::optional<std::uint64_t> version_from_etag(std::string_view etag) {
    auto text = base64_decode(etag);
    if (!text || text->empty()) return std::nullopt;
    std::uint64_t v = 0;
    auto [p, ec] = std::from_chars(text->data(), text->data() + text->size(), v);
    if (ec != std::errc{} || p != text->data() + text->size()) return std::nullopt;
    return v;
}

std::string new_generation_id() {
    // .NET ticks (100 ns since 0001-01-01), the shape Azure's generation ids have.
    constexpr std::int64_t unix_epoch_ticks = 621355968000000000;
    auto ticks =
        std::chrono::duration_cast<std::chrono::nanoseconds>(now().time_since_epoch()).count() /
        100;
    return std::to_string(unix_epoch_ticks + ticks);
}

json::object to_json(const identity& id, const live_state& live) {
    json::object auth;
    auth["symmetricKey"] = json::object{{"primaryKey", string_or_null(id.auth.primary_key)},
                                        {"secondaryKey", string_or_null(id.auth.secondary_key)}};
    auth["x509Thumbprint"] =
        json::object{{"primaryThumbprint", string_or_null(id.auth.primary_thumbprint)},
                     {"secondaryThumbprint", string_or_null(id.auth.secondary_thumbprint)}};
    auth["type"] = kind_name(id.auth.kind);

    json::object o;
    if (id.is_module()) {
        o["moduleId"] = id.module_id;
        o["managedBy"] = string_or_null(id.managed_by);
        o["deviceId"] = id.device_id;
    } else {
        o["deviceId"] = id.device_id;
    }
    o["generationId"] = id.generation_id;
    o["etag"] = etag_for(id.version);
    o["connectionState"] = live.connected ? "Connected" : "Disconnected";
    if (!id.is_module()) {
        o["status"] = id.status == device_status::enabled ? "enabled" : "disabled";
        o["statusReason"] = string_or_null(id.status_reason);
    }
    o["connectionStateUpdatedTime"] = time_or_never(live.connection_state_updated);
    if (!id.is_module()) o["statusUpdatedTime"] = time_or_never(id.status_updated);
    o["lastActivityTime"] = time_or_never(live.last_activity);
    o["cloudToDeviceMessageCount"] = live.cloud_to_device_message_count;
    o["authentication"] = std::move(auth);
    if (!id.is_module()) {
        o["capabilities"] = json::object{{"iotEdge", id.iot_edge}};
        if (!id.device_scope.empty()) o["deviceScope"] = id.device_scope;
        if (!id.parent_scopes.empty()) {
            json::array scopes;
            for (const auto& s : id.parent_scopes) scopes.emplace_back(s);
            o["parentScopes"] = std::move(scopes);
        }
    }
    return o;
}

result<identity_spec> parse_device(const json::value& body, std::string_view path_id) {
    auto obj = require_object(body);
    if (!obj) return obj.error();
    const json::object& o = **obj;
    identity_spec spec;
    identity& d = spec.fields;

    auto id = body_id(o, {"deviceId", "id"}, path_id, "deviceId");
    if (!id) return id.error();
    d.device_id = std::move(*id);

    auto status = optional_string(o, "status", "");
    if (!status) return status.error();
    if (*status) {
        if (iequals(**status, "enabled")) {
            d.status = device_status::enabled;
        } else if (iequals(**status, "disabled")) {
            d.status = device_status::disabled;
        } else {
            return invalid("status must be 'enabled' or 'disabled', not '" + **status + "'.");
        }
    }
    auto reason = optional_string(o, "statusReason", "");
    if (!reason) return reason.error();
    d.status_reason = reason->value_or("");
    if (d.status_reason.size() > max_status_reason)
        return invalid("statusReason is longer than 128 characters.");

    auto auth = parse_authentication(o);
    if (!auth) return auth.error();
    d.auth = std::move(*auth);

    auto caps = optional_object(o, "capabilities", "");
    if (!caps) return caps.error();
    if (*caps) {
        if (auto it = (*caps)->find("iotEdge"); it != (*caps)->end() && !it->value().is_null()) {
            if (!it->value().is_bool()) return invalid("capabilities.iotEdge must be a boolean.");
            d.iot_edge = it->value().get_bool();
        }
    }
    auto scope = optional_string(o, "deviceScope", "");
    if (!scope) return scope.error();
    d.device_scope = scope->value_or("");
    if (auto it = o.find("parentScopes"); it != o.end() && !it->value().is_null()) {
        if (!it->value().is_array()) return invalid("parentScopes must be an array of strings.");
        for (const auto& s : it->value().get_array()) {
            if (!s.is_string()) return invalid("parentScopes must be an array of strings.");
            d.parent_scopes.emplace_back(s.get_string());
        }
    }
    auto etag = optional_string(o, "eTag", "");
    if (!etag) return etag.error();
    spec.etag = std::move(*etag);
    return spec;
}

result<identity_spec> parse_module(const json::value& body, std::string_view device_id,
                                   std::string_view path_module_id) {
    auto obj = require_object(body);
    if (!obj) return obj.error();
    const json::object& o = **obj;
    identity_spec spec;
    identity& m = spec.fields;

    auto dev = body_id(o, {"deviceId"}, device_id, "deviceId");
    if (!dev) return dev.error();
    m.device_id = std::move(*dev);
    auto mod = body_id(o, {"moduleId"}, path_module_id, "moduleId");
    if (!mod) return mod.error();
    m.module_id = std::move(*mod);

    auto managed = optional_string(o, "managedBy", "");
    if (!managed) return managed.error();
    m.managed_by = managed->value_or("");
    auto auth = parse_authentication(o);
    if (!auth) return auth.error();
    m.auth = std::move(*auth);
    auto etag = optional_string(o, "eTag", "");
    if (!etag) return etag.error();
    spec.etag = std::move(*etag);
    return spec;
}

std::string encode_stored(const identity& id) {
    json::object o;
    o["d"] = id.device_id;
    if (id.is_module()) o["m"] = id.module_id;
    o["g"] = id.generation_id;
    json::object a{{"t", kind_name(id.auth.kind)}};
    if (!id.auth.primary_key.empty()) a["pk"] = id.auth.primary_key;
    if (!id.auth.secondary_key.empty()) a["sk"] = id.auth.secondary_key;
    if (!id.auth.primary_thumbprint.empty()) a["pt"] = id.auth.primary_thumbprint;
    if (!id.auth.secondary_thumbprint.empty()) a["st"] = id.auth.secondary_thumbprint;
    o["a"] = std::move(a);
    if (id.status == device_status::disabled) o["s"] = "disabled";
    if (!id.status_reason.empty()) o["sr"] = id.status_reason;
    if (id.status_updated) o["su"] = format_iso8601(*id.status_updated);
    if (id.iot_edge) o["e"] = true;
    if (!id.device_scope.empty()) o["ds"] = id.device_scope;
    if (!id.parent_scopes.empty()) {
        json::array ps;
        for (const auto& s : id.parent_scopes) ps.emplace_back(s);
        o["ps"] = std::move(ps);
    }
    if (!id.managed_by.empty()) o["mb"] = id.managed_by;
    if (!id.device_generation_id.empty()) o["dg"] = id.device_generation_id;
    return json::serialize(o);
}

result<identity> decode_stored(std::string_view text, std::uint64_t version) {
    boost::system::error_code ec;
    auto v = json::parse(text, ec);
    if (ec || !v.is_object())
        return error(errc::server_error, "A stored identity record is corrupt.");
    const auto& o = v.get_object();
    auto str = [&](const json::object& obj, std::string_view key) -> std::string {
        auto it = obj.find(key);
        return it != obj.end() && it->value().is_string() ? std::string(it->value().get_string())
                                                          : std::string();
    };
    identity id;
    id.version = version;
    id.device_id = str(o, "d");
    id.module_id = str(o, "m");
    id.generation_id = str(o, "g");
    if (auto it = o.find("a"); it != o.end() && it->value().is_object()) {
        const auto& a = it->value().get_object();
        id.auth.kind = parse_kind(str(a, "t")).value_or(auth_kind::sas);
        id.auth.primary_key = str(a, "pk");
        id.auth.secondary_key = str(a, "sk");
        id.auth.primary_thumbprint = str(a, "pt");
        id.auth.secondary_thumbprint = str(a, "st");
    }
    id.status = str(o, "s") == "disabled" ? device_status::disabled : device_status::enabled;
    id.status_reason = str(o, "sr");
    if (auto su = str(o, "su"); !su.empty()) id.status_updated = parse_iso8601(su);
    if (auto it = o.find("e"); it != o.end() && it->value().is_bool())
        id.iot_edge = it->value().get_bool();
    id.device_scope = str(o, "ds");
    if (auto it = o.find("ps"); it != o.end() && it->value().is_array())
        for (const auto& s : it->value().get_array())
            if (s.is_string()) id.parent_scopes.emplace_back(s.get_string());
    id.managed_by = str(o, "mb");
    id.device_generation_id = str(o, "dg");
    if (id.device_id.empty() || id.generation_id.empty())
        return error(errc::server_error, "A stored identity record is incomplete.");
    return id;
}

}  // namespace iothub::registry
