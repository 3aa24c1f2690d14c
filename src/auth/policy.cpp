#include "auth/policy.hpp"

#include "common/crypto.hpp"
#include "common/encoding.hpp"

#include <array>

namespace iothub::auth {
namespace {

constexpr std::array<right, 8> all_rights{right::registry_read,
                                          right::registry_write,
                                          right::service_connect,
                                          right::device_connect,
                                          right::enrollment_read,
                                          right::enrollment_write,
                                          right::registration_status_read,
                                          right::registration_status_write};

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

}  // namespace

std::string_view right_name(right r) {
    switch (r) {
        case right::registry_read:
            return "RegistryRead";
        case right::registry_write:
            return "RegistryWrite";
        case right::service_connect:
            return "ServiceConnect";
        case right::device_connect:
            return "DeviceConnect";
        case right::enrollment_read:
            return "EnrollmentRead";
        case right::enrollment_write:
            return "EnrollmentWrite";
        case right::registration_status_read:
            return "RegistrationStatusRead";
        case right::registration_status_write:
            return "RegistrationStatusWrite";
    }
    return "?";
}

result<rights> rights::parse(std::string_view text) {
    rights out;
    while (!text.empty()) {
        auto comma = text.find(',');
        std::string_view name = trim(text.substr(0, comma));
        text = comma == std::string_view::npos ? std::string_view{} : text.substr(comma + 1);
        if (name.empty()) continue;
        bool known = false;
        for (auto r : all_rights) {
            if (iequals(right_name(r), name)) {
                out = out | r;
                known = true;
            }
        }
        if (!known)
            return error(errc::argument_invalid, "Unknown right '" + std::string(name) + "'");
    }
    return out;
}

std::string rights::to_string() const {
    std::string out;
    for (auto r : all_rights) {
        if (!has(r)) continue;
        if (!out.empty()) out += ", ";
        out += right_name(r);
    }
    return out;
}

std::vector<access_policy> default_policies() {
    auto make = [](std::string name, rights granted) {
        return access_policy{std::move(name), generate_key(), generate_key(), granted};
    };
    return {
        make("iothubowner", rights(right::registry_read) | right::registry_write |
                                right::service_connect | right::device_connect),
        make("service", right::service_connect),
        make("device", right::device_connect),
        make("registryRead", right::registry_read),
        make("registryReadWrite", rights(right::registry_read) | right::registry_write),
    };
}

access_policy dps_policy() {
    return access_policy{std::string(dps_policy_name), generate_key(), generate_key(),
                         rights(right::enrollment_read) | right::enrollment_write |
                             right::registration_status_read | right::registration_status_write};
}

const access_policy* policy_set::find(std::string_view name) const {
    for (const auto& p : policies_)
        if (p.name == name) return &p;
    return nullptr;
}

result<service_principal> policy_set::authenticate(std::string_view authorization,
                                                   const host_names& hosts, std::string_view path,
                                                   rights needed, sys_time now) const {
    if (authorization.empty())
        return error(errc::unauthorized, "The Authorization header is missing.");
    auto token = parse_sas_token(authorization);
    if (!token) return token.error();
    if (token->key_name.empty())
        return error(errc::unauthorized,
                     "The shared access signature names no policy (skn); service operations "
                     "need a shared access policy key.");
    if (auto scope = check_token_scope(*token, hosts, path, now); !scope) return scope.error();
    const access_policy* policy = find(token->key_name);
    if (!policy)
        return error(errc::unauthorized, "Unknown shared access policy '" + token->key_name + "'.");
    if (!signature_matches(*token, policy->primary_key) &&
        !signature_matches(*token, policy->secondary_key))
        return error(errc::unauthorized,
                     "The shared access signature does not match policy '" + policy->name + "'.");
    for (auto r : all_rights) {
        if (needed.has(r) && !policy->granted.has(r))
            return error(errc::unauthorized, "Policy '" + policy->name + "' lacks the " +
                                                 std::string(right_name(r)) +
                                                 " right needed for this operation.");
    }
    return service_principal{policy->name, policy->granted};
}

}  // namespace iothub::auth
