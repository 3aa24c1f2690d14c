#include "routing/router.hpp"

#include "common/encoding.hpp"
#include "hub_events/hub_events.hpp"

#include <boost/json.hpp>
#include <spdlog/spdlog.h>

#include <array>
#include <condition_variable>
#include <deque>
#include <future>
#include <set>
#include <thread>
#include <unordered_map>

namespace iothub::routing {
namespace json = boost::json;
namespace {

constexpr std::string_view config_key = "routing/config";
constexpr std::string_view ingest_log = "ingest";
constexpr auto twin_cache_ttl = std::chrono::seconds(5);
constexpr std::size_t twin_cache_size = 10000;
// How long an idle worker waits before it looks again (sinks flush what is due).
constexpr auto idle_interval = std::chrono::seconds(1);

std::string cursor_key(std::string_view endpoint, std::string_view log, int partition) {
    return "routing/cursor/" + to_lower(endpoint) + "/" + std::string(log) + "/" +
           std::to_string(partition);
}

// Which routing source a hub event belongs to, by the iothub-message-source it carries.
std::optional<source> source_of_hub_event(const storage::event_record& r) {
    const auto* v = storage::find_property(r.system_properties, "iothub-message-source");
    if (!v) return std::nullopt;
    if (*v == hub_events::twin_change_source) return source::twin_change_events;
    if (*v == hub_events::lifecycle_source) return source::device_lifecycle_events;
    if (*v == hub_events::connection_state_source) return source::device_connection_state_events;
    if (*v == hub_events::job_lifecycle_source) return source::device_job_lifecycle_events;
    return std::nullopt;
}

}  // namespace

std::string_view to_string(health_status s) {
    switch (s) {
        case health_status::healthy:
            return "healthy";
        case health_status::unhealthy:
            return "unhealthy";
        case health_status::degraded:
            return "degraded";
        case health_status::dead:
            return "dead";
        default:
            return "unknown";
    }
}

std::string router::hosted_log_name(std::string_view endpoint) {
    return "eh." + to_lower(endpoint);
}

// --- one endpoint's delivery ---------------------------------------------------------------------

// The hub's own logs (the built-in stream, hosted event hubs): the copies and the cursor commit
// together, so after a crash nothing is lost and nothing repeated. Cursors of batches that held
// nothing for the log are kept back and written when the worker is idle.
class log_sink final : public sink {
  public:
    log_sink(storage::event_log& log, storage::kv_store& kv) : log_(log), kv_(kv) {}

    result<void> deliver(int partition, std::vector<storage::event_record> events,
                         std::span<const std::uint64_t>, storage::kv_write cursor) override {
        if (events.empty()) {
            held_.hold(std::move(cursor));
            return {};
        }
        held_.forget(cursor.key);
        std::promise<result<storage::appended>> done;
        log_.append_with(partition, std::move(events), {std::move(cursor)},
                         [&done](result<storage::appended> r) { done.set_value(std::move(r)); });
        auto r = done.get_future().get();
        if (!r) return r.error();
        return {};
    }

    result<void> flush(sys_time, bool) override { return held_.write(kv_); }

  private:
    storage::event_log& log_;
    storage::kv_store& kv_;
    held_cursors held_;
};

// The outcome of every route for one message, computed by the first worker that reads it and
// shared by the others: the body is parsed and each condition evaluated once per message, not
// once per endpoint. Entry i is route i of the configuration (false when it is disabled or of
// another source); the last is the fallback's condition. Kept for the most recent messages only;
// a worker far behind the others computes its own.
class router::evaluations {
  public:
    using outcomes = std::shared_ptr<const std::vector<query::truth>>;

