#include "device_auth/device_auth.hpp"

#include "common/encoding.hpp"

namespace iothub::device_auth {
namespace {

error denied(std::string why) {
    return error(errc::unauthorized, std::move(why));
}

std::string identity_path(const device_credentials& c) {
    std::string p = "/devices/" + c.device_id;
    if (!c.module_id.empty()) p += "/modules/" + c.module_id;
    return p;
}

std::string who(const device_credentials& c) {
    return c.module_id.empty() ? "device '" + c.device_id + "'"
                               : "module '" + c.device_id + "/" + c.module_id + "'";
}

}  // namespace

std::string device_principal::auth_method() const {
    switch (how) {
        case method::device_key:
            return R"({"scope":"device","type":"sas","issuer":"iothub"})";
        case method::policy_key:
            return R"({"scope":"hub","type":"sas","issuer":"iothub"})";
        case method::x509_thumbprint:
            return R"({"scope":"device","type":"x509Certificate","issuer":"iothub"})";
        case method::x509_ca:
            return R"({"scope":"device","type":"x509CA","issuer":"iothub"})";
    }
    return "{}";
}

device_authenticator::device_authenticator(registry::device_registry& registry,
                                           const auth::policy_set& policies,
                                           const auth::host_names& hosts, ca_verifier verify_ca)
    : registry_(registry), policies_(policies), hosts_(hosts), verify_ca_(std::move(verify_ca)) {}

result<device_principal> device_authenticator::authenticate(const device_credentials& c,
                                                            sys_time now) {
    // The identity first: unknown ids and disabled devices are reported as such.
    auto device = registry_.get_device(c.device_id);
    if (!device) {
        if (device.error().code() == errc::device_not_found)
            return denied("Device '" + c.device_id + "' is not registered.");
        return device.error();
    }
    if (device->status == registry::device_status::disabled)
        return error(errc::device_disabled, "Device '" + c.device_id + "' is disabled.");
    registry::identity id = *device;
    if (!c.module_id.empty()) {
        auto module = registry_.get_module(c.device_id, c.module_id);
        if (!module) {
            if (module.error().code() == errc::module_not_found)
                return denied("Module '" + c.module_id + "' is not registered on device '" +
                              c.device_id + "'.");
            return module.error();
        }
        id = *module;
    }

    device_principal p{c.device_id, c.module_id, id.generation_id};
    if (c.sas_token && !c.sas_token->empty()) {
        auto token = auth::parse_sas_token(*c.sas_token);
        if (!token) return token.error();
        if (auto scope = auth::check_token_scope(*token, hosts_, identity_path(c), now); !scope)
            return scope.error();
        p.expires = sys_time(std::chrono::seconds(token->expiry));
        if (!token->key_name.empty()) {
            const auto* policy = policies_.find(token->key_name);
            if (!policy) return denied("Unknown shared access policy '" + token->key_name + "'.");
            if (!policy->granted.has(auth::right::device_connect))
                return denied("Policy '" + policy->name + "' lacks DeviceConnect.");
            if (!auth::signature_matches(*token, policy->primary_key) &&
                !auth::signature_matches(*token, policy->secondary_key))
                return denied("The shared access signature does not match policy '" + policy->name +
                              "'.");
            p.how = device_principal::method::policy_key;
            return p;
        }
        if (id.auth.kind != registry::auth_kind::sas)
            return denied("The " + who(c) + " authenticates with X.509, not keys.");
        if (!auth::signature_matches(*token, id.auth.primary_key) &&
            !auth::signature_matches(*token, id.auth.secondary_key))
            return denied("The shared access signature does not match the keys of " + who(c) + ".");
        p.how = device_principal::method::device_key;
        return p;
    }

    if (c.certificate) {
        if (id.auth.kind == registry::auth_kind::self_signed) {
            for (const auto& print : {id.auth.primary_thumbprint, id.auth.secondary_thumbprint}) {
                if (!print.empty() && (iequals(print, c.certificate->sha1_hex) ||
                                       iequals(print, c.certificate->sha256_hex))) {
                    p.how = device_principal::method::x509_thumbprint;
                    return p;
                }
            }
            return denied("The client certificate's thumbprint is not registered for " + who(c) +
                          ".");
        }
        if (id.auth.kind == registry::auth_kind::certificate_authority) {
            if (!verify_ca_) return denied("No CA certificates are registered with the hub.");
            auto cn = verify_ca_(*c.certificate);
            if (!cn) return denied(cn.error().message());
            const std::string expected = c.module_id.empty() ? c.device_id : c.module_id;
            if (*cn != expected)
                return denied("The client certificate's subject CN '" + *cn + "' is not '" +
                              expected + "'.");
            p.how = device_principal::method::x509_ca;
            return p;
        }
        return denied("The " + who(c) + " authenticates with keys, not X.509 certificates.");
    }
    return denied("No credentials: send a SAS token as the password or a client certificate.");
}

bool ends_connections(const registry::identity_change& change) {
    if (!change.after) return true;
    if (!change.before) return false;
    const auto& a = *change.before;
    const auto& b = *change.after;
    return b.status == registry::device_status::disabled || a.generation_id != b.generation_id ||
           a.auth.kind != b.auth.kind || a.auth.primary_key != b.auth.primary_key ||
           a.auth.secondary_key != b.auth.secondary_key ||
           a.auth.primary_thumbprint != b.auth.primary_thumbprint ||
           a.auth.secondary_thumbprint != b.auth.secondary_thumbprint;
}

}  // namespace iothub::device_auth
