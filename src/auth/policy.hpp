// Hub-level shared access policies and the rights they grant, plus authentication of service
// requests signed with a policy key.
#pragma once

#include "auth/sas.hpp"
#include "common/error.hpp"
#include "common/time.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace iothub::auth {

enum class right : std::uint8_t {
    registry_read = 1,
    registry_write = 2,
    service_connect = 4,
    device_connect = 8,
    // The Device Provisioning Service's own (its policy, provisioningserviceowner, holds them).
    enrollment_read = 16,
    enrollment_write = 32,
    registration_status_read = 64,
    registration_status_write = 128,
};

class rights {
  public:
    constexpr rights() = default;
    constexpr rights(right r) : bits_(static_cast<std::uint8_t>(r)) {}
    constexpr rights operator|(rights o) const { return rights(bits_ | o.bits_); }
    constexpr bool has(right r) const { return (bits_ & static_cast<std::uint8_t>(r)) != 0; }
    constexpr bool empty() const { return bits_ == 0; }
    constexpr bool operator==(const rights&) const = default;

    // "RegistryRead, ServiceConnect" <-> rights; names as Azure spells them.
    static result<rights> parse(std::string_view text);
    std::string to_string() const;

  private:
    constexpr explicit rights(unsigned bits) : bits_(static_cast<std::uint8_t>(bits)) {}
    std::uint8_t bits_ = 0;
};

std::string_view right_name(right r);

struct access_policy {
    std::string name;
    std::string primary_key;
    std::string secondary_key;
    rights granted;
};

// Azure's five default policies with fresh 256-bit keys.
std::vector<access_policy> default_policies();

inline constexpr std::string_view dps_policy_name = "provisioningserviceowner";
// The provisioning service's policy (Azure's default for a DPS instance), with fresh keys.
access_policy dps_policy();

// Who made a service request: the policy whose key signed it and what that policy may do.
struct service_principal {
    std::string policy;
    rights granted;
};

class policy_set {
  public:
    explicit policy_set(std::vector<access_policy> policies) : policies_(std::move(policies)) {}

    const access_policy* find(std::string_view name) const;
    const std::vector<access_policy>& all() const { return policies_; }

    // Validates an `Authorization` header value for a request to `path` on one of `hosts`: token
    // syntax, expiry, scope, policy name, signature (primary or secondary key) and finally that
    // the policy holds `needed`. Every failure is errc::unauthorized with a precise message.
    result<service_principal> authenticate(std::string_view authorization, const host_names& hosts,
                                           std::string_view path, rights needed,
                                           sys_time now) const;

  private:
    std::vector<access_policy> policies_;
};

}  // namespace iothub::auth
