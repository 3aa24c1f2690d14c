// Shared access signatures: the token format every Azure IoT client sends, how to sign one, and
// how to check one against a key and a resource.
//
// The signature covers the `sr` text exactly as the client sent it: SDKs disagree on how they
// percent-encode the resource (Node/Python/C# encode it, the C SDK sends it raw), so verification
// never re-encodes. Which key to check against (policy, device, module) is the caller's business.
#pragma once

#include "common/error.hpp"
#include "common/time.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace iothub::auth {

struct sas_token {
    std::string resource;     // `sr` exactly as sent: this is the signed text
    std::string signature;    // `sig`, percent-decoded (Base64 of the HMAC)
    std::int64_t expiry = 0;  // `se`, seconds since the Unix epoch
    std::string key_name;     // `skn`, percent-decoded; empty when absent (device or module key)
};

// Parses "SharedAccessSignature sr=..&sig=..&se=..[&skn=..]" with the fields in any order.
result<sas_token> parse_sas_token(std::string_view text);

enum class key_encoding {
    base64,  // IoT Hub: the key is Base64 and its decoded bytes key the HMAC
    text,    // Event Hubs / Service Bus: the key's characters themselves key the HMAC
};

// Builds a token for `resource` (unencoded, e.g. "hub.example/devices/d1"), percent-encoding it
// the way the Node, Python and C# SDKs do.
std::string make_sas_token(std::string_view resource, std::string_view key, std::int64_t expiry,
                           std::string_view key_name = {},
                           key_encoding encoding = key_encoding::base64);

// True when `token` was signed with `key`. A key that is not valid Base64 matches nothing.
bool signature_matches(const sas_token& token, std::string_view key,
                       key_encoding encoding = key_encoding::base64);

// The host and path a token's `sr` names, with a scheme such as "sb://" removed. A raw resource
// and its percent-decoded form can both be meant (the C SDK does not encode device ids that
// contain '%'), so both are offered.
struct token_scope {
    std::string host;  // without any ":port"
    std::string path;  // "" for the whole hub, else "/devices/d1", no trailing '/'
};
std::vector<token_scope> token_scopes(std::string_view resource);

// Segment-wise prefix: "/devices" covers "/devices/d1" but not "/devicesX".
bool path_covers(std::string_view granted, std::string_view requested) noexcept;

// The names a hub answers to, compared case-insensitively and without port.
class host_names {
  public:
    explicit host_names(std::vector<std::string> names) : names_(std::move(names)) {}
    bool contains(std::string_view host) const noexcept;
    const std::string& primary() const { return names_.front(); }

  private:
    std::vector<std::string> names_;
};

// Checks expiry and scope of a parsed token: `requested_path` must lie inside the token's scope on
// one of `hosts`. Signature checking is separate because the key depends on `skn`.
result<void> check_token_scope(const sas_token& token, const host_names& hosts,
                               std::string_view requested_path, sys_time now);

}  // namespace iothub::auth
