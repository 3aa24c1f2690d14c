#include "routing/router.hpp"

#include "common/encoding.hpp"
#include "common/thread_role.hpp"
#include "hub_events/hub_events.hpp"
#include "routing/on_append.hpp"

#include <boost/json.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
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

// Events read from one source partition, shared by the workers, with every route's outcome for
// each of them: computed by the first worker that looks (under the batch's lock, so the workers a
// commit wakes together do not all evaluate the same messages) and read by the others, so the
// body is parsed and each condition evaluated once per message, not once per endpoint. Row i of
// the outcomes is events[i]; entry r of a row is route r of the configuration (false when it is
// disabled or of another source), the last the fallback's condition.
struct router::shared_batch {
    using outcome_table = std::vector<std::vector<query::truth>>;

    std::vector<storage::stored_event> events;

    // The outcomes under configuration `generation`, made by `compute` when not known yet.
    template <class Compute>
    std::shared_ptr<const outcome_table> outcomes(std::uint64_t generation, Compute compute) const {
        std::lock_guard lock(mutex_);
        if (!table_ || generation_ != generation) {
            table_ = std::make_shared<const outcome_table>(compute(events));
            generation_ = generation;
        }
        return table_;
    }

  private:
    mutable std::mutex mutex_;
    mutable std::uint64_t generation_ = 0;
    mutable std::shared_ptr<const outcome_table> table_;
};

// Batches read from the source logs, shared by the workers: every endpoint reads every message,
// and one read from storage serves them all. A worker gets the cached batch that holds its
// position (from that position on), or reads a new one. Recent batches are kept per partition up
// to a byte budget: under load the workers spread out (the ones with nothing to deliver run
// ahead of the ones that write), and a budget of a few batches made each of ten workers read and
// decode most messages itself. A worker further behind than the budget reads for itself.
class router::reads {
  public:
    using batch = std::shared_ptr<const shared_batch>;

    // The events from `from` on: a batch and the index of `from` in it (size() when empty).
    result<std::pair<batch, std::size_t>> read(storage::event_log& log, int source, int partition,
                                               std::uint64_t from, std::size_t max) {
        kept* recent = nullptr;
        const auto end = log.info(partition).next_sequence_number;
        {
            std::lock_guard lock(mutex_);
            recent = &recent_[{source, partition}];  // map nodes stay where they are
            // Newest first: the workers are mostly near the end of the log. A batch read when
            // little was there (a slow stream makes batches of a message or two) serves only a
            // worker it brings to the end: one further behind reads a whole batch instead of
            // walking tiny ones, a pass each.
            for (auto it = recent->batches.rbegin(); it != recent->batches.rend(); ++it) {
                const auto& b = it->first;
                const auto first = b->events.front().sequence_number;
                const auto last = b->events.back().sequence_number;
                if (from < first || from > last) continue;
                if (last + 1 >= end || last + 1 - from >= max / 4)
                    return std::pair{b, static_cast<std::size_t>(from - first)};
                break;
            }
        }
        // Each pass of every worker looks at every partition of every source, and most hold
        // nothing new (hub events, above all): the log's end, kept in memory, answers that
        // without a storage read. An append not yet published here is read once it is: its
        // publication is what wakes the workers.
        if (end <= from) return std::pair{nothing_, std::size_t{0}};
        auto fresh = log.read(partition, from, max);
        if (!fresh) return fresh.error();
        auto made = std::make_shared<shared_batch>();
        made->events = std::move(*fresh);
        batch b = std::move(made);
        if (b->events.empty()) return std::pair{b, std::size_t{0}};
        std::size_t bytes = 0;
        for (const auto& e : b->events) bytes += storage::event_size(e.record) + sizeof e;
        std::vector<batch> dropped;  // freed after the lock: a batch is thousands of strings
        {
            std::lock_guard lock(mutex_);
            auto& held = recent->batches;
            held.emplace_back(b, bytes);
            recent->bytes += bytes;
            while ((held.size() > min_kept && recent->bytes > kept_bytes) ||
                   held.size() > max_kept) {
                recent->bytes -= held.front().second;
                dropped.push_back(std::move(held.front().first));
                held.pop_front();
            }
        }
        return std::pair{b, std::size_t{0}};
    }

