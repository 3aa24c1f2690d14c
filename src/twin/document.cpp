#include "twin/document.hpp"

#include <boost/json.hpp>

namespace iothub::twin {
namespace json = boost::json;

namespace {

constexpr std::int64_t max_integer = 4503599627370495;
constexpr std::int64_t min_integer = -4503599627370496;

bool is_control(std::uint32_t cp) {
    return cp < 0x20 || (cp >= 0x7F && cp <= 0x9F);
}

// Characters Azure counts in a string: code points outside the C0 and C1 control ranges.
std::size_t counted_chars(std::string_view s) {
    std::size_t n = 0;
    for (std::size_t i = 0; i < s.size();) {
        auto c = static_cast<unsigned char>(s[i]);
        std::uint32_t cp = c;
        std::size_t len = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
        if (len == 2 && i + 1 < s.size())
            cp = ((c & 0x1Fu) << 6) | (static_cast<unsigned char>(s[i + 1]) & 0x3Fu);
        if (!is_control(cp)) ++n;
        i += len;
    }
    return n;
}

std::string quoted_path(const std::string& path) {
    return path.empty() ? std::string("the section root") : "'" + path + "'";
}

result<void> check_key(std::string_view key, const std::string& path, const twin_limits& limits) {
    if (key.empty()) return error(errc::argument_invalid, "Empty property name at " + path + ".");
    if (key.size() > limits.key_bytes)
        return error(errc::argument_invalid, "Property name at " + quoted_path(path) +
                                                 " is longer than " +
                                                 std::to_string(limits.key_bytes) + " bytes.");
    for (std::size_t i = 0; i < key.size(); ++i) {
        auto c = static_cast<unsigned char>(key[i]);
        bool control =
            c < 0x20 || c == 0x7F ||
            (c == 0xC2 && i + 1 < key.size() && static_cast<unsigned char>(key[i + 1]) >= 0x80 &&
             static_cast<unsigned char>(key[i + 1]) <= 0x9F);
        if (control || c == '.' || c == '$' || c == ' ')
            return error(errc::argument_invalid,
                         "Property name '" + std::string(key) + "' at " + quoted_path(path) +
                             " contains a character twins do not allow (control characters, "
                             "'.', '$' and space).");
    }
    return {};
}

result<void> check_value(const json::value& v, const std::string& path, std::size_t depth,
                         const twin_limits& limits) {
    switch (v.kind()) {
        case json::kind::object: {
            if (depth > limits.depth)
                return error(errc::argument_invalid, "Twin properties nest deeper than " +
                                                         std::to_string(limits.depth) +
                                                         " levels at " + quoted_path(path) + ".");
            for (const auto& [k, child] : v.get_object()) {
                std::string child_path =
                    path.empty() ? std::string(k) : path + "." + std::string(k);
                if (auto r = check_key(k, path, limits); !r) return r;
                if (auto r = check_value(child, child_path, depth + 1, limits); !r) return r;
            }
            return {};
        }
        case json::kind::array: {
            if (depth > limits.depth)
                return error(errc::argument_invalid, "Twin properties nest deeper than " +
                                                         std::to_string(limits.depth) +
                                                         " levels at " + quoted_path(path) + ".");
            std::size_t i = 0;
            for (const auto& child : v.get_array()) {
                if (child.is_null())
                    return error(errc::argument_invalid, "Arrays in twins cannot hold null (at " +
                                                             quoted_path(path) + ").");
                if (auto r = check_value(child, path + "[" + std::to_string(i++) + "]", depth + 1,
                                         limits);
                    !r)
                    return r;
            }
            return {};
        }
        case json::kind::string:
            if (v.get_string().size() > limits.string_value_bytes)
                return error(errc::argument_invalid,
                             "The string at " + quoted_path(path) + " is longer than " +
                                 std::to_string(limits.string_value_bytes) + " bytes.");
            return {};
        case json::kind::int64:
            if (v.get_int64() > max_integer || v.get_int64() < min_integer)
                return error(errc::argument_invalid,
                             "The integer at " + quoted_path(path) +
                                 " is outside [-4503599627370496, 4503599627370495].");
            return {};
        case json::kind::uint64:
            if (v.get_uint64() > static_cast<std::uint64_t>(max_integer))
                return error(errc::argument_invalid,
                             "The integer at " + quoted_path(path) +
                                 " is outside [-4503599627370496, 4503599627370495].");
            return {};
        default:
            return {};
    }
}

std::size_t size_of_value(const json::value& v) {
    switch (v.kind()) {
        case json::kind::object:
            return size_of(v.get_object());
        case json::kind::array: {
            std::size_t n = 0;
            for (const auto& e : v.get_array()) n += size_of_value(e);
            return n;
        }
        case json::kind::string:
            return counted_chars(v.get_string());
        case json::kind::bool_:
            return 4;
        case json::kind::null:
            return 0;
        default:
            return 8;
    }
}

// A copy of `v` without null members (a patch's nulls mean "delete", which on a fresh object is
// nothing).
json::value without_nulls(const json::value& v) {
    if (!v.is_object()) return v;
    json::object out;
    for (const auto& [k, child] : v.get_object())
        if (!child.is_null()) out.emplace(k, without_nulls(child));
    return out;
}

json::object leaf_meta(std::string_view when, std::optional<std::uint64_t> version) {
    json::object m;
    m["$lastUpdated"] = when;
    if (version) m["$lastUpdatedVersion"] = *version;
    return m;
}

// Metadata for a freshly written value: the leaf's stamp, mirrored through nested objects.
json::object fresh_meta(const json::value& v, std::string_view when,
                        std::optional<std::uint64_t> version) {
    auto m = leaf_meta(when, version);
    if (v.is_object())
        for (const auto& [k, child] : v.get_object()) m[k] = fresh_meta(child, when, version);
    return m;
}

}  // namespace

std::string_view name_of(section s) {
    switch (s) {
        case section::tags:
            return "tags";
        case section::desired:
            return "desired properties";
        case section::reported:
            return "reported properties";
    }
    return "?";
}

result<void> check_patch(const json::object& patch, section s, const twin_limits& limits) {
    for (const auto& [k, v] : patch) {
        auto r = check_key(k, "", limits);
        if (r) r = check_value(v, std::string(k), 1, limits);
        if (!r)
            return error(r.error().code(),
                         "Invalid " + std::string(name_of(s)) + ": " + r.error().message());
    }
    return {};
}

json::object strip_reserved(json::object patch) {
    patch.erase("$version");
    patch.erase("$metadata");
    return patch;
}

void apply_patch(json::object& doc, json::object& meta, const json::object& patch,
                 std::string_view when, std::optional<std::uint64_t> version) {
    meta["$lastUpdated"] = when;
    if (version) meta["$lastUpdatedVersion"] = *version;
    for (const auto& [k, v] : patch) {
        if (v.is_null()) {
            doc.erase(k);
            meta.erase(k);
            continue;
        }
        if (v.is_object()) {
            auto* existing = doc.if_contains(k);
            if (!existing || !existing->is_object()) {
                doc[k] = without_nulls(v);
                meta[k] = fresh_meta(doc[k], when, version);
                continue;
            }
            auto* m = meta.if_contains(k);
            if (!m || !m->is_object()) meta[k] = json::object{};
            apply_patch(existing->get_object(), meta[k].get_object(), v.get_object(), when,
                        version);
            continue;
        }
        doc[k] = v;
        meta[k] = leaf_meta(when, version);
    }
}

std::size_t size_of(const json::object& doc) {
    std::size_t n = 0;
    for (const auto& [k, v] : doc) n += counted_chars(k) + size_of_value(v);
    return n;
}

json::object diff(const json::object& before, const json::object& after) {
    json::object d;
    for (const auto& [k, v] : before)
        if (!after.contains(k)) d[k] = nullptr;
    for (const auto& [k, v] : after) {
        const auto* old = before.if_contains(k);
        if (old && *old == v) continue;
        if (old && old->is_object() && v.is_object())
            d[k] = diff(old->get_object(), v.get_object());
        else
            d[k] = v;
    }
    return d;
}

}  // namespace iothub::twin