    // What is known of keys[i], into found[i] (left null when unknown), under one lock.
    void find(std::uint64_t generation, const std::vector<std::uint64_t>& keys,
              std::vector<outcomes>& found) {
        std::lock_guard lock(mutex_);
        for (std::size_t i = 0; i < keys.size(); ++i) {
            auto it = map_.find(keys[i]);
            if (it != map_.end() && it->second.first == generation) found[i] = it->second.second;
        }
    }
    void put(std::uint64_t generation, const std::vector<std::pair<std::uint64_t, outcomes>>& add) {
        std::lock_guard lock(mutex_);
        for (const auto& [key, o] : add) {
            auto [it, inserted] = map_.insert_or_assign(key, std::pair{generation, o});
            if (inserted) order_.push_back(key);
        }
        while (order_.size() > capacity) {
            map_.erase(order_.front());
            order_.pop_front();
        }
    }
    // Held while a worker looks up and works out the outcomes of a batch of one source
    // partition: the workers a commit wakes together would otherwise all evaluate the same new
    // messages; this way the first does, and the others find its outcomes.
    std::mutex& gate(int source, int partition) {
        return gates_[static_cast<std::size_t>(source * 32 + partition) % gates_.size()];
    }

    // Source log, partition and sequence number in one key.
    static std::uint64_t key(int source, int partition, std::uint64_t sequence) {
        return (static_cast<std::uint64_t>(source) << 62) |
               (static_cast<std::uint64_t>(partition) << 56) | (sequence & ((1ull << 56) - 1));
    }

  private:
    static constexpr std::size_t capacity = 1 << 16;
    std::array<std::mutex, 64> gates_;
    std::mutex mutex_;
    std::unordered_map<std::uint64_t, std::pair<std::uint64_t, outcomes>> map_;
    std::deque<std::uint64_t> order_;
};

// Batches read from the source logs, shared by the workers: every endpoint reads every message,
// and one read from storage serves them all. A worker gets the cached batch that holds its
// position (from that position on), or reads a new one; a few recent batches are kept per
// partition, so a worker far behind reads for itself.
class router::reads {
  public:
    using batch = std::shared_ptr<const std::vector<storage::stored_event>>;

    // The events from `from` on: a batch and the index of `from` in it (size() when empty).
    result<std::pair<batch, std::size_t>> read(storage::event_log& log, int source, int partition,
                                               std::uint64_t from, std::size_t max) {
        std::deque<batch>* recent = nullptr;
        {
            std::lock_guard lock(mutex_);
            recent = &recent_[{source, partition}];  // map nodes stay where they are
            for (const auto& b : *recent) {
                const auto first = b->front().sequence_number;
                if (from >= first && from <= b->back().sequence_number)
                    return std::pair{b, static_cast<std::size_t>(from - first)};
            }
        }
        auto fresh = log.read(partition, from, max);
        if (!fresh) return fresh.error();
        auto b = std::make_shared<const std::vector<storage::stored_event>>(std::move(*fresh));
        if (b->empty()) return std::pair{b, std::size_t{0}};
        std::lock_guard lock(mutex_);
        recent->push_back(b);
        if (recent->size() > kept) recent->pop_front();
        return std::pair{b, std::size_t{0}};
    }

  private:
    static constexpr std::size_t kept = 8;
    std::mutex mutex_;
    std::map<std::pair<int, int>, std::deque<batch>> recent_;
};

struct router::worker_spec {
    std::string display;       // cursors and health go by it
    std::string route_target;  // the endpoint name routes and enrichments use
    std::string definition;
    // What the worker delivers to, beyond its settings: a custom endpoint's type and name. A
    // changed definition with the same identity (a new key, a fixed address) resumes from the
    // cursors, so what waited for the fix is not skipped; a new identity starts afresh.
    std::string identity;
    std::function<result<std::unique_ptr<sink>>()> make_sink;
    std::function<bool(const storage::event_record&)> hub_events;
    std::function<bool(const storage::event_record&)> filter;
    bool keeps_cursors = false;  // never starts afresh (the built-in stream)
};

// --- one endpoint's delivery ---------------------------------------------------------------------

class router::worker {
  public:
    worker(router& r, worker_spec spec)
        : r_(r),
          display_(std::move(spec.display)),
          target_name_(std::move(spec.route_target)),
          definition_(std::move(spec.definition)),
          identity_(std::move(spec.identity)),
          make_sink_(std::move(spec.make_sink)),
          hub_events_(std::move(spec.hub_events)),
          filter_(std::move(spec.filter)),
          keeps_cursors_(spec.keeps_cursors) {
        health_.endpoint = display_;
        lookup_ = [this](std::string_view d, std::string_view m) { return cached_twin(d, m); };
    }
    ~worker() { stop(); }

