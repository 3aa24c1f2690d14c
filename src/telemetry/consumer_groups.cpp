#include "telemetry/consumer_groups.hpp"

#include "common/encoding.hpp"

#include <boost/json.hpp>

#include <algorithm>
#include <cctype>

namespace iothub::telemetry {
namespace json = boost::json;

namespace {

constexpr std::string_view index_key = "cg/$index";
constexpr std::string_view legacy_prefix = "cg/";

bool is_default(std::string_view name) {
    return to_lower(name) == to_lower(default_consumer_group);
}

std::string checkpoint_key(std::string_view name) {
    return std::string(legacy_prefix) + to_lower(name) + "/checkpoint";
}

std::string encode(const std::vector<std::string>& names) {
    json::array a;
    for (const auto& n : names) a.emplace_back(n);
    return json::serialize(a);
}

error unknown(std::string_view name) {
    return error(errc::not_found, "Consumer group '" + std::string(name) + "' does not exist.");
}

// A compare-and-set lost to a concurrent writer is tried again this many times.
constexpr int cas_attempts = 16;

bool lost_race(const error& e) {
    return e.code() == errc::precondition_failed || e.code() == errc::already_exists ||
           e.code() == errc::not_found;
}

}  // namespace

result<void> consumer_groups::check_name(std::string_view name) {
    if (name.empty() || name.size() > 50)
        return error(errc::argument_invalid, "A consumer group name has 1 to 50 characters.");
    for (char c : name)
        if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '.' && c != '_' &&
            c != '$')
            return error(errc::argument_invalid,
                         "Consumer group names use letters, digits and - . _ $ only.");
    return {};
}

result<consumer_groups::index> consumer_groups::load() {
    auto got = kv_.get(index_key);
    if (!got) return got.error();
    index out;
    if (*got) {
        out.version = (*got)->version;
        boost::system::error_code ec;
        auto v = json::parse((*got)->value, ec);
        if (ec || !v.is_array())
            return error(errc::server_error, "The consumer group index is unreadable.");
        for (const auto& n : v.get_array())
            if (n.is_string()) out.names.emplace_back(n.get_string());
        return out;
    }
    // Not stored yet: the groups of a hub that kept a key per group, if any.
    std::string after;
    for (;;) {
        auto page = kv_.scan(legacy_prefix, after, 1000);
        if (!page) return page.error();
        for (const auto& e : *page) {
            std::string_view rest = std::string_view(e.key).substr(legacy_prefix.size());
            if (rest.find('/') != std::string_view::npos || rest == "$index") continue;
            boost::system::error_code ec;
            auto v = json::parse(e.data.value, ec);
            const auto* o = ec ? nullptr : v.if_object();
            const auto* n = o ? o->if_contains("name") : nullptr;
            out.names.emplace_back(n && n->is_string() ? std::string(n->get_string())
                                                       : std::string(rest));
        }
        if (page->size() < 1000) break;
        after = page->back().key;
    }
    return out;
}

result<std::vector<std::string>> consumer_groups::list() {
    auto ix = load();
    if (!ix) return ix.error();
    std::vector<std::string> out{std::string(default_consumer_group)};
    out.insert(out.end(), ix->names.begin(), ix->names.end());
    return out;
}

result<bool> consumer_groups::create(std::string_view name) {
    if (auto ok = check_name(name); !ok) return ok.error();
    if (is_default(name)) return false;
    for (int attempt = 0; attempt < cas_attempts; ++attempt) {
        auto ix = load();
        if (!ix) return ix.error();
        const auto lower = to_lower(name);
        if (std::any_of(ix->names.begin(), ix->names.end(),
                        [&](const std::string& n) { return to_lower(n) == lower; }))
            return false;
        if (ix->names.size() + 1 >= max_groups_)
            return error(errc::quota_exceeded, "The hub already has the maximum of " +
                                                   std::to_string(max_groups_) +
                                                   " consumer groups.");
        ix->names.emplace_back(name);
        auto r = kv_.put(index_key, encode(ix->names),
                         ix->version ? storage::precondition::version(*ix->version)
                                     : storage::precondition::absent());
        if (r) return true;
        if (!lost_race(r.error())) return r.error();
    }
    return error(errc::throttled, "Consumer groups are changing too fast; try again.");
}

result<std::string> consumer_groups::find(std::string_view name) {
    if (auto ok = check_name(name); !ok) return ok.error();
    if (is_default(name)) return std::string(default_consumer_group);
    auto ix = load();
    if (!ix) return ix.error();
    const auto lower = to_lower(name);
    for (const auto& n : ix->names)
        if (to_lower(n) == lower) return n;
    return unknown(name);
}

result<void> consumer_groups::remove(std::string_view name) {
    if (auto ok = check_name(name); !ok) return ok.error();
    if (is_default(name)) return error(errc::argument_invalid, "$Default cannot be deleted.");
    for (int attempt = 0; attempt < cas_attempts; ++attempt) {
        auto ix = load();
        if (!ix) return ix.error();
        const auto lower = to_lower(name);
        auto it = std::find_if(ix->names.begin(), ix->names.end(),
                               [&](const std::string& n) { return to_lower(n) == lower; });
        if (it == ix->names.end()) return unknown(name);
        ix->names.erase(it);
        auto r = kv_.put(index_key, encode(ix->names),
                         ix->version ? storage::precondition::version(*ix->version)
                                     : storage::precondition::absent());
        if (!r) {
            if (lost_race(r.error())) continue;
            return r.error();
        }
        // What is left of the group: its checkpoint, and a per-group key from older hubs.
        for (auto key : {checkpoint_key(name), std::string(legacy_prefix) + lower})
            if (auto gone = kv_.remove(key); !gone && gone.error().code() != errc::not_found)
                return gone.error();
        return {};
    }
    return error(errc::throttled, "Consumer groups are changing too fast; try again.");
}

result<std::optional<std::string>> consumer_groups::checkpoint(std::string_view name) {
    if (auto found = find(name); !found) return found.error();
    auto got = kv_.get(checkpoint_key(name));
    if (!got) return got.error();
    if (!*got) return std::optional<std::string>();
    return std::optional<std::string>((*got)->value);
}

result<void> consumer_groups::set_checkpoint(std::string_view name, std::string_view cursor) {
    if (auto found = find(name); !found) return found.error();
    auto r = kv_.put(checkpoint_key(name), cursor);
    if (!r) return r.error();
    return {};
}

}  // namespace iothub::telemetry
