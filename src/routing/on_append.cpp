// Routes decided as device messages arrive, and what both ways of delivering share (delivery.hpp).
// When every route device messages can take leads to a log the hub keeps and nothing reads the
// twin, the appender evaluates each message's routes on the thread that received it and appends
// it to each endpoint's log (synced, like the ingest log): the message is written once, instead
// of to the ingest log, read back, decoded and written again by each endpoint's worker. The
// completion the device waits on runs when every endpoint's copy is durable.
#include "routing/on_append.hpp"

#include "common/encoding.hpp"

#include <algorithm>
#include <limits>

namespace iothub::routing {

namespace delivery {

std::vector<query::truth> outcomes(const routing_config& config, std::optional<source> from,
                                   message_view& view, std::atomic<std::uint64_t>& undefined) {
    std::vector<query::truth> out(config.routes.size() + 1, query::truth::false_);
    for (std::size_t i = 0; i < config.routes.size(); ++i) {
        const auto& route = config.routes[i];
        if (!route.enabled || !from || route.from != *from) continue;
        out[i] = view.evaluate(route.condition);
        if (out[i] == query::truth::undefined) ++undefined;
    }
    if (from == source::device_messages && config.fallback.enabled)
        out.back() = view.evaluate(config.fallback.condition);
    return out;
}

std::vector<std::string> condition_roots(const routing_config& config) {
    std::vector<std::string> out;
    auto read = [&](const query::condition& c) {
        for (const auto& root : c.roots())
            if (std::find(out.begin(), out.end(), root) == out.end()) out.push_back(root);
    };
    for (const auto& r : config.routes) read(r.condition);
    read(config.fallback.condition);
    return out;
}

std::vector<const enrichment*> enrichments_for(const routing_config& config,
                                               std::string_view endpoint) {
    std::vector<const enrichment*> out;
    for (const auto& en : config.enrichments)
        if (std::any_of(en.endpoints.begin(), en.endpoints.end(),
                        [&](const std::string& name) { return iequals(name, endpoint); }))
            out.push_back(&en);
    return out;
}

bool finish_copy(storage::event_record& out, sys_time enqueued,
                 std::span<const enrichment* const> enrichments,
                 const std::function<message_view&()>& view, std::string_view hub_name,
                 std::size_t max_bytes, std::atomic<std::uint64_t>& too_large) {
    // When the hub took it, as endpoints show it: the copy is enqueued again by its endpoint.
    if (!storage::find_property(out.system_properties, "iothub-enqueuedtime"))
        out.system_properties.emplace_back("iothub-enqueuedtime", format_iso8601(enqueued));
    for (const auto* en : enrichments) {
        auto value = view().enrichment(en->value, hub_name);
        bool replaced = false;
        for (auto& [k, v] : out.application_properties)
            if (k == en->key) {
                v = value;
                replaced = true;
            }
        if (!replaced) out.application_properties.emplace_back(en->key, std::move(value));
    }
    if (storage::event_size(out) > max_bytes) {
        ++too_large;
        return false;
    }
    return true;
}

}  // namespace delivery

namespace {

constexpr auto none = std::numeric_limits<std::size_t>::max();

bool reads_twin(std::string_view enrichment_value) {
    constexpr std::string_view prefix = "$twin.";
    return enrichment_value.size() >= prefix.size() &&
           iequals(enrichment_value.substr(0, prefix.size()), prefix);
}

}  // namespace

// What the configuration in force asks of each device message, worked out once per
// configuration.
struct router::appender::plan {
    std::shared_ptr<const routing_config> config;
    std::vector<std::string> roots;  // what the conditions read
    struct target {
        storage::event_log* log;
        std::vector<const enrichment*> enrichments;
        std::shared_ptr<health_cell> health;
    };
    std::vector<target> targets;
    std::vector<std::size_t> route_target;  // per route: its target, or `none`
    std::size_t fallback_target = none;
};

router::appender::appender(router& r) : r_(r) {}
router::appender::~appender() = default;

bool router::appender::decidable(const routing_config& c) {
    std::vector<std::string> targets;
    for (const auto& route : c.routes) {
        if (!route.enabled || route.from != source::device_messages) continue;
        if (route.condition.reads_twin()) return false;
        if (!iequals(route.endpoint, builtin_events)) {
            const auto* e = c.find_endpoint(route.endpoint);
            if (!e || !e->hosted()) return false;  // eventgrid, external, storage: workers
        }
        targets.push_back(to_lower(route.endpoint));
    }
    if (c.fallback.enabled) {
        if (c.fallback.condition.reads_twin() || !iequals(c.fallback.endpoint, builtin_events))
            return false;
        targets.emplace_back(builtin_events);
    }
    for (const auto& en : c.enrichments)
        if (reads_twin(en.value))
            for (const auto& name : en.endpoints)
                if (std::find(targets.begin(), targets.end(), to_lower(name)) != targets.end())
                    return false;
    return true;
}

std::vector<std::string> router::appender::takers(const routing_config& c) {
    std::vector<std::string> out;
    auto add = [&](std::string_view name) {
        auto key = to_lower(name);
        if (std::find(out.begin(), out.end(), key) == out.end()) out.push_back(std::move(key));
    };
    for (const auto& route : c.routes)
        if (route.enabled && route.from == source::device_messages) add(route.endpoint);
    if (c.fallback.enabled) add(c.fallback.endpoint);
    return out;
}

result<void> router::appender::prepare(
    std::shared_ptr<const routing_config> c,
    const std::map<std::string, storage::event_log*>& hosted,
    const std::function<std::shared_ptr<health_cell>(const std::string&)>& health_of) {
    auto p = std::make_shared<plan>();
    p->config = c;
    std::vector<std::string> keys;  // of p->targets
    auto target_of = [&](std::string_view name) -> result<std::size_t> {
        const auto key = to_lower(name);
        for (std::size_t t = 0; t < keys.size(); ++t)
            if (keys[t] == key) return t;
        storage::event_log* log = nullptr;
        if (key == builtin_events) {
            log = &r_.engine_.events();
        } else if (auto it = hosted.find(key); it != hosted.end()) {
            log = it->second;
        }
        auto health = health_of(key);
        if (!log || !health)
            return error(errc::server_error, "Endpoint '" + std::string(name) + "' is not ready.");
        p->targets.push_back({log, delivery::enrichments_for(*c, name), std::move(health)});
        keys.push_back(key);
        return p->targets.size() - 1;
    };
    p->route_target.assign(c->routes.size(), none);
    p->roots = delivery::condition_roots(*c);
    for (std::size_t i = 0; i < c->routes.size(); ++i) {
        const auto& route = c->routes[i];
        if (!route.enabled || route.from != source::device_messages) continue;
        auto t = target_of(route.endpoint);
        if (!t) return t.error();
        p->route_target[i] = *t;
    }
    if (c->fallback.enabled) {
        auto t = target_of(c->fallback.endpoint);
        if (!t) return t.error();
        p->fallback_target = *t;
    }
    std::lock_guard lock(m_);
    plan_ = std::move(p);
    return {};
}

void router::appender::dispatch(int partition, std::vector<storage::event_record> messages,
                                std::function<void(result<void>)> done) {
    std::shared_ptr<const plan> p;
    {
        std::lock_guard lock(m_);
        p = plan_;
    }
    const auto now = iothub::now();
    std::vector<std::vector<storage::event_record>> out(p->targets.size());
    std::vector<char> chosen(p->targets.size());
    for (auto& m : messages) {
        storage::stored_event e{0, now, std::move(m)};
        message_view view(e, nullptr, &p->roots);
        const auto outcomes =
            delivery::outcomes(*p->config, source::device_messages, view, r_.undefined_);
        std::fill(chosen.begin(), chosen.end(), 0);
        bool matched = false;
        for (std::size_t i = 0; i < p->route_target.size(); ++i) {
            if (outcomes[i] != query::truth::true_) continue;
            matched = true;
            if (p->route_target[i] != none) chosen[p->route_target[i]] = 1;
        }
        // Azure's fallback: only a message no route matched.
        if (!matched && p->fallback_target != none && outcomes.back() == query::truth::true_)
            chosen[p->fallback_target] = 1;
        const auto make_view = [&]() -> message_view& { return view; };
        std::size_t last = chosen.size();
        for (std::size_t t = 0; t < chosen.size(); ++t)
            if (chosen[t]) last = t;
        for (std::size_t t = 0; t < chosen.size(); ++t) {
            if (!chosen[t]) continue;
            // The stamp stays shared, as the log keeps it. The one endpoint (or the last) takes
            // the message itself, unless an enrichment may still read it through the view.
            storage::event_record copy = t == last && p->targets[t].enrichments.empty()
                                             ? std::move(e.record)
                                             : storage::event_record(e.record);
            if (delivery::finish_copy(copy, now, p->targets[t].enrichments, make_view,
                                      r_.settings_.hub_name, r_.settings_.max_message_bytes,
                                      r_.too_large_))
                out[t].push_back(std::move(copy));
        }
    }
    // One completion for the device, once every endpoint's append is durable or one failed.
    struct joined {
        std::atomic<std::size_t> left{0};
        std::mutex m;
        std::optional<error> failure;
        std::function<void(result<void>)> done;
    };
    auto j = std::make_shared<joined>();
    j->done = std::move(done);
    std::size_t appends = 0;
    for (const auto& batch : out) appends += batch.empty() ? 0 : 1;
    if (appends == 0) return j->done({});  // no route took them, as Azure drops them
    j->left = appends;
    for (std::size_t t = 0; t < out.size(); ++t) {
        if (out[t].empty()) continue;
        const auto count = out[t].size();
        auto health = p->targets[t].health;
        health->attempted();
        p->targets[t].log->append(partition, std::move(out[t]),
                                  [j, health, count](result<std::vector<std::uint64_t>> r) {
                                      if (r) {
                                          health->succeeded(count);
                                      } else {
                                          health->failed(r.error().message());
                                          std::lock_guard lock(j->m);
                                          if (!j->failure) j->failure = r.error();
                                      }
                                      if (--j->left > 0) return;
                                      if (j->failure) return j->done(*j->failure);
                                      j->done({});
                                  });
    }
}

}  // namespace iothub::routing