    const std::string& definition() const { return definition_; }
    const std::string& identity() const { return identity_; }
    bool keeps_cursors() const { return keeps_cursors_; }

    result<void> start(bool fresh) {
        auto& engine = r_.engine_;
        sources_.push_back({r_.ingest_, std::string(ingest_log), true, {}});
        sources_.push_back({&engine.hub_events(), "hub", false, {}});
        std::vector<storage::kv_write> initial;
        for (auto& s : sources_) {
            for (int p = 0; p < s.log->partition_count(); ++p) {
                std::optional<std::uint64_t> at;
                if (!fresh) {
                    auto stored = engine.kv().get(cursor_key(display_, s.name, p));
                    if (!stored) return stored.error();
                    if (*stored) at = std::stoull((*stored)->value);
                }
                if (!at) {
                    at = s.log->info(p).next_sequence_number;
                    initial.push_back({storage::kv_write::op::put, cursor_key(display_, s.name, p),
                                       std::to_string(*at)});
                }
                s.next.push_back(*at);
            }
        }
        if (!initial.empty())
            for (auto& w : engine.kv().apply(initial))
                if (!w) return w.error();
        auto made = make_sink_ ? make_sink_()
                               : result<std::unique_ptr<sink>>(error(
                                     errc::bad_request, "Nothing delivers to this endpoint."));
        if (made)
            sink_ = std::move(*made);
        else
            undeliverable_ = made.error().message();
        // Logged before the thread starts: from then on the positions are the thread's.
        spdlog::debug("routing: endpoint '{}' starts at {}", display_, [&] {
            std::string at;
            for (auto& s : sources_)
                for (auto n : s.next) at += s.name + ":" + std::to_string(n) + " ";
            return at;
        }());
        thread_ = std::thread([this] { run(); });
        return {};
    }

    void stop() {
        {
            std::lock_guard lock(m_);
            stopping_ = true;
        }
        cv_.notify_all();
        if (thread_.joinable()) thread_.join();
    }

    void wake() {
        {
            std::lock_guard lock(m_);
            woken_ = true;
        }
        cv_.notify_all();
    }

    endpoint_health health() const {
        std::lock_guard lock(health_mutex_);
        return health_;
    }

  private:
    struct source_cursor {
        storage::event_log* log;
        std::string name;
        bool ingest;
        std::vector<std::uint64_t> next;  // what to read next, per partition
    };

    bool stopping() {
        std::lock_guard lock(m_);
        return stopping_;
    }

    void run() {
        auto backoff = r_.settings_.first_retry;
        while (!stopping()) {
            if (!sink_) {
                failed(undeliverable_);
                wait(std::chrono::hours(1));
                continue;
            }
            auto [config, generation] = r_.current();
            bool progressed = false;
            auto outcome = pass(*config, generation, progressed);
            if (outcome && !progressed) outcome = sink_->flush(iothub::now(), false);
            if (!outcome) {
                failed(outcome.error().message());
                wait(backoff);
                backoff = std::min(backoff * 2, r_.settings_.max_retry);
                continue;
            }
            backoff = r_.settings_.first_retry;
            if (progressed) {
                // Under a steady stream a pass finds a few messages each time: waking every
                // worker for each commit costs more than the work. Small passes wait a moment
                // for more (the latency this adds is bounded by `gather`).
                if (read_ < r_.settings_.read_batch / 4) pause(r_.settings_.gather);
                continue;
            }
            if (target_name_ == builtin_events && r_.direct_wanted_.load())
                r_.telemetry_.set_destination(r_.engine_.events());
            wait_for_more();
        }
        if (sink_)
            if (auto r = sink_->flush(iothub::now(), true); !r)
                spdlog::warn("routing: endpoint '{}' kept some positions unsaved: {}", display_,
                             r.error().message());
    }