  private:
    // Per source partition: a byte budget, within a count that keeps the search short when a slow
    // stream makes batches of a message or two.
    static constexpr std::size_t min_kept = 8, max_kept = 64;
    static constexpr std::size_t kept_bytes = 2 * 1024 * 1024;
    struct kept {
        std::deque<std::pair<batch, std::size_t>> batches;  // oldest first, with their bytes
        std::size_t bytes = 0;                              // theirs together
    };
    const batch nothing_ = std::make_shared<const shared_batch>();
    std::mutex mutex_;
    std::map<std::pair<int, int>, kept> recent_;
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
          keeps_cursors_(spec.keeps_cursors),
          health_(std::make_shared<health_cell>(display_, r.settings_.dead_after)) {
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
        thread_ = std::thread([this] {
            name_this_thread("route:" + display_);
            run();
        });
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

    endpoint_health health() const { return health_->get(); }
    const std::shared_ptr<health_cell>& health_of_endpoint() const { return health_; }
    // The configuration generation under which the last pass found nothing new in any source.
    std::uint64_t drained_under() const { return drained_under_.load(); }

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
            bool progressed = false, stale = false;
            auto outcome = pass(*config, generation, progressed, stale);
            if (stale) continue;
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
            drained_under_.store(generation);
            r_.drained(generation);
            wait_for_more();
        }
        if (sink_)
            if (auto r = sink_->flush(iothub::now(), true); !r)
                spdlog::warn("routing: endpoint '{}' kept some positions unsaved: {}", display_,
                             r.error().message());
    }

    // One read per partition of every source; hands what it selects to the sink. `stale` when
    // another configuration came into force meanwhile: what was read may have been sent under
    // it (a route that starts now must see it), so the pass ends without delivering it.
    result<void> pass(const routing_config& config, std::uint64_t generation, bool& progressed,
                      bool& stale) {
        read_ = 0;
        learn(config, generation);
        for (std::size_t source = 0; source < sources_.size(); ++source) {
            auto& s = sources_[source];
            for (int p = 0; p < static_cast<int>(s.next.size()); ++p) {
                auto read = r_.reads_->read(*s.log, static_cast<int>(source), p, s.next[p],
                                            r_.settings_.read_batch);
                if (!read) return read.error();
                // The check follows the read: a configuration put in force before a message was
                // appended is in force before the message can be read.
                if (r_.generation_now_.load(std::memory_order_acquire) != generation) {
                    stale = true;
                    return {};
                }
                const auto& [batch, first] = *read;
                const auto& events = batch->events;
                if (first >= events.size()) continue;
                const auto n = events.size() - first;
                read_ += n;
                // Every route's outcome for each message: known from another worker, or worked
                // out here for the whole batch and shared.
                const auto table =
                    batch->outcomes(generation, [&](const std::vector<storage::stored_event>& all) {
                        shared_batch::outcome_table t;
                        t.reserve(all.size());
                        for (const auto& e : all) {
                            message_view view(e, &lookup_, &roots_);
                            t.push_back(evaluate(config, s.ingest, e, view));
                        }
                        return t;
                    });
                std::vector<storage::event_record> out;
                sequence_numbers_.clear();
                for (std::size_t i = first; i < events.size(); ++i) {
                    std::optional<message_view> view;  // made only to enrich
                    storage::event_record r;
                    if (select((*table)[i], s.ingest, events[i], view, r)) {
                        out.push_back(std::move(r));
                        sequence_numbers_.push_back(events[i].sequence_number);
                    }
                }
                const auto next = events.back().sequence_number + 1;
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

    // Every route's outcome for `e`, and the fallback's last.
    std::vector<query::truth> evaluate(const routing_config& config, bool device_message,
                                       const storage::stored_event& e, message_view& view) {
        const auto from =
            device_message ? std::optional(source::device_messages) : source_of_hub_event(e.record);
        return delivery::outcomes(config, from, view, r_.undefined_);
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
        roots_ = delivery::condition_roots(config);
        enrichments_ = delivery::enrichments_for(config, target_name_);
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
        const auto make_view = [&]() -> message_view& {
            static const std::vector<std::string> no_members;  // enrichments read only the twin
            if (!view) view.emplace(e, &lookup_, &no_members);
            return *view;
        };
        if (!delivery::finish_copy(out, e.enqueued_time, enrichments_, make_view,
                                   r_.settings_.hub_name, r_.settings_.max_message_bytes,
                                   r_.too_large_))
            return false;
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

    void attempted() { health_->attempted(); }
    void succeeded(std::size_t count) { health_->succeeded(count); }
    bool dead() { return health_->dead(); }
    void dropped(std::size_t count, const std::string& why) { health_->dropped(count, why); }
    void failed(const std::string& why) { health_->failed(why); }

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
    // Scratch of pass(), kept to reuse its memory.
    std::vector<std::uint64_t> sequence_numbers_;  // of what a pass hands the sink
    // learn()'s results for the configuration of generation learned_ (generations start at 1).
    std::uint64_t learned_ = 0;
    std::vector<bool> mine_;
    std::vector<std::string> roots_;  // what the conditions read, for the rows they are run on
    bool fallback_here_ = false;
    std::vector<const enrichment*> enrichments_;

    std::thread thread_;
    std::mutex m_;
    std::condition_variable cv_;
    bool stopping_ = false;
    bool woken_ = false;
    std::shared_ptr<health_cell> health_;
    std::atomic<std::uint64_t> drained_under_{0};
};

// --- the router ----------------------------------------------------------------------------------

router::router(storage::engine& engine, telemetry::telemetry_service& telemetry, twin_lookup twins,
               router_settings settings)
    : engine_(engine),
      telemetry_(telemetry),
      twins_(std::move(twins)),
      settings_(std::move(settings)),
      config_(std::make_shared<routing_config>(default_config())),
      appender_(std::make_unique<appender>(*this)),
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
        // What arrives from now on waits in the ingest log for the next start.
        if (path_ == device_path::on_append) take_path(device_path::ingest);
        doomed.swap(workers_);
    }
    doomed.clear();  // joins each
}

std::pair<std::shared_ptr<const routing_config>, std::uint64_t> router::current() const {
    std::lock_guard lock(mutex_);
    return {config_, generation_};
}

device_path router::path() const {
    std::lock_guard lock(mutex_);
    return path_;
}

void router::take_path(device_path p) {
    switch (p) {
        case device_path::direct:
            telemetry_.set_destination(engine_.events());
            telemetry_.set_dispatcher(nullptr);
            break;
        case device_path::ingest:
            // The log first: a message between the two stores goes to one of the two ways, both
            // of which deliver it.
            telemetry_.set_destination(*ingest_);
            telemetry_.set_dispatcher(nullptr);
            break;
        case device_path::on_append:
            telemetry_.set_dispatcher(appender_.get());
            break;
    }
    if (path_ != p)
        spdlog::debug("routing: device messages {}",
                      p == device_path::direct   ? "go straight to the built-in stream"
                      : p == device_path::ingest ? "go through the ingest log"
                                                 : "are routed as they arrive");
    path_ = p;
}

void router::drained(std::uint64_t generation) {
    std::lock_guard lock(mutex_);
    if (generation == generation_) leave_ingest_if_drained();
}

void router::leave_ingest_if_drained() {
    if (path_ != device_path::ingest || wanted_path_ == device_path::ingest) return;
    if (wanted_path_ == device_path::on_append && prepared_ != generation_) return;
    // Every worker that delivers device messages must be through what the ingest log holds:
    // what arrives from now on bypasses it, and must not overtake what waits there.
    for (const auto& key : drain_) {
        auto it = workers_.find(key);
        if (it != workers_.end() && it->second->drained_under() != generation_) return;
    }
    take_path(wanted_path_);
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
        // Workers' copies of the synced ingest log, committed with their cursor, need no fsync of
        // their own; routes decided on append use append(), which syncs.
        auto log = engine_.log(hosted_log_name(e.name), false);
        if (!log) return log.error();
        hosted[to_lower(e.name)] = *log;
    }
    // Leaving the ingest log waits for the workers to drain it (drained()); between the two
    // ways that bypass it, the change is at once.
    const auto wanted_path = !c->routes_source(source::device_messages) ? device_path::direct
                             : settings_.route_on_append && delivering_ && appender::decidable(*c)
                                 ? device_path::on_append
                                 : device_path::ingest;
    std::vector<tap> taps;
    std::uint64_t generation = 0;
    {
        std::lock_guard lock(mutex_);
        config_ = c;
        generation = ++generation_;
        generation_now_.store(generation, std::memory_order_release);
        hosted_ = hosted;
        taps = taps_;
        // Under the lock drained() takes: a worker that drained the ingest log under the
        // previous configuration must not send devices' messages past the routes that start now.
        wanted_path_ = wanted_path;
        drain_ = appender::takers(*c);
        // Before any worker changes: a route that starts now must find what is raised from now.
        if (auto* interest = settings_.hub_event_interest) {
            const auto read = [&](source s) { return !taps.empty() || c->routes_source(s); };
            interest->set(hub_events::twin_change_source, read(source::twin_change_events));
            interest->set(hub_events::lifecycle_source, read(source::device_lifecycle_events));
            interest->set(hub_events::connection_state_source,
                          read(source::device_connection_state_events));
            interest->set(hub_events::job_lifecycle_source,
                          read(source::device_job_lifecycle_events));
        }
        if (wanted_path == device_path::ingest ||
            (wanted_path == device_path::direct && path_ == device_path::on_append))
            take_path(wanted_path);
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
    if (!delivering_) wanted.clear();
    if (auto r = reconcile(std::move(wanted), fresh_endpoints); !r) return r;
    if (wanted_path != device_path::on_append) return {};
    std::lock_guard lock(mutex_);
    if (generation != generation_) return {};  // a newer configuration decides
    auto health_of = [this](const std::string& key) -> std::shared_ptr<health_cell> {
        auto it = workers_.find(key);
        return it == workers_.end() ? nullptr : it->second->health_of_endpoint();
    };
    if (auto r = appender_->prepare(c, hosted_, health_of); !r) {
        spdlog::warn("routing: device messages go through the ingest log: {}", r.error().message());
        wanted_path_ = device_path::ingest;
        take_path(device_path::ingest);
        return {};
    }
    prepared_ = generation;
    if (path_ != device_path::ingest) {
        take_path(device_path::on_append);
        return {};
    }
    leave_ingest_if_drained();
    return {};
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
        // The same taps again (a subscription's validation was recorded) change nothing.
        const auto same = [](const tap& a, const tap& b) {
            return a.name == b.name && a.definition == b.definition &&
                   a.route_target == b.route_target;
        };
        if (std::equal(taps.begin(), taps.end(), taps_.begin(), taps_.end(), same)) return {};
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
