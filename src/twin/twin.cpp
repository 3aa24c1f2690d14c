#include "twin/twin.hpp"

#include "common/crypto.hpp"
#include "hub_events/hub_events.hpp"

#include <boost/json.hpp>
#include <spdlog/spdlog.h>

namespace iothub::twin {
namespace json = boost::json;
using registry::identity;

namespace {

constexpr std::string_view never = "0001-01-01T00:00:00Z";

json::object object_at(const json::object& o, std::string_view key) {
    const auto* v = o.if_contains(key);
    return v && v->is_object() ? v->get_object() : json::object{};
}

std::uint64_t number_at(const json::object& o, std::string_view key, std::uint64_t fallback) {
    const auto* v = o.if_contains(key);
    if (!v) return fallback;
    if (v->is_uint64()) return v->get_uint64();
    if (v->is_int64() && v->get_int64() >= 0) return static_cast<std::uint64_t>(v->get_int64());
    return fallback;
}

std::string_view auth_type_name(registry::auth_kind k) {
    switch (k) {
        case registry::auth_kind::sas:
            return "sas";
        case registry::auth_kind::self_signed:
            return "selfSigned";
        case registry::auth_kind::certificate_authority:
            return "certificateAuthority";
        case registry::auth_kind::none:
            return "none";
    }
    return "none";
}

json::value string_or_null(const std::string& s) {
    return s.empty() ? json::value(nullptr) : json::value(s);
}

std::string time_or_never(const std::optional<sys_time>& t) {
    return t ? format_iso8601(*t) : std::string(never);
}

error not_an_object(std::string_view what) {
    return error(errc::argument_invalid, std::string(what) + " must be a JSON object.");
}

// A section of a body: absent and null are "no change"; anything else must be an object.
result<std::optional<json::object>> section_of(const json::object& parent, std::string_view key,
                                               std::string_view what) {
    const auto* v = parent.if_contains(key);
    if (!v || v->is_null()) return std::optional<json::object>{};
    if (!v->is_object()) return not_an_object(what);
    return std::optional<json::object>(strip_reserved(v->get_object()));
}

struct service_patch {
    std::optional<json::object> tags;
    std::optional<json::object> desired;
};

result<service_patch> parse_service_body(const json::value& body, const twin_limits& limits) {
    if (!body.is_object()) return not_an_object("The twin");
    const auto& o = body.get_object();
    service_patch p;
    auto tags = section_of(o, "tags", "'tags'");
    if (!tags) return tags.error();
    p.tags = std::move(*tags);
    if (const auto* props = o.if_contains("properties"); props && !props->is_null()) {
        if (!props->is_object()) return not_an_object("'properties'");
        auto desired = section_of(props->get_object(), "desired", "'properties.desired'");
        if (!desired) return desired.error();
        p.desired = std::move(*desired);
    }
    if (p.tags)
        if (auto r = check_patch(*p.tags, section::tags, limits); !r) return r.error();
    if (p.desired)
        if (auto r = check_patch(*p.desired, section::desired, limits); !r) return r.error();
    return p;
}

}  // namespace

struct twin_service::stored {
    std::string generation;
    std::uint64_t version = 1;
    std::uint64_t desired_version = 1;
    std::uint64_t reported_version = 1;
    std::string model_id;
    json::object tags, desired, desired_meta, reported, reported_meta;

    std::string encode() const {
        json::object o;
        o["g"] = generation;
        o["v"] = version;
        o["dv"] = desired_version;
        o["rv"] = reported_version;
        if (!model_id.empty()) o["mid"] = model_id;
        o["t"] = tags;
        o["d"] = desired;
        o["dm"] = desired_meta;
        o["r"] = reported;
        o["rm"] = reported_meta;
        return json::serialize(o);
    }