    // One read per partition of every source; hands what it selects to the sink.
    result<void> pass(const routing_config& config, std::uint64_t generation, bool& progressed) {
        read_ = 0;
        learn(config, generation);
        for (std::size_t source = 0; source < sources_.size(); ++source) {
            auto& s = sources_[source];
            for (int p = 0; p < static_cast<int>(s.next.size()); ++p) {
                auto read = r_.reads_->read(*s.log, static_cast<int>(source), p, s.next[p],
                                            r_.settings_.read_batch);
                if (!read) return read.error();
                const auto& [events, first] = *read;
                if (first >= events->size()) continue;
                read_ += events->size() - first;
                // Every route's outcome for each message: known from another worker, or worked
                // out here and shared.
                const auto n = events->size() - first;
                keys_.resize(n);
                for (std::size_t i = 0; i < n; ++i)
                    keys_[i] = evaluations::key(static_cast<int>(source), p,
                                                (*events)[first + i].sequence_number);
                known_.assign(n, nullptr);
                {
                    std::lock_guard gate(r_.evaluations_->gate(static_cast<int>(source), p));
                    r_.evaluations_->find(generation, keys_, known_);
                    computed_.clear();
                    for (std::size_t i = 0; i < n; ++i) {
                        if (known_[i]) continue;
                        message_view view((*events)[first + i], &lookup_);
                        known_[i] = evaluate(config, s.ingest, (*events)[first + i], view);
                        computed_.emplace_back(keys_[i], known_[i]);
                    }
                    if (!computed_.empty()) r_.evaluations_->put(generation, computed_);
                }
                std::vector<storage::event_record> out;
                sequence_numbers_.clear();
                for (std::size_t i = 0; i < n; ++i) {
                    std::optional<message_view> view;  // made only to enrich
                    storage::event_record r;
                    if (select(*known_[i], s.ingest, (*events)[first + i], view, r)) {
                        out.push_back(std::move(r));
                        sequence_numbers_.push_back((*events)[first + i].sequence_number);
                    }
                }
                const auto next = events->back().sequence_number + 1;
                const auto count = out.size();
                if (count > 0) attempted();
                storage::kv_write cursor{storage::kv_write::op::put,
                                         cursor_key(display_, s.name, p), std::to_string(next)};
                if (auto r = sink_->deliver(p, std::move(out), sequence_numbers_, cursor); !r) {
                    if (!dead()) return r.error();
                    // A dead endpoint's messages are dropped, as Azure drops them, after one
                    // more try each; the worker goes on so the others' backlog does not grow.
                    spdlog::warn("routing: endpoint '{}' is dead; {} message(s) dropped: {}",
                                 display_, count, r.error().message());
                    dropped(count, r.error().message());
                    if (auto skip = sink_->deliver(p, {}, std::move(cursor)); !skip)
                        return skip.error();
                    s.next[p] = next;
                    progressed = true;
                    continue;
                }
                s.next[p] = next;
                progressed = true;
                if (count > 0) succeeded(count);
            }
        }
        return {};
    }

    // Every route's outcome for `e`: from the shared evaluations, or computed here (and shared).
    evaluations::outcomes evaluate(const routing_config& config, bool device_message,
                                   const storage::stored_event& e, message_view& view) {
        auto out = std::make_shared<std::vector<query::truth>>(config.routes.size() + 1,
                                                               query::truth::false_);
        const auto from =
            device_message ? std::optional(source::device_messages) : source_of_hub_event(e.record);
        for (std::size_t i = 0; i < config.routes.size(); ++i) {
            const auto& route = config.routes[i];
            if (!route.enabled || !from || route.from != *from) continue;
            (*out)[i] = view.evaluate(route.condition);
            if ((*out)[i] == query::truth::undefined) ++r_.undefined_;
        }
        if (device_message && config.fallback.enabled)
            out->back() = view.evaluate(config.fallback.condition);
        return out;
    }

