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
                                  sys_time now) {
    if (request.operation != "put-token")
        return error(errc::argument_invalid,
                     "Unsupported $cbs operation '" + request.operation + "'; use put-token.");
    if (request.type.find("sastoken") == std::string::npos)
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

}  // namespace iothub::amqp
