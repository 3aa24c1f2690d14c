#include "amqp/cbs.hpp"

#include "common/encoding.hpp"

namespace iothub::amqp {
namespace {

// "/devices/d[/modules/m]" -> (d, m); nullopt for any other path.
std::optional<std::pair<std::string, std::string>> identity_of(std::string_view path) {
    constexpr std::string_view prefix = "/devices/";
    if (path.substr(0, prefix.size()) != prefix) return std::nullopt;
    auto rest = path.substr(prefix.size());
    auto slash = rest.find('/');
    if (slash == std::string_view::npos) {
        if (rest.empty()) return std::nullopt;
        return std::pair{std::string(rest), std::string()};
    }
    auto device = rest.substr(0, slash);
    auto tail = rest.substr(slash);
    constexpr std::string_view modules = "/modules/";
    if (device.empty() || tail.substr(0, modules.size()) != modules) return std::nullopt;
    auto module = tail.substr(modules.size());
    if (module.empty() || module.find('/') != std::string_view::npos) return std::nullopt;
    return std::pair{std::string(device), std::string(module)};
}

}  // namespace

result<grant> authorize_put_token(const put_token_request& request,
                                  device_auth::device_authenticator& devices,
                                  const auth::policy_set& policies, const auth::host_names& hosts,
                                  std::string_view event_hub, sys_time now) {
    if (request.operation != "put-token")
        return error(errc::argument_invalid,
                     "Unsupported $cbs operation '" + request.operation + "'; use put-token.");
    // Python's Event Hubs client labels a SAS token "jwt"; what counts is what the body is.
    if (request.type.find("sastoken") == std::string::npos &&
        request.token.rfind("SharedAccessSignature ", 0) != 0)
        return error(errc::argument_invalid,
                     "Unsupported token type '" + request.type + "'; send a SAS token.");
    auto token = auth::parse_sas_token(request.token);
    if (!token) return token.error();
    const auto expires = sys_time(std::chrono::seconds(token->expiry));
    if (expires <= now) return error(errc::unauthorized, "The token has expired.");

    for (const auto& scope : auth::token_scopes(token->resource)) {
        if (!hosts.contains(scope.host)) continue;
        if (scope.path.empty()) {
            auto who = policies.authenticate(request.token, hosts, "", auth::rights{}, now);
            if (!who) return who.error();
            grant g;
            g.policy = who->policy;
            g.rights = who->granted;
            g.expires = expires;
            return g;
        }
        if (auth::path_covers("/" + to_lower(event_hub), to_lower(scope.path)))
            return authorize_event_hubs_token(request.token, policies, hosts, event_hub, now);
        auto id = identity_of(scope.path);
        if (!id) continue;
        auto who = devices.authenticate({id->first, id->second, request.token, std::nullopt}, now);
        if (!who) return who.error();
        grant g;
        g.device = std::move(*who);
        g.expires = expires;
        return g;
    }
    return error(errc::unauthorized, "The token's resource '" + token->resource +
                                         "' is neither this hub nor one of its devices.");
}

result<grant> authorize_event_hubs_token(std::string_view text, const auth::policy_set& policies,
                                         const auth::host_names& hosts, std::string_view event_hub,
                                         sys_time now) {
    auto token = auth::parse_sas_token(text);
    if (!token) return token.error();
    // The token names the entity or something inside it (`sb://host/{hub}/$management`,
    // `.../ConsumerGroups/{cg}/Partitions/{n}`); names compare case-insensitively.
    bool ours = false;
    for (const auto& scope : auth::token_scopes(token->resource))
        ours = ours || (hosts.contains(scope.host) &&
                        auth::path_covers("/" + to_lower(event_hub), to_lower(scope.path)));
    if (!ours)
        return error(errc::unauthorized, "The token's resource '" + token->resource +
                                             "' is not this hub's event hub '" +
                                             std::string(event_hub) + "'.");
    const auto expires = sys_time(std::chrono::seconds(token->expiry));
    if (expires <= now) return error(errc::unauthorized, "The token has expired.");
    if (token->key_name.empty())
        return error(errc::unauthorized, "An Event Hubs token must name a policy (skn).");
    const auto* policy = policies.find(token->key_name);
    if (!policy)
        return error(errc::unauthorized, "Unknown shared access policy '" + token->key_name + "'.");
    using enc = auth::key_encoding;
    bool ok = false;
    for (const auto& key : {policy->primary_key, policy->secondary_key})
        ok = ok || auth::signature_matches(*token, key, enc::text) ||
             auth::signature_matches(*token, key, enc::base64);
    if (!ok)
        return error(errc::unauthorized,
                     "The shared access signature does not match policy '" + policy->name + "'.");
    if (!policy->granted.has(auth::right::service_connect))
        return error(errc::unauthorized,
                     "Policy '" + policy->name +
                         "' lacks ServiceConnect, which reading and sending events need.");
    grant g;
    g.policy = policy->name;
    g.rights = policy->granted;
    g.entity = to_lower(event_hub);
    g.expires = expires;
    return g;
}

bool grant::allows_sending_to(std::string_view name) const {
    return !device && rights.has(auth::right::service_connect) &&
           (entity.empty() || iequals(entity, name));
}

}  // namespace iothub::amqp