    // Which routes, the fallback and the enrichments lead here, worked out once per
    // configuration rather than per message.
    void learn(const routing_config& config, std::uint64_t generation) {
        if (learned_ == generation) return;
        learned_ = generation;
        mine_.assign(config.routes.size(), false);
        for (std::size_t i = 0; i < config.routes.size(); ++i)
            mine_[i] = iequals(config.routes[i].endpoint, target_name_);
        fallback_here_ = config.fallback.enabled && iequals(config.fallback.endpoint, target_name_);
        enrichments_.clear();
        for (const auto& en : config.enrichments)
            for (const auto& name : en.endpoints)
                if (iequals(name, target_name_)) {
                    enrichments_.push_back(&en);
                    break;
                }
    }

    bool select(const std::vector<query::truth>& outcomes, bool device_message,
                const storage::stored_event& e, std::optional<message_view>& view,
                storage::event_record& out) {
        bool take = false;
        bool any_matched = false;
        for (std::size_t i = 0; i < mine_.size(); ++i) {
            if (outcomes[i] != query::truth::true_) continue;
            any_matched = true;
            take = take || mine_[i];
        }
        if (device_message) {
            if (!take && !any_matched && fallback_here_)
                take = outcomes.back() == query::truth::true_;
        } else if (!take) {
            take = hub_events_ && source_of_hub_event(e.record) && hub_events_(e.record);
        }
        if (!take) return false;
        out = e.record;
        out.stamp.reset();  // read() folded it into the system properties
        // When the hub took it, as endpoints show it; the copy is enqueued again later.
        if (!storage::find_property(out.system_properties, "iothub-enqueuedtime"))
            out.system_properties.emplace_back("iothub-enqueuedtime",
                                               format_iso8601(e.enqueued_time));
        for (const auto* en_ptr : enrichments_) {
            const auto& en = *en_ptr;
            if (!view) view.emplace(e, &lookup_);
            auto value = view->enrichment(en.value, r_.settings_.hub_name);
            bool replaced = false;
            for (auto& [k, v] : out.application_properties)
                if (k == en.key) {
                    v = value;
                    replaced = true;
                }
            if (!replaced) out.application_properties.emplace_back(en.key, std::move(value));
        }
        if (storage::event_size(out) > r_.settings_.max_message_bytes) {
            ++r_.too_large_;
            return false;
        }
        return !filter_ || filter_(out);
    }

    std::optional<json::object> cached_twin(std::string_view device, std::string_view module) {
        if (!r_.twins_) return std::nullopt;
        std::string key(device);
        if (!module.empty()) key += "/" + std::string(module);
        const auto now = std::chrono::steady_clock::now();
        if (auto it = twins_.find(key); it != twins_.end() && it->second.first > now)
            return it->second.second;
        if (twins_.size() >= twin_cache_size) twins_.clear();
        auto twin = r_.twins_(device, module);
        twins_[key] = {now + twin_cache_ttl, twin};
        return twin;
    }

    // Until a source partition grows past the cursor, the configuration changes, or a second
    // passes (sinks flush what is due).
    void wait_for_more() {
        std::vector<std::pair<storage::event_log*, std::uint64_t>> watches;
        for (auto& s : sources_)
            for (std::size_t p = 0; p < s.next.size(); ++p)
                watches.emplace_back(
                    s.log, s.log->watch(static_cast<int>(p), s.next[p], [this] { wake(); }));
        wait(idle_interval);
        for (auto& [log, token] : watches) log->unwatch(token);
    }

    // Sleeps, woken only by stop.
    void pause(std::chrono::microseconds d) {
        std::unique_lock lock(m_);
        cv_.wait_for(lock, d, [this] { return stopping_; });
    }

    void wait(std::chrono::milliseconds max) {
        std::unique_lock lock(m_);
        cv_.wait_for(lock, max, [this] { return stopping_ || woken_; });
        woken_ = false;
    }

