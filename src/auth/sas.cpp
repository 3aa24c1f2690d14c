#include "auth/sas.hpp"

#include "common/crypto.hpp"
#include "common/encoding.hpp"

#include <charconv>

namespace iothub::auth {
namespace {

constexpr std::string_view prefix = "SharedAccessSignature ";

error bad_token(std::string what) {
    return error(errc::unauthorized, "Invalid shared access signature: " + std::move(what));
}

std::string signed_text(const sas_token& t) {
    std::string text = t.resource;
    text += '\n';
    text += std::to_string(t.expiry);
    return text;
}

// Strips a trailing ":port" (also from "[v6]:port"), keeping the host.
std::string_view strip_port(std::string_view host) {
    if (!host.empty() && host.front() == '[') {
        auto close = host.find(']');
        return close == std::string_view::npos ? host : host.substr(1, close - 1);
    }
    auto colon = host.rfind(':');
    if (colon != std::string_view::npos && host.find(':') == colon) return host.substr(0, colon);
    return host;
}

std::optional<token_scope> split_scope(std::string_view text) {
    if (auto scheme = text.find("://"); scheme != std::string_view::npos)
        text.remove_prefix(scheme + 3);
    auto slash = text.find('/');
    token_scope scope;
    scope.host = std::string(strip_port(text.substr(0, slash)));
    if (scope.host.empty()) return std::nullopt;
    if (slash != std::string_view::npos) {
        std::string_view path = text.substr(slash);
        while (path.size() > 1 && path.back() == '/') path.remove_suffix(1);
        if (path != "/") scope.path = std::string(path);
    }
    return scope;
}

}  // namespace

result<sas_token> parse_sas_token(std::string_view text) {
    if (text.substr(0, prefix.size()) != prefix) return bad_token("missing SharedAccessSignature");
    std::string_view rest = text.substr(prefix.size());
    sas_token token;
    bool have_sr = false, have_sig = false, have_se = false;
    while (!rest.empty()) {
        auto amp = rest.find('&');
        std::string_view field = rest.substr(0, amp);
        rest = amp == std::string_view::npos ? std::string_view{} : rest.substr(amp + 1);
        auto eq = field.find('=');
        if (eq == std::string_view::npos) return bad_token("field without '='");
        std::string_view name = field.substr(0, eq), value = field.substr(eq + 1);
        if (name == "sr") {
            token.resource = std::string(value);
            have_sr = true;
        } else if (name == "sig") {
            auto sig = percent_decode(value);
            if (!sig) return bad_token("sig is not percent-encoded correctly");
            token.signature = std::move(*sig);
            have_sig = true;
        } else if (name == "se") {
            auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), token.expiry);
            if (ec != std::errc{} || p != value.data() + value.size() || value.empty())
                return bad_token("se is not an integer");
            have_se = true;
        } else if (name == "skn") {
            auto skn = percent_decode(value);
            if (!skn) return bad_token("skn is not percent-encoded correctly");
            token.key_name = std::move(*skn);  // the C SDK sends an empty skn for device keys
        }
        // Unknown fields are ignored, as Azure does.
    }
    if (!have_sr || !have_sig || !have_se) return bad_token("sr, sig and se are required");
    return token;
}

std::string make_sas_token(std::string_view resource, std::string_view key, std::int64_t expiry,
                           std::string_view key_name, key_encoding encoding) {
    sas_token t;
    t.resource = percent_encode(resource);
    t.expiry = expiry;
    std::string hmac_key;
    if (encoding == key_encoding::base64) {
        hmac_key = base64_decode(key).value_or(std::string{});
    } else {
        hmac_key = std::string(key);
    }
    std::string sig = base64_encode(hmac_sha256(hmac_key, signed_text(t)));
    std::string out(prefix);
    out += "sr=" + t.resource + "&sig=" + percent_encode(sig) + "&se=" + std::to_string(expiry);
    if (!key_name.empty()) out += "&skn=" + percent_encode(key_name);
    return out;
}

bool signature_matches(const sas_token& token, std::string_view key, key_encoding encoding) {
    std::string hmac_key;
    if (encoding == key_encoding::base64) {
        auto decoded = base64_decode(key);
        if (!decoded || decoded->empty()) return false;
        hmac_key = std::move(*decoded);
    } else {
        hmac_key = std::string(key);
    }
    std::string expected = base64_encode(hmac_sha256(hmac_key, signed_text(token)));
    return constant_time_equal(expected, token.signature);
}

std::vector<token_scope> token_scopes(std::string_view resource) {
    std::vector<token_scope> scopes;
    if (auto decoded = percent_decode(resource)) {
        if (auto s = split_scope(*decoded)) scopes.push_back(std::move(*s));
    }
    if (auto s = split_scope(resource)) {
        if (scopes.empty() || scopes.front().host != s->host || scopes.front().path != s->path)
            scopes.push_back(std::move(*s));
    }
    return scopes;
}

bool path_covers(std::string_view granted, std::string_view requested) noexcept {
    if (granted.empty()) return true;
    if (requested.substr(0, granted.size()) != granted) return false;
    return requested.size() == granted.size() || requested[granted.size()] == '/';
}

bool host_names::contains(std::string_view host) const noexcept {
    host = strip_port(host);
    for (const auto& n : names_)
        if (iequals(n, host)) return true;
    return false;
}

result<void> check_token_scope(const sas_token& token, const host_names& hosts,
                               std::string_view requested_path, sys_time now) {
    if (token.expiry <= unix_seconds(now))
        return error(errc::unauthorized, "The shared access signature has expired.");
    for (const auto& scope : token_scopes(token.resource)) {
        if (hosts.contains(scope.host) && path_covers(scope.path, requested_path)) return {};
    }
    return error(errc::unauthorized,
                 "The shared access signature's resource (sr) does not grant "
                 "access to this hub or resource.");
}

}  // namespace iothub::auth