    static std::optional<stored> decode(std::string_view text) {
        boost::system::error_code ec;
        auto v = json::parse(text, ec);
        if (ec || !v.is_object()) return std::nullopt;
        const auto& o = v.get_object();
        stored s;
        if (const auto* g = o.if_contains("g"); g && g->is_string()) s.generation = g->get_string();
        s.version = number_at(o, "v", 1);
        s.desired_version = number_at(o, "dv", 1);
        s.reported_version = number_at(o, "rv", 1);
        if (const auto* m = o.if_contains("mid"); m && m->is_string()) s.model_id = m->get_string();
        s.tags = object_at(o, "t");
        s.desired = object_at(o, "d");
        s.desired_meta = object_at(o, "dm");
        s.reported = object_at(o, "r");
        s.reported_meta = object_at(o, "rm");
        return s;
    }
};

struct twin_service::loaded {
    stored doc;
    std::optional<std::uint64_t> record_version;  // the stored record's, live or stale
    std::uint64_t etag_version = 0;               // what the twin's ETag is derived from
};

std::string twin_key(std::string_view device_id, std::string_view module_id) {
    // Device and module twins under separate prefixes, each in the registry's key order.
    if (module_id.empty()) return "td/" + std::string(device_id);
    return "tm/" + std::string(device_id) + "/" + std::string(module_id);
}

twin_service::twin_service(storage::kv_store& kv, registry::device_registry& registry,
                           storage::event_log& hub_events, std::string hub_name, twin_limits limits)
    : kv_(kv),
      registry_(registry),
      hub_events_(hub_events),
      hub_name_(std::move(hub_name)),
      limits_(limits) {}

result<identity> twin_service::identity_of(std::string_view device_id, std::string_view module_id) {
    return module_id.empty() ? registry_.get_device(device_id)
                             : registry_.get_module(device_id, module_id);
}

result<twin_service::loaded> twin_service::load(const identity& id) {
    auto got = kv_.get(twin_key(id.device_id, id.module_id));
    if (!got) return got.error();
    loaded l;
    if (*got) {
        l.record_version = (*got)->version;
        auto doc = stored::decode((*got)->value);
        if (doc && doc->generation == id.generation_id) {
            l.doc = std::move(*doc);
            l.etag_version = (*got)->version;
            return l;
        }
    }
    // Never written, or left by an earlier incarnation of the identity: a fresh twin.
    l.doc.generation = id.generation_id;
    l.etag_version = id.version;
    return l;
}

result<json::object> twin_service::view_of(const identity& id) {
    auto twin = load(id);
    if (!twin) return twin.error();
    return service_view(id, *twin);
}

json::object twin_service::service_view(const identity& id, const loaded& twin) const {
    const auto live = live_(id);
    const auto& d = twin.doc;
    json::object o;
    o["deviceId"] = id.device_id;
    if (id.is_module()) o["moduleId"] = id.module_id;
    o["etag"] = registry::etag_for(twin.etag_version);
    o["deviceEtag"] = registry::etag_for(id.version);
    if (!id.is_module()) {
        o["status"] = id.status == registry::device_status::enabled ? "enabled" : "disabled";
        o["statusReason"] = string_or_null(id.status_reason);
        o["statusUpdateTime"] = time_or_never(id.status_updated);
    }
    o["connectionState"] = live.connected ? "Connected" : "Disconnected";
    o["lastActivityTime"] = time_or_never(live.last_activity);
    o["cloudToDeviceMessageCount"] = live.cloud_to_device_message_count;
    o["authenticationType"] = auth_type_name(id.auth.kind);
    o["x509Thumbprint"] =
        json::object{{"primaryThumbprint", string_or_null(id.auth.primary_thumbprint)},
                     {"secondaryThumbprint", string_or_null(id.auth.secondary_thumbprint)}};
    o["modelId"] = d.model_id;
    o["version"] = d.version;
    if (!id.is_module()) {
        o["capabilities"] = json::object{{"iotEdge", id.iot_edge}};
        if (!id.device_scope.empty()) o["deviceScope"] = id.device_scope;
        if (!id.parent_scopes.empty()) {
            json::array scopes;
            for (const auto& s : id.parent_scopes) scopes.push_back(json::value(s));
            o["parentScopes"] = std::move(scopes);
        }
    }
    o["tags"] = d.tags;
    auto section_view = [](const json::object& values, const json::object& meta,
                           std::uint64_t version) {
        json::object s = values;
        json::object m = meta;
        if (!m.contains("$lastUpdated")) m["$lastUpdated"] = never;
        s["$metadata"] = std::move(m);
        s["$version"] = version;
        return s;
    };
    o["properties"] =
        json::object{{"desired", section_view(d.desired, d.desired_meta, d.desired_version)},
                     {"reported", section_view(d.reported, d.reported_meta, d.reported_version)}};
    return o;
}

result<json::object> twin_service::get(std::string_view device_id, std::string_view module_id) {
    auto id = identity_of(device_id, module_id);
    if (!id) return id.error();
    auto twin = load(*id);
    if (!twin) return twin.error();
    return service_view(*id, *twin);
}

// What one write changes: the new record, the operation and event body, and the desired patch a
// connected device hears.
struct twin_service::change {
    stored after;
    std::string op;
    json::object event;
    std::optional<json::object> desired_patch;
};

struct twin_service::write_op {
    std::string device_id;
    std::string module_id;
    // Turns the twin as read into the change; nullopt: nothing to write.
    std::function<result<std::optional<change>>(const identity&, const loaded&)> plan;
    // The identity and the twin as committed (or as read, when nothing was written).
    std::function<void(result<std::pair<identity, loaded>>)> done;
    int attempts = 0;
};

namespace {
// Lost races a write retries before it gives up; each needs another writer to commit first.
constexpr int max_attempts = 8;
}  // namespace

void twin_service::start(std::shared_ptr<write_op> op) {
    const auto key = twin_key(op->device_id, op->module_id);
    // The write ends (whichever way) by starting the next one queued for this twin, before its
    // caller hears of it: the caller may let go of this service as soon as it does.
    op->done = [this, key, done = std::move(op->done)](result<std::pair<identity, loaded>> r) {
        finished(key);
        done(std::move(r));
    };
    {
        std::lock_guard lock(queues_mutex_);
        auto& q = queues_[key];
        q.push_back(op);
        if (q.size() > 1) return;  // it starts when the one ahead of it ends
    }
    run(std::move(op));
}

void twin_service::finished(const std::string& key) {
    std::shared_ptr<write_op> next;
    {
        std::lock_guard lock(queues_mutex_);
        auto it = queues_.find(key);
        if (it == queues_.end()) return;
        it->second.pop_front();
        if (it->second.empty()) {
            queues_.erase(it);
            return;
        }
        next = it->second.front();
    }
    // Usually called from the storage thread: the next write's reads go elsewhere.
    if (offload_)
        offload_([this, next] { run(next); });
    else
        run(next);
}

void twin_service::run(std::shared_ptr<write_op> op) {
    auto id = identity_of(op->device_id, op->module_id);
    if (!id) return op->done(id.error());
    auto before = load(*id);
    if (!before) return op->done(before.error());
    auto planned = op->plan(*id, *before);
    if (!planned) return op->done(planned.error());
    if (!*planned) return op->done(std::pair{std::move(*id), std::move(*before)});
    auto& c = **planned;
    c.event["version"] = c.after.version;
    auto condition = before->record_version
                         ? storage::precondition::version(*before->record_version)
                         : storage::precondition::absent();
    std::vector<storage::kv_write> writes{{storage::kv_write::op::put,
                                           twin_key(id->device_id, id->module_id), c.after.encode(),
                                           condition}};
    std::vector<storage::event_record> events;
    if (!interest_ || interest_->wants(hub_events::twin_change_source))
        events.push_back(change_event(*id, c.op, std::move(c.event)));
    const int partition = storage::partition_for(id->device_id, hub_events_.partition_count());
    hub_events_.append_with(
        partition, std::move(events), std::move(writes),
        [this, op, id = std::move(*id), after = std::move(c.after),
         desired = std::move(c.desired_patch)](result<storage::appended> r) mutable {
            if (!r) {
                const auto code = r.error().code();
                const bool raced =
                    code == errc::precondition_failed || code == errc::already_exists;
                if (raced && ++op->attempts < max_attempts) {
                    // Another write to this twin committed first: read it and apply again.
                    if (offload_) return offload_([this, op] { run(op); });
                    return run(op);
                }
                if (raced)
                    return op->done(error(errc::precondition_failed,
                                          "The twin of " + id.device_id +
                                              " keeps changing during the update; retry."));
                return op->done(r.error());
            }
            loaded committed{std::move(after), r->versions.front(), r->versions.front()};
            // Commits to one twin are in version order, and so are these.
            if (desired && desired_observer_) {
                desired_change dc{id.device_id, id.module_id, std::move(*desired),
                                  committed.doc.desired_version};
                dc.patch["$version"] = dc.version;
                desired_observer_(dc);
            }
            op->done(std::pair{std::move(id), std::move(committed)});
        });
}

storage::event_record twin_service::change_event(const identity& id, std::string_view op,
                                                 json::object body) const {
    return hub_events::twin_change(hub_name_, {id.device_id, id.module_id}, op,
                                   json::serialize(body), now());
}

namespace {

// A section change as the twin-change event shows it: the patch plus its metadata and version.
json::object section_event(const json::object& patch, const json::object& meta,
                           std::uint64_t version) {
    json::object s = patch;
    s["$metadata"] = meta;
    s["$version"] = version;
    return s;
}

result<void> check_size(const json::object& doc, section s, const twin_limits& limits) {
    auto n = size_of(doc);
    if (n > limits.bytes_for(s))
        return error(errc::argument_invalid,
                     "The twin's " + std::string(name_of(s)) + " would be " + std::to_string(n) +
                         " bytes, over the limit of " + std::to_string(limits.bytes_for(s)) + ".");
    return {};
}

bool etag_holds(const registry::if_match& condition, std::uint64_t etag_version) {
    if (condition.what != registry::if_match::kind::etag) return true;
    auto v = registry::version_from_etag(condition.etag);
    return v && *v == etag_version;
}

error stale_etag() {
    return error(errc::precondition_failed,
                 "The twin's ETag does not match the If-Match precondition.");
}

}  // namespace

void twin_service::update(std::string_view device_id, std::string_view module_id,
                          const json::value& body, const registry::if_match& condition,
                          completion<json::object> done) {
    service_write(device_id, module_id, body, condition, false, std::move(done));
}

void twin_service::replace(std::string_view device_id, std::string_view module_id,
                           const json::value& body, const registry::if_match& condition,
                           completion<json::object> done) {
    service_write(device_id, module_id, body, condition, true, std::move(done));
}

void twin_service::service_write(std::string_view device_id, std::string_view module_id,
                                 const json::value& body, const registry::if_match& condition,
                                 bool replace, completion<json::object> done) {
    auto parsed = parse_service_body(body, limits_);
    if (!parsed) return done(parsed.error());
    auto op = std::make_shared<write_op>();
    op->device_id = device_id;
    op->module_id = module_id;
    op->plan = [this, patch = std::move(*parsed), condition, replace](
                   const identity&, const loaded& before) -> result<std::optional<change>> {
        if (!etag_holds(condition, before.etag_version)) return stale_etag();
        if (!replace && !patch.tags && !patch.desired) return std::optional<change>();
        change c;
        c.op = replace ? "replaceTwin" : "updateTwin";
        auto& after = c.after;
        after = before.doc;
        auto tags = patch.tags;
        auto desired = patch.desired;
        const auto when = format_iso8601(now());
        // A replacement is a patch over empty sections: the same merge, metadata and limits.
        if (replace) {
            after.tags = {};
            after.desired = {};
            after.desired_meta = {};
            if (!tags) tags.emplace();
            if (!desired) desired.emplace();
        }
        if (tags) {
            json::object ignored_meta;
            apply_patch(after.tags, ignored_meta, *tags, when, std::nullopt);
            if (auto r = check_size(after.tags, section::tags, limits_); !r) return r.error();
            c.event["tags"] = replace ? after.tags : *tags;
        }
        if (desired) {
            ++after.desired_version;
            apply_patch(after.desired, after.desired_meta, *desired, when, after.desired_version);
            if (auto r = check_size(after.desired, section::desired, limits_); !r) return r.error();
            c.event["properties"] =
                json::object{{"desired", section_event(replace ? after.desired : *desired,
                                                       after.desired_meta, after.desired_version)}};
            // After a replacement the device hears the difference, so merging it into what it
            // had gives the new document.
            c.desired_patch = replace ? diff(before.doc.desired, after.desired) : *desired;
        }
        ++after.version;
        return std::optional<change>(std::move(c));
    };
    op->done = [this, done = std::move(done)](result<std::pair<identity, loaded>> r) {
        if (!r) return done(r.error());
        done(service_view(r->first, r->second));
    };
    start(std::move(op));
}

result<json::object> twin_service::device_view(std::string_view device_id,
                                               std::string_view module_id) {
    auto id = identity_of(device_id, module_id);
    if (!id) return id.error();
    auto twin = load(*id);
    if (!twin) return twin.error();
    json::object desired = twin->doc.desired, reported = twin->doc.reported;
    desired["$version"] = twin->doc.desired_version;
    reported["$version"] = twin->doc.reported_version;
    return json::object{{"desired", std::move(desired)}, {"reported", std::move(reported)}};
}

void twin_service::update_reported(std::string_view device_id, std::string_view module_id,
                                   const json::value& body, std::optional<std::uint64_t> if_version,
                                   completion<std::uint64_t> done) {
    if (!body.is_object()) return done(not_an_object("A reported-properties patch"));
    auto patch = strip_reserved(body.get_object());
    if (auto r = check_patch(patch, section::reported, limits_); !r) return done(r.error());
    auto op = std::make_shared<write_op>();
    op->device_id = device_id;
    op->module_id = module_id;
    op->plan = [this, patch = std::move(patch), if_version](
                   const identity&, const loaded& before) -> result<std::optional<change>> {
        if (if_version && *if_version != before.doc.reported_version)
            return error(errc::precondition_failed,
                         "The reported properties are at version " +
                             std::to_string(before.doc.reported_version) + ", not " +
                             std::to_string(*if_version) + ".");
        change c;
        c.op = "updateTwin";
        c.after = before.doc;
        auto& after = c.after;
        ++after.reported_version;
        apply_patch(after.reported, after.reported_meta, patch, format_iso8601(now()),
                    std::nullopt);
        if (auto r = check_size(after.reported, section::reported, limits_); !r) return r.error();
        ++after.version;
        c.event = json::object{
            {"properties", json::object{{"reported", section_event(patch, after.reported_meta,
                                                                   after.reported_version)}}}};
        return std::optional<change>(std::move(c));
    };
    op->done = [done = std::move(done)](result<std::pair<identity, loaded>> r) {
        if (!r) return done(r.error());
        done(r->second.doc.reported_version);
    };
    start(std::move(op));
}

result<void> twin_service::set_model_id(std::string_view device_id, std::string_view module_id,
                                        std::string_view model_id) {
    // No change event for this, so a plain compare-and-set, read again when it loses a race.
    for (int attempt = 0;; ++attempt) {
        auto id = identity_of(device_id, module_id);
        if (!id) return id.error();
        auto before = load(*id);
        if (!before) return before.error();
        if (before->doc.model_id == model_id) return {};
        stored after = before->doc;
        after.model_id = model_id;
        auto condition = before->record_version
                             ? storage::precondition::version(*before->record_version)
                             : storage::precondition::absent();
        auto v = kv_.put(twin_key(device_id, module_id), after.encode(), condition);
        if (v) return {};
        const bool raced = v.error().code() == errc::precondition_failed ||
                           v.error().code() == errc::already_exists;
        if (!raced || attempt + 1 >= max_attempts) return v.error();
    }
}

result<twin_page> twin_service::scan(bool modules, std::string_view start_after,
                                     std::size_t limit) {
    auto ids = registry_.scan(modules, start_after, limit);
    if (!ids) return ids.error();
    twin_page page;
    page.last_key = ids->last_key;
    page.done = ids->done;
    page.twins.reserve(ids->identities.size());
    for (const auto& id : ids->identities) {
        auto twin = load(id);
        if (!twin) return twin.error();
        page.twins.push_back(service_view(id, *twin));
    }
    return page;
}

void twin_service::forget(const identity& deleted) {
    auto key = twin_key(deleted.device_id, deleted.module_id);
    auto got = kv_.get(key);
    if (!got || !*got) return;
    auto doc = stored::decode((*got)->value);
    // Only the deleted incarnation's twin: a re-created identity may have written a new one.
    if (doc && doc->generation != deleted.generation_id) return;
    // Best effort: the record is invisible already (it names the old generation); a failure
    // leaves it to be overwritten or removed later.
    (void)kv_.remove(key, storage::precondition::version((*got)->version));
}

namespace {
device_answer failure(const error& e) {
    const auto& d = e.descriptor();
    boost::json::object body{
        {"errorCode", d.code}, {"message", e.message()}, {"timestampUtc", format_iso8601(now())}};
    return {d.http_status, boost::json::serialize(body), std::nullopt};
}
}  // namespace

device_answer answer_get(twin_service& twins, std::string_view device_id,
                         std::string_view module_id) {
    auto view = twins.device_view(device_id, module_id);
    if (!view) return failure(view.error());
    return {200, boost::json::serialize(*view), std::nullopt};
}

void answer_reported_patch(twin_service& twins, std::string_view device_id,
                           std::string_view module_id, std::string_view patch_text,
                           std::optional<std::uint64_t> if_version,
                           std::function<void(device_answer)> done) {
    boost::system::error_code ec;
    auto patch = boost::json::parse(patch_text, ec);
    if (ec)
        return done(
            failure(error(errc::format_error,
                          "The reported-properties patch is not JSON: " + ec.message() + ".")));
    twins.update_reported(device_id, module_id, patch, if_version,
                          [done = std::move(done)](result<std::uint64_t> v) {
                              done(v ? device_answer{204, std::string(), *v} : failure(v.error()));
                          });
}

}  // namespace iothub::twin