    void attempted() {
        std::lock_guard lock(health_mutex_);
        health_.last_attempt_time = iothub::now();
    }
    void succeeded(std::size_t count) {
        std::lock_guard lock(health_mutex_);
        if (health_.status == health_status::unhealthy || health_.status == health_status::dead)
            spdlog::info("routing: endpoint '{}' is healthy again", display_);
        health_.status = health_status::healthy;
        health_.last_success_time = iothub::now();
        health_.delivered += count;
    }
    // Unhealthy for longer than the settings allow: Azure's `dead`.
    bool dead() {
        std::lock_guard lock(health_mutex_);
        return health_.status == health_status::dead;
    }
    void dropped(std::size_t count, const std::string& why) {
        std::lock_guard lock(health_mutex_);
        health_.dropped += count;
        health_.last_error = why;
        health_.last_error_time = health_.last_attempt_time = iothub::now();
    }
    void failed(const std::string& why) {
        std::lock_guard lock(health_mutex_);
        const auto now = iothub::now();
        if (health_.status != health_status::unhealthy && health_.status != health_status::dead)
            unhealthy_since_ = now;
        if (health_.status != health_status::dead &&
            now - unhealthy_since_ >= r_.settings_.dead_after) {
            spdlog::error("routing: endpoint '{}' is dead after failing since {}: {}", display_,
                          format_iso8601(unhealthy_since_), why);
            health_.status = health_status::dead;
        }
        if (health_.status == health_status::dead) {
            health_.last_error = why;
            health_.last_error_time = health_.last_attempt_time = now;
            return;
        }
        if (health_.status != health_status::unhealthy || health_.last_error != why)
            spdlog::warn("routing: endpoint '{}' is unhealthy: {}", display_, why);
        health_.status = health_status::unhealthy;
        health_.last_error = why;
        health_.last_error_time = iothub::now();
        health_.last_attempt_time = health_.last_error_time;
    }

    router& r_;
    std::string display_;
    std::string target_name_;
    std::string definition_;
    std::string identity_;
    std::function<result<std::unique_ptr<sink>>()> make_sink_;
    std::function<bool(const storage::event_record&)> hub_events_;
    std::function<bool(const storage::event_record&)> filter_;
    bool keeps_cursors_;
    std::unique_ptr<sink> sink_;
    std::string undeliverable_;
    twin_lookup lookup_;
    std::unordered_map<
        std::string, std::pair<std::chrono::steady_clock::time_point, std::optional<json::object>>>
        twins_;
    std::vector<source_cursor> sources_;
    std::size_t read_ = 0;  // messages the last pass read
    // Scratch of pass(), kept to reuse their memory.
    std::vector<std::uint64_t> keys_;
    std::vector<evaluations::outcomes> known_;
    std::vector<std::pair<std::uint64_t, evaluations::outcomes>> computed_;
    std::vector<std::uint64_t> sequence_numbers_;  // of what a pass hands the sink
    // learn()'s results for the configuration of generation learned_ (generations start at 1).
    std::uint64_t learned_ = 0;
    std::vector<bool> mine_;
    bool fallback_here_ = false;
    std::vector<const enrichment*> enrichments_;

