#include "registry/registry.hpp"

#include "common/crypto.hpp"
#include "common/encoding.hpp"

#include <boost/json.hpp>

#include <set>

namespace iothub::registry {
namespace json = boost::json;
namespace {

constexpr int cas_retries = 5;  // for unconditional updates that lose a race to another writer

std::string quoted(std::string_view id) {
    return "'" + std::string(id) + "'";
}

error device_not_found(std::string_view id) {
    return error(errc::device_not_found, "Device " + quoted(id) + " is not registered.");
}
error module_not_found(std::string_view d, std::string_view m) {
    return error(errc::module_not_found,
                 "Module " + quoted(m) + " is not registered on device " + quoted(d) + ".");
}
error stale_etag() {
    return error(errc::precondition_failed,
                 "The ETag in If-Match does not match the current version; read it again.");
}

// Translates storage condition failures into the registry's words.
error for_device(const error& e, std::string_view id) {
    switch (e.code()) {
        case errc::already_exists:
            return error(errc::device_already_exists,
                         "A device with ID " + quoted(id) + " is already registered.");
        case errc::not_found:
            return device_not_found(id);
        case errc::precondition_failed:
            return stale_etag();
        default:
            return e;
    }
}
error for_module(const error& e, std::string_view d, std::string_view m) {
    switch (e.code()) {
        case errc::already_exists:
            return error(
                errc::module_already_exists,
                "A module with ID " + quoted(m) + " already exists on device " + quoted(d) + ".");
        case errc::not_found:
            return module_not_found(d, m);
        case errc::precondition_failed:
            return stale_etag();
        default:
            return e;
    }
}

bool etag_matches(const if_match& cond, const identity& current) {
    if (cond.what != if_match::kind::etag) return true;
    auto v = version_from_etag(cond.etag);
    return v && *v == current.version;
}

std::string module_prefix(std::string_view device_id) {
    return "m/" + std::string(device_id) + "/";
}

std::optional<import_mode> parse_mode(std::string_view s) {
    static const std::pair<std::string_view, import_mode> modes[] = {
        {"create", import_mode::create},
        {"createOrUpdate", import_mode::create_or_update},
        {"createOrUpdateIfMatchETag", import_mode::create_or_update_if_match_etag},
        {"update", import_mode::update},
        {"updateIfMatchETag", import_mode::update_if_match_etag},
        {"delete", import_mode::remove},
        {"deleteIfMatchETag", import_mode::remove_if_match_etag},
    };
    for (const auto& [name, mode] : modes)
        if (iequals(name, s)) return mode;
    return std::nullopt;
}

}  // namespace

std::optional<identity_change> device_registry::remote_change(const storage::kv_change& c) {
    if (!c.key.starts_with("d/") && !c.key.starts_with("m/")) return std::nullopt;
    identity_change out;
    if (c.before)
        if (auto id = decode_stored(c.before->value, c.before->version))
            out.before = std::move(*id);
    if (c.after)
        if (auto id = decode_stored(c.after->value, c.after->version)) out.after = std::move(*id);
    if (!out.before && !out.after) return std::nullopt;
    return out;
}

std::string device_key(std::string_view device_id) {
    return "d/" + std::string(device_id);
}
std::string module_key(std::string_view device_id, std::string_view module_id) {
    return "m/" + std::string(device_id) + "/" + std::string(module_id);
}

if_match if_match::parse(std::string_view header) {
    while (!header.empty() && header.front() == ' ') header.remove_prefix(1);
    while (!header.empty() && header.back() == ' ') header.remove_suffix(1);
    if (header.empty()) return {};
    if (header.size() >= 2 && header.front() == '"' && header.back() == '"')
        header = header.substr(1, header.size() - 2);
    if (header == "*") return {kind::any, {}};
    return {kind::etag, std::string(header)};
}

device_registry::device_registry(storage::kv_store& kv, registry_limits limits)
    : kv_(kv), limits_(limits) {}

void device_registry::on_change(std::function<void(const identity_change&)> observer) {
    std::lock_guard lock(observers_mutex_);
    observers_.push_back(std::move(observer));
}

void device_registry::notify(const identity_change& change) {
    std::vector<std::function<void(const identity_change&)>> copy;
    {
        std::lock_guard lock(observers_mutex_);
        copy = observers_;
    }
    for (const auto& o : copy) o(change);
}

result<std::optional<identity>> device_registry::load(const std::string& key) {
    auto got = kv_.get(key);
    if (!got) return got.error();
    if (!*got) return std::optional<identity>{};
    auto id = decode_stored((*got)->value, (*got)->version);
    if (!id) return id.error();
    return std::optional<identity>{std::move(*id)};
}

result<identity> device_registry::load_live_device(std::string_view device_id) {
    auto d = load(device_key(device_id));
    if (!d) return d.error();
    if (!*d) return device_not_found(device_id);
    return std::move(**d);
}

result<std::optional<identity>> device_registry::load_live_module(std::string_view device_id,
                                                                  std::string_view module_id) {
    auto dev = load_live_device(device_id);
    if (!dev) return dev.error();
    auto m = load(module_key(device_id, module_id));
    if (!m) return m.error();
    if (*m && (*m)->device_generation_id != dev->generation_id) return std::optional<identity>{};
    return m;
}

identity device_registry::prepare(identity fields, const std::optional<identity>& current) const {
    if (current) {
        fields.generation_id = current->generation_id;
        fields.device_generation_id = current->device_generation_id;
        fields.status_updated = fields.status != current->status ? std::optional<sys_time>(now())
                                                                 : current->status_updated;
        // Keys left out of an update keep their values, so a status change cannot silently
        // rotate credentials; rotating is an explicit write of new keys.
        if (fields.auth.kind == auth_kind::sas && current->auth.kind == auth_kind::sas) {
            if (fields.auth.primary_key.empty())
                fields.auth.primary_key = current->auth.primary_key;
            if (fields.auth.secondary_key.empty())
                fields.auth.secondary_key = current->auth.secondary_key;
        }
    } else {
        fields.generation_id = new_generation_id();
    }
    if (fields.auth.kind == auth_kind::sas) {
        if (fields.auth.primary_key.empty()) fields.auth.primary_key = generate_key();
        if (fields.auth.secondary_key.empty()) fields.auth.secondary_key = generate_key();
    }
    return fields;
}

result<identity> device_registry::put_device(identity_spec spec, const if_match& condition) {
    const std::string id = spec.fields.device_id;
    const std::string key = device_key(id);
    if (condition.what == if_match::kind::absent) {
        identity d = prepare(std::move(spec.fields), std::nullopt);
        auto v = kv_.put(key, encode_stored(d), storage::precondition::absent());
        if (!v) return for_device(v.error(), id);
        d.version = *v;
        notify({std::nullopt, d});
        return d;
    }
    for (int attempt = 0;; ++attempt) {
        auto current = load(key);
        if (!current) return current.error();
        if (!*current) return device_not_found(id);
        if (!etag_matches(condition, **current)) return stale_etag();
        identity d = prepare(spec.fields, *current);
        auto v =
            kv_.put(key, encode_stored(d), storage::precondition::version((*current)->version));
        if (!v) {
            bool retry = v.error().code() == errc::precondition_failed &&
                         condition.what == if_match::kind::any && attempt < cas_retries;
            if (retry) continue;
            return for_device(v.error(), id);
        }
        d.version = *v;
        notify({std::move(**current), d});
        return d;
    }
}

result<identity> device_registry::get_device(std::string_view device_id) {
    return load_live_device(device_id);
}

result<void> device_registry::delete_device(std::string_view device_id, const if_match& condition) {
    auto current = load_live_device(device_id);
    if (!current) return current.error();
    if (!etag_matches(condition, *current)) return stale_etag();
    if (auto r =
            kv_.remove(device_key(device_id), storage::precondition::version(current->version));
        !r)
        return for_device(r.error(), device_id);

    reclaim_modules(*current);
    notify({std::move(*current), std::nullopt});
    return {};
}

void device_registry::reclaim_modules(const identity& deleted_device) {
    // The device is gone, so its modules are already invisible (generation binding); removing
    // their records now just reclaims space, and a failure here loses nothing.
    std::vector<identity> modules;
    std::string after;
    for (;;) {
        auto page = kv_.scan(module_prefix(deleted_device.device_id), after, 500);
        if (!page || page->empty()) break;
        std::vector<storage::kv_write> removals;
        for (const auto& e : *page) {
            removals.push_back(
                {storage::kv_write::op::remove, e.key, {}, storage::precondition::none()});
            if (auto m = decode_stored(e.data.value, e.data.version);
                m && m->device_generation_id == deleted_device.generation_id)
                modules.push_back(std::move(*m));
        }
        after = page->back().key;
        kv_.apply(removals);
    }
    for (auto& m : modules) notify({std::move(m), std::nullopt});
}

result<std::vector<identity>> device_registry::list_devices(std::size_t top) {
    auto page = kv_.scan("d/", "", std::min(top, limits_.max_list));
    if (!page) return page.error();
    std::vector<identity> out;
    out.reserve(page->size());
    for (const auto& e : *page) {
        auto d = decode_stored(e.data.value, e.data.version);
        if (!d) return d.error();
        out.push_back(std::move(*d));
    }
    return out;
}

result<device_registry::identity_page> device_registry::scan(bool modules,
                                                             std::string_view start_after,
                                                             std::size_t limit) {
    auto page = kv_.scan(modules ? "m/" : "d/", start_after, std::max<std::size_t>(limit, 1));
    if (!page) return page.error();
    identity_page out;
    out.done = page->size() < std::max<std::size_t>(limit, 1);
    out.last_key = page->empty() ? std::string(start_after) : page->back().key;
    // Modules arrive grouped by device: one device lookup per group decides their visibility.
    std::string device_id, device_generation;
    for (const auto& e : *page) {
        auto id = decode_stored(e.data.value, e.data.version);
        if (!id) return id.error();
        if (modules) {
            if (id->device_id != device_id) {
                device_id = id->device_id;
                auto d = load(device_key(device_id));
                if (!d) return d.error();
                device_generation = *d ? (*d)->generation_id : std::string();
            }
            if (device_generation.empty() || id->device_generation_id != device_generation)
                continue;
        }
        out.identities.push_back(std::move(*id));
    }
    return out;
}

result<identity> device_registry::put_module(identity_spec spec, const if_match& condition) {
    const std::string d = spec.fields.device_id, m = spec.fields.module_id;
    const std::string key = module_key(d, m);
    for (int attempt = 0;; ++attempt) {
        auto device = load_live_device(d);
        if (!device) return device.error();
        auto stored = load(key);
        if (!stored) return stored.error();
        const bool live = *stored && (*stored)->device_generation_id == device->generation_id;

        identity mod;
        storage::precondition pre = storage::precondition::absent();
        if (condition.what == if_match::kind::absent) {
            if (live) return for_module(error(errc::already_exists, ""), d, m);
            auto existing = list_modules(d);
            if (!existing) return existing.error();
            if (existing->size() >= limits_.max_modules_per_device)
                return error(errc::too_many_modules,
                             "Device " + quoted(d) + " already has the maximum of " +
                                 std::to_string(limits_.max_modules_per_device) + " modules.");
            mod = prepare(std::move(spec.fields), std::nullopt);
            mod.device_generation_id = device->generation_id;
            // A record left behind by an earlier incarnation of the device is overwritten.
            if (*stored) pre = storage::precondition::version((*stored)->version);
        } else {
            if (!live) return module_not_found(d, m);
            if (!etag_matches(condition, **stored)) return stale_etag();
            mod = prepare(spec.fields, *stored);
            pre = storage::precondition::version((*stored)->version);
        }
        auto v = kv_.put(key, encode_stored(mod), pre);
        if (!v) {
            if (v.error().code() == errc::precondition_failed && attempt < cas_retries &&
                condition.what != if_match::kind::etag)
                continue;
            return for_module(v.error(), d, m);
        }
        mod.version = *v;
        notify({live ? std::optional<identity>(std::move(**stored)) : std::nullopt, mod});
        return mod;
    }
}

result<identity> device_registry::get_module(std::string_view device_id,
                                             std::string_view module_id) {
    auto m = load_live_module(device_id, module_id);
    if (!m) return m.error();
    if (!*m) return module_not_found(device_id, module_id);
    return std::move(**m);
}

result<void> device_registry::delete_module(std::string_view device_id, std::string_view module_id,
                                            const if_match& condition) {
    auto m = load_live_module(device_id, module_id);
    if (!m) return m.error();
    if (!*m) return module_not_found(device_id, module_id);
    if (!etag_matches(condition, **m)) return stale_etag();
    if (auto r = kv_.remove(module_key(device_id, module_id),
                            storage::precondition::version((*m)->version));
        !r)
        return for_module(r.error(), device_id, module_id);
    notify({std::move(**m), std::nullopt});
    return {};
}

result<std::vector<identity>> device_registry::list_modules(std::string_view device_id) {
    auto device = load_live_device(device_id);
    if (!device) return device.error();
    std::vector<identity> out;
    std::string after;
    for (;;) {
        auto page = kv_.scan(module_prefix(device_id), after, 500);
        if (!page) return page.error();
        if (page->empty()) break;
        for (const auto& e : *page) {
            auto m = decode_stored(e.data.value, e.data.version);
            if (!m) return m.error();
            if (m->device_generation_id == device->generation_id) out.push_back(std::move(*m));
        }
        after = page->back().key;
    }
    return out;
}

result<registry_statistics> device_registry::statistics() {
    registry_statistics stats;
    std::string after;
    for (;;) {
        auto page = kv_.scan("d/", after, 1000);
        if (!page) return page.error();
        if (page->empty()) break;
        for (const auto& e : *page) {
            ++stats.total;
            // Only the status matters here; a cheap look avoids decoding every record fully.
            if (e.data.value.find("\"s\":\"disabled\"") != std::string::npos) {
                ++stats.disabled;
            } else {
                ++stats.enabled;
            }
        }
        after = page->back().key;
    }
    return stats;
}

result<std::vector<bulk_item>> parse_bulk(const json::value& body, const registry_limits& limits) {
    if (!body.is_array())
        return error(errc::argument_invalid, "The request body must be a JSON array of devices.");
    const auto& arr = body.get_array();
    if (arr.empty()) return error(errc::argument_invalid, "The request contains no devices.");
    if (arr.size() > limits.max_bulk_items)
        return error(errc::too_many_devices,
                     "A bulk registry call takes at most " + std::to_string(limits.max_bulk_items) +
                         " devices; this one has " + std::to_string(arr.size()) + ".");
    std::vector<bulk_item> items;
    std::set<std::pair<std::string, std::string>> seen;
    for (std::size_t i = 0; i < arr.size(); ++i) {
        const auto where = "Item " + std::to_string(i) + ": ";
        if (!arr[i].is_object())
            return error(errc::argument_invalid, where + "each item must be a JSON object.");
        const auto& o = arr[i].get_object();
        bulk_item item;
        item.mode_name = "createOrUpdate";
        if (auto it = o.find("importMode"); it != o.end() && !it->value().is_null()) {
            if (!it->value().is_string())
                return error(errc::argument_invalid, where + "importMode must be a string.");
            item.mode_name = std::string(it->value().get_string());
        }
        auto mode = parse_mode(item.mode_name);
        if (!mode)
            return error(errc::argument_invalid,
                         where + "unknown importMode '" + item.mode_name + "'.");
        item.mode = *mode;

        std::string module_id;
        if (auto it = o.find("moduleId"); it != o.end() && it->value().is_string())
            module_id = std::string(it->value().get_string());
        std::string device_id;
        if (auto it = o.find("id"); it != o.end() && it->value().is_string())
            device_id = std::string(it->value().get_string());
        auto spec = module_id.empty() ? parse_device(arr[i], device_id)
                                      : parse_module(arr[i], device_id, module_id);
        if (!spec) return error(spec.error().code(), where + spec.error().message());
        item.spec = std::move(*spec);
        if (!seen.emplace(item.spec.fields.device_id, item.spec.fields.module_id).second)
            return error(errc::defined_multiple_times,
                         where + "device " + quoted(item.spec.fields.device_id) +
                             (module_id.empty() ? "" : " module " + quoted(module_id)) +
                             " appears more than once in the request.");
        items.push_back(std::move(item));
    }
    return items;
}

result<bulk_result> device_registry::bulk(std::vector<bulk_item> items) {
    // Each item is resolved against the current state, then every resulting write is committed in
    // one batch (one sync); items whose condition fails are reported and the rest still apply.
    struct pending {
        std::size_t item;
        std::optional<identity> before;
        std::optional<identity> after;
    };
    bulk_result out;
    std::vector<storage::kv_write> writes;
    std::vector<pending> plans;
    auto fail = [&](const bulk_item& item, error e) {
        out.errors.push_back(
            {item.spec.fields.device_id, item.spec.fields.module_id, item.mode_name, std::move(e)});
    };

    for (std::size_t i = 0; i < items.size(); ++i) {
        auto& item = items[i];
        const auto& f = item.spec.fields;
        const bool is_module = f.is_module();
        auto wrap = [&](const error& e) {
            return is_module ? for_module(e, f.device_id, f.module_id) : for_device(e, f.device_id);
        };
        const std::string key =
            is_module ? module_key(f.device_id, f.module_id) : device_key(f.device_id);
        std::optional<identity> device;  // the owning device, for module items
        if (is_module) {
            auto d = load_live_device(f.device_id);
            if (!d) {
                fail(item, d.error());
                continue;
            }
            device = std::move(*d);
        }
        auto stored = load(key);
        if (!stored) {
            fail(item, stored.error());
            continue;
        }
        std::optional<identity> current = std::move(*stored);
        if (current && is_module && current->device_generation_id != device->generation_id)
            current.reset();  // a leftover of an earlier incarnation of the device
        const std::uint64_t stored_version = *stored ? (*stored)->version : 0;
        auto precise = [&](std::uint64_t version) {
            return stored_version ? storage::precondition::version(version)
                                  : storage::precondition::absent();
        };

        const bool needs_etag = item.mode == import_mode::update_if_match_etag ||
                                item.mode == import_mode::remove_if_match_etag ||
                                item.mode == import_mode::create_or_update_if_match_etag;
        if (needs_etag && current) {
            auto v = item.spec.etag ? version_from_etag(*item.spec.etag) : std::nullopt;
            if (!v || *v != current->version) {
                fail(item, stale_etag());
                continue;
            }
        }
        switch (item.mode) {
            case import_mode::create:
                if (current) {
                    fail(item, wrap(error(errc::already_exists, "")));
                    continue;
                }
                break;
            case import_mode::update:
            case import_mode::update_if_match_etag:
            case import_mode::remove:
            case import_mode::remove_if_match_etag:
                if (!current) {
                    fail(item, wrap(error(errc::not_found, "")));
                    continue;
                }
                break;
            default:
                break;
        }
        if (item.mode == import_mode::remove || item.mode == import_mode::remove_if_match_etag) {
            writes.push_back({storage::kv_write::op::remove,
                              key,
                              {},
                              storage::precondition::version(stored_version)});
            plans.push_back({i, std::move(current), std::nullopt});
            continue;
        }
        identity next = prepare(std::move(item.spec.fields), current);
        if (is_module && !current) next.device_generation_id = device->generation_id;
        writes.push_back(
            {storage::kv_write::op::put, key, encode_stored(next), precise(stored_version)});
        plans.push_back({i, std::move(current), std::move(next)});
    }

    auto results = kv_.apply(writes);
    for (std::size_t w = 0; w < results.size(); ++w) {
        auto& plan = plans[w];
        const auto& item = items[plan.item];
        if (!results[w]) {
            const auto& f = plan.after ? *plan.after : *plan.before;
            fail(item, f.is_module() ? for_module(results[w].error(), f.device_id, f.module_id)
                                     : for_device(results[w].error(), f.device_id));
            continue;
        }
        if (plan.after) plan.after->version = *results[w];
        if (!plan.after && !plan.before->is_module()) reclaim_modules(*plan.before);
        notify({std::move(plan.before), std::move(plan.after)});
    }
    return out;
}

json::object to_json(const bulk_result& r) {
    json::array errors;
    for (const auto& e : r.errors) {
        errors.push_back(json::object{
            {"deviceId", e.device_id},
            {"errorCode", e.cause.descriptor().name},
            {"errorStatus", e.cause.message()},
            {"moduleId", e.module_id.empty() ? json::value(nullptr) : json::value(e.module_id)},
            {"operation", e.operation},
        });
    }
    return json::object{{"isSuccessful", r.successful()},
                        {"errors", std::move(errors)},
                        {"warnings", json::array{}}};
}

}  // namespace iothub::registry
