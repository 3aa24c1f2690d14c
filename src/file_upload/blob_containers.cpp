#include "file_upload/blob_containers.hpp"

#include "common/crypto.hpp"
#include "common/encoding.hpp"
#include "file_upload/file_upload.hpp"

#include <boost/json.hpp>

namespace iothub::file_upload {
namespace json = boost::json;

namespace {

constexpr std::string_view record_prefix = "rblob/";
constexpr std::string_view account_sas_version = "2021-08-06";

std::string record_key(std::string_view container, std::string_view name) {
    return std::string(record_prefix) + std::string(container) + "/" + std::string(name);
}

// Azure's container rule: 3 to 63 lower-case letters, digits and single hyphens.
result<void> check_container(std::string_view c) {
    bool ok = c.size() >= 3 && c.size() <= 63 && c.front() != '-' && c.back() != '-';
    for (std::size_t i = 0; ok && i < c.size(); ++i)
        ok = (c[i] >= 'a' && c[i] <= 'z') || (c[i] >= '0' && c[i] <= '9') ||
             (c[i] == '-' && c[i - 1] != '-');
    if (!ok) return error(errc::argument_invalid, "'" + std::string(c) + "' is not a container.");
    return {};
}

stored_blob decode(std::string_view container, std::string_view name, std::string_view text) {
    stored_blob b;
    b.container = std::string(container);
    b.name = std::string(name);
    boost::system::error_code ec;
    auto v = json::parse(text, ec);
    if (ec || !v.is_object()) return b;
    const auto& o = v.get_object();
    if (auto* s = o.if_contains("size"); s && s->is_int64())
        b.size = static_cast<std::uint64_t>(s->get_int64());
    if (auto* t = o.if_contains("modified"); t && t->is_string())
        b.last_modified = parse_iso8601(t->get_string()).value_or(sys_time{});
    if (auto* e = o.if_contains("etag"); e && e->is_string()) b.etag = e->get_string();
    if (auto* m = o.if_contains("md5"); m && m->is_string()) b.content_md5 = m->get_string();
    if (auto* c = o.if_contains("type"); c && c->is_string()) b.content_type = c->get_string();
    return b;
}

std::string canonical(std::string_view policy, std::string_view permissions,
                      std::string_view expiry) {
    return "iothub-blob-account\n" + std::string(policy) + "\n" + std::string(permissions) +
           "\nb\nsco\n" + std::string(expiry) + "\n" + std::string(account_sas_version);
}

std::string signature(std::string_view key, std::string_view text) {
    auto raw_key = base64_decode(key).value_or(std::string(key));
    auto mac = hmac_sha256(raw_key, text);
    return base64_encode(std::span(reinterpret_cast<const std::uint8_t*>(mac.data()), mac.size()));
}

}  // namespace

blob_containers::blob_containers(storage::kv_store& kv, storage::blob_store& blobs)
    : kv_(kv), blobs_(blobs) {}

result<stored_blob> blob_containers::put(std::string_view container, std::string_view name,
                                         std::string_view bytes, std::string_view content_type,
                                         sys_time now) {
    if (auto ok = check_container(container); !ok) return ok.error();
    auto segments = safe_segments(name);
    if (!segments) return segments.error();
    std::string key(container);
    for (const auto& s : *segments) key += "/" + s;
    if (auto r = blobs_.put(key, bytes); !r) return r.error();
    stored_blob b;
    b.container = std::string(container);
    b.name = std::string(name);
    b.size = bytes.size();
    b.last_modified = now;
    b.etag = "\"0x" +
             hex_encode(std::span(reinterpret_cast<const std::uint8_t*>(random_bytes(8).data()), 8),
                        true) +
             "\"";
    b.content_md5 = md5_base64(bytes);
    b.content_type = std::string(content_type);
    json::object rec{{"size", static_cast<std::int64_t>(b.size)},
                     {"modified", format_iso8601(now)},
                     {"etag", b.etag},
                     {"md5", b.content_md5},
                     {"type", b.content_type}};
    if (auto r = kv_.put(record_key(container, name), json::serialize(rec)); !r) return r.error();
    return b;
}

result<bool> blob_containers::exists(std::string_view container, std::string_view name) {
    auto r = kv_.get(record_key(container, name));
    if (!r) return r.error();
    return r->has_value();
}

result<blob_listing> blob_containers::list(std::string_view container, std::string_view prefix,
                                           std::string_view marker, std::size_t max) {
    const auto base = record_key(container, "");
    const auto scan_prefix = base + std::string(prefix);
    const auto after = marker.empty() ? std::string() : base + std::string(marker);
    auto entries = kv_.scan(scan_prefix, after, max + 1);
    if (!entries) return entries.error();
    blob_listing out;
    for (const auto& e : *entries) {
        auto name = std::string_view(e.key).substr(base.size());
        if (out.blobs.size() == max) {
            out.next_marker = out.blobs.back().name;
            break;
        }
        out.blobs.push_back(decode(container, name, e.data.value));
    }
    return out;
}

result<stored_blob> blob_containers::properties(std::string_view container, std::string_view name) {
    auto r = kv_.get(record_key(container, name));
    if (!r) return r.error();
    if (!*r) return error(errc::not_found, "The specified blob does not exist.");
    return decode(container, name, (*r)->value);
}

result<std::string> blob_containers::read(std::string_view container, std::string_view name) {
    auto props = properties(container, name);
    if (!props) return props.error();
    auto segments = safe_segments(name);
    if (!segments) return segments.error();
    std::string key(container);
    for (const auto& s : *segments) key += "/" + s;
    auto data = blobs_.get(key);
    if (!data && data.error().code() == errc::not_found)
        return error(errc::not_found, "The specified blob does not exist.");
    return data;
}

std::string sign_account_sas(const auth::access_policy& policy, sys_time expiry) {
    const auto se = format_iso8601(std::chrono::time_point_cast<std::chrono::seconds>(expiry));
    const std::string sp = "rl";
    return "sv=" + std::string(account_sas_version) + "&ss=b&srt=sco&sp=" + sp +
           "&se=" + percent_encode(se) + "&spr=https&skn=" + percent_encode(policy.name) +
           "&sig=" + percent_encode(signature(policy.primary_key, canonical(policy.name, sp, se)));
}

result<void> check_account_sas(const std::vector<std::pair<std::string, std::string>>& query,
                               const auth::policy_set& policies, char permission, sys_time now) {
    auto get = [&](std::string_view k) -> std::string {
        for (const auto& [key, v] : query)
            if (key == k) return v;
        return {};
    };
    const auto skn = get("skn"), sp = get("sp"), se = get("se"), sig = get("sig");
    if (sig.empty() || skn.empty())
        return error(errc::unauthorized, "The request carries no account SAS of this hub.");
    const auto* policy = policies.find(skn);
    if (!policy) return error(errc::unauthorized, "No shared access policy '" + skn + "'.");
    if (!policy->granted.has(auth::right::service_connect))
        return error(errc::unauthorized, "Policy '" + skn + "' does not hold ServiceConnect.");
    const auto expiry = parse_iso8601(se);
    if (!expiry) return error(errc::unauthorized, "The SAS has no valid expiry (se).");
    if (*expiry <= now) return error(errc::unauthorized, "The SAS expired at " + se + ".");
    if (sp.find(permission) == std::string::npos)
        return error(errc::unauthorized, "The SAS does not grant this operation.");
    const auto text = canonical(skn, sp, se);
    if (!constant_time_equal(sig, signature(policy->primary_key, text)) &&
        !constant_time_equal(sig, signature(policy->secondary_key, text)))
        return error(errc::unauthorized, "The SAS signature does not match.");
    return {};
}

}  // namespace iothub::file_upload