    std::thread thread_;
    std::mutex m_;
    std::condition_variable cv_;
    bool stopping_ = false;
    bool woken_ = false;
    mutable std::mutex health_mutex_;
    endpoint_health health_;
    sys_time unhealthy_since_{};
};

// --- the router ----------------------------------------------------------------------------------

router::router(storage::engine& engine, telemetry::telemetry_service& telemetry, twin_lookup twins,
               router_settings settings)
    : engine_(engine),
      telemetry_(telemetry),
      twins_(std::move(twins)),
      settings_(std::move(settings)),
      config_(std::make_shared<routing_config>(default_config())),
      evaluations_(std::make_unique<evaluations>()),
      reads_(std::make_unique<reads>()) {}

router::~router() {
    stop();
}

result<void> router::start(std::optional<routing_config> initial) {
    auto ingest = engine_.log(ingest_log);
    if (!ingest) return ingest.error();
    ingest_ = *ingest;
    std::shared_ptr<const routing_config> c;
    if (initial) {
        auto text = json::serialize(to_json(*initial));
        if (auto r = engine_.kv().put(config_key, text); !r) return r.error();
        c = std::make_shared<routing_config>(std::move(*initial));
    } else {
        auto stored = engine_.kv().get(config_key);
        if (!stored) return stored.error();
        if (*stored) {
            auto parsed = parse(std::string_view((*stored)->value), settings_.limits);
            if (!parsed)
                return error(parsed.error().code(),
                             "The stored routing configuration is not valid under this hub's "
                             "limits: " +
                                 parsed.error().message());
            c = std::make_shared<routing_config>(std::move(*parsed));
        } else {
            c = std::make_shared<routing_config>(default_config());
        }
    }
    return apply(std::move(c), false);
}

void router::stop() {
    std::lock_guard one(replace_mutex_);
    stopped_ = true;
    std::map<std::string, std::unique_ptr<worker>> doomed;
    {
        std::lock_guard lock(mutex_);
        doomed.swap(workers_);
    }
    doomed.clear();  // joins each
}

std::pair<std::shared_ptr<const routing_config>, std::uint64_t> router::current() const {
    std::lock_guard lock(mutex_);
    return {config_, generation_};
}

std::shared_ptr<const routing_config> router::config() const {
    std::lock_guard lock(mutex_);
    return config_;
}

result<void> router::replace(routing_config c) {
    std::lock_guard one(replace_mutex_);
    if (!ingest_ || stopped_) return error(errc::server_error, "Routing is not running.");
    auto text = json::serialize(to_json(c));
    if (auto r = engine_.kv().put(config_key, text); !r) return r.error();
    return apply(std::make_shared<routing_config>(std::move(c)), true);
}

void router::set_delivering(bool on) {
    std::lock_guard one(replace_mutex_);
    if (delivering_ == on) return;
    delivering_ = on;
    if (stopped_ || !ingest_) return;
    if (auto r = apply(config(), false); !r)
        spdlog::warn("routing: cannot {} delivery: {}", on ? "resume" : "pause",
                     r.error().message());
}

result<void> router::reload() {
    std::lock_guard one(replace_mutex_);
    if (!ingest_ || stopped_) return {};
    auto stored = engine_.kv().get(config_key);
    if (!stored) return stored.error();
    if (!*stored) return apply(std::make_shared<routing_config>(default_config()), true);
    auto parsed = parse(std::string_view((*stored)->value), settings_.limits);
    if (!parsed) return parsed.error();
    return apply(std::make_shared<routing_config>(std::move(*parsed)), true);
}

result<void> router::apply(std::shared_ptr<const routing_config> c, bool fresh_endpoints) {
    std::map<std::string, storage::event_log*> hosted;
    for (const auto& e : c->endpoints) {
        if (!e.hosted()) continue;
        // Copies of the synced ingest log, committed with their cursor: no fsync of their own.
        auto log = engine_.log(hosted_log_name(e.name), false);
        if (!log) return log.error();
        hosted[to_lower(e.name)] = *log;
    }
    std::vector<tap> taps;
    {
        std::lock_guard lock(mutex_);
        config_ = c;
        ++generation_;
        hosted_ = hosted;
        taps = taps_;
    }
    std::map<std::string, worker_spec> wanted;
    auto& kv = engine_.kv();
    // Each endpoint that routes lead to, with a definition: a changed definition is a new
    // endpoint, which starts afresh.
    auto add = [&](const std::string& name) {
        const auto key = to_lower(name);
        if (wanted.contains(key) || key == builtin_eventgrid) return;  // subscriptions are taps
        worker_spec w;
        if (key == builtin_events) {
            w.display = w.route_target = std::string(builtin_events);
            w.definition = w.identity = "events";
            w.keeps_cursors = true;
            w.make_sink = [this, &kv]() -> result<std::unique_ptr<sink>> {
                return std::unique_ptr<sink>(std::make_unique<log_sink>(engine_.events(), kv));
            };
        } else if (const auto* e = c->find_endpoint(name)) {
            w.display = w.route_target = e->name;
            w.definition = std::string(to_string(e->kind)) + json::serialize(e->raw);
            w.identity = std::string(to_string(e->kind)) + "/" + key;
            if (e->hosted()) {
                w.make_sink = [log = hosted[key], &kv]() -> result<std::unique_ptr<sink>> {
                    return std::unique_ptr<sink>(std::make_unique<log_sink>(*log, kv));
                };
            } else {
                w.make_sink = [this, endpoint = *e]() -> result<std::unique_ptr<sink>> {
                    if (!settings_.sinks)
                        return error(errc::bad_request,
                                     "Delivery to " + std::string(to_string(endpoint.kind)) +
                                         " endpoints is not built into this hub.");
                    return settings_.sinks(endpoint);
                };
            }
        } else {
            return;
        }
        wanted[key] = std::move(w);
    };
    add(std::string(builtin_events));
    for (const auto& r : c->routes)
        if (r.enabled) add(r.endpoint);
    if (c->fallback.enabled) add(c->fallback.endpoint);
    for (const auto& t : taps) {
        worker_spec w;
        w.display = t.route_target + "/" + t.name;
        w.route_target = t.route_target;
        w.definition = t.definition;
        w.identity = w.display + "/" + t.definition;  // a changed subscription starts afresh
        w.make_sink = t.make_sink;
        w.hub_events = t.hub_events;
        w.filter = t.filter;
        wanted[to_lower(w.display)] = std::move(w);
    }
    direct_wanted_ = !c->routes_source(source::device_messages);
    if (!direct_wanted_) telemetry_.set_destination(*ingest_);
    if (!delivering_) wanted.clear();
    return reconcile(std::move(wanted), fresh_endpoints);
}

result<void> router::reconcile(std::map<std::string, worker_spec> wanted, bool fresh) {
    std::vector<std::unique_ptr<worker>> retired;
    std::vector<std::pair<worker*, bool>> started;
    std::set<std::string> resumed;  // redefined, same identity: they keep their cursors
    {
        std::lock_guard lock(mutex_);
        for (auto it = workers_.begin(); it != workers_.end();) {
            auto w = wanted.find(it->first);
            if (w == wanted.end() || w->second.definition != it->second->definition()) {
                if (w != wanted.end() && w->second.identity == it->second->identity())
                    resumed.insert(it->first);
                retired.push_back(std::move(it->second));
                it = workers_.erase(it);
            } else {
                ++it;
            }
        }
        for (auto& [key, spec] : wanted) {
            if (workers_.contains(key)) continue;
            auto w = std::make_unique<worker>(*this, std::move(spec));
            // The built-in stream keeps its cursors through changes: what devices sent before
            // still reaches it.
            started.emplace_back(w.get(), fresh && !w->keeps_cursors() && !resumed.contains(key));
            workers_[key] = std::move(w);
        }
    }
    retired.clear();  // joins them
    for (auto [w, afresh] : started)
        if (auto r = w->start(afresh); !r) return r.error();
    wake_all();
    return {};
}

result<void> router::set_taps(std::vector<tap> taps) {
    std::lock_guard one(replace_mutex_);
    {
        std::lock_guard lock(mutex_);
        taps_ = std::move(taps);
    }
    if (!ingest_ || stopped_) return {};  // start() puts them in force; a stopped router stays so
    return apply(config(), true);
}

void router::wake_all() {
    std::lock_guard lock(mutex_);
    for (auto& [k, w] : workers_) w->wake();
}

storage::event_log* router::hosted_event_hub(std::string_view name) const {
    std::lock_guard lock(mutex_);
    auto it = hosted_.find(to_lower(name));
    return it == hosted_.end() ? nullptr : it->second;
}

std::vector<endpoint_health> router::health() const {
    std::vector<endpoint_health> out;
    std::lock_guard lock(mutex_);
    for (const auto& [k, w] : workers_) out.push_back(w->health());
    // Endpoints no route leads to have never been tried.
    for (const auto& e : config_->endpoints)
        if (!workers_.contains(to_lower(e.name))) out.push_back({e.name});
    return out;
}

router_counters router::counters() const {
    return {undefined_.load(), too_large_.load()};
}

}  // namespace iothub::routing
