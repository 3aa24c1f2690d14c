// Routing at run time: the configuration in force (stored in the kv store, replaced as a whole),
// and one delivery worker per endpoint that routes lead to.
//
// Device messages go straight to the telemetry stream while no route decides where they go (no
// enabled DeviceMessages route, the fallback on to `events`, no enrichment for `events`): routing
// then costs nothing. Otherwise they are appended to routing's ingest log, durably, before the
// device hears they were accepted, and the built-in endpoint receives copies like any other
// endpoint. Hub events are always in their own log.
//
// Each endpoint's worker reads the source logs from its own durable cursors (one per log and
// partition), evaluates the routes that lead to it (for the fallback's endpoint: every
// DeviceMessages route), stamps the enrichments listed for it, and delivers; a slow or failing
// endpoint holds back only itself. Log endpoints (`events`, hosted event hubs) commit the copies
// and the cursor in one atomic write, so a crash neither loses nor repeats a message; other
// endpoints deliver, then move the cursor (at least once). What a worker cannot deliver it retries
// with exponential backoff, nothing being skipped, and its health says so. A new endpoint starts
// with the messages that arrive after the configuration that added it; an endpoint redefined
// under the same name and type (a new key, a corrected address) goes on from where it was, so
// what waited for the fix is delivered.
//
// Thread safety: every public method may be called from any thread; replace() and start() block.
#pragma once

#include "hub_events/hub_events.hpp"
#include "routing/config.hpp"
#include "routing/evaluation.hpp"
#include "routing/sink.hpp"
#include "storage/engine.hpp"
#include "telemetry/telemetry.hpp"

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace iothub::routing {

enum class health_status : std::uint8_t { unknown, healthy, unhealthy, degraded, dead };
std::string_view to_string(health_status s);

struct endpoint_health {
    std::string endpoint;
    health_status status = health_status::unknown;
    std::string last_error;
    std::optional<sys_time> last_error_time;
    std::optional<sys_time> last_success_time;
    std::optional<sys_time> last_attempt_time;
    std::uint64_t delivered = 0;  // messages
    std::uint64_t dropped = 0;    // messages a dead endpoint did not take
};

// Makes the sink for an endpoint the hub does not keep in its own logs (webhooks, storage
// containers, Kafka, external Event Hubs). errc::bad_request for a type it cannot deliver to.
using sink_factory = std::function<result<std::unique_ptr<sink>>(const endpoint& e)>;

// A consumer of routed messages beside the endpoints, with its own cursors and health (an Event
// Grid subscription): it takes what routes to `route_target` select, plus the hub events
// `hub_events` accepts without a route, and `filter` has the last word on each.
struct tap {
    std::string name;        // unique among taps; health and cursors go by "<target>/<name>"
    std::string definition;  // a changed definition restarts the tap afresh
    std::string route_target;
    std::function<bool(const storage::event_record&)> hub_events;
    std::function<bool(const storage::event_record&)> filter;
    std::function<result<std::unique_ptr<sink>>()> make_sink;
};

struct router_settings {
    routing::limits limits;
    sink_factory sinks;
    std::string hub_name;  // for $iothubname
    std::size_t read_batch = 256;
    // After a pass that found little, a worker waits this long for more before the next one.
    std::chrono::microseconds gather{2000};
    std::size_t max_message_bytes = 256 * 1024;  // after enrichment; larger ones are dropped
    std::chrono::milliseconds first_retry{100};
    std::chrono::milliseconds max_retry{30000};
    // An endpoint that keeps failing this long is `dead`: each batch gets one more try, then is
    // dropped (Azure declares an endpoint dead after about an hour).
    std::chrono::seconds dead_after{3600};
    // Decide device messages' routes as each message arrives when every route they can take
    // leads to a log the hub keeps (the built-in stream, hosted event hubs) and nothing reads the
    // twin: a message is then written once, to its endpoints, instead of to the ingest log and
    // again by each endpoint's worker. Off in cluster mode, where one node's workers deliver
    // what every node ingests.
    bool route_on_append = true;
    // Told which hub events routes and taps read, on every change, so that nothing else is
    // raised.
    hub_events::interest* hub_event_interest = nullptr;
};

// How device messages reach the endpoints.
enum class device_path {
    direct,     // no route reads them: straight to the built-in stream
    ingest,     // through the ingest log, read by each endpoint's worker
    on_append,  // their routes decided as they arrive, each written once to its endpoints
};

struct router_counters {
    std::uint64_t undefined_evaluations = 0;  // a condition was neither true nor false
    std::uint64_t dropped_too_large = 0;      // too large once enriched
};

class router {
  public:
    router(storage::engine& engine, telemetry::telemetry_service& telemetry, twin_lookup twins,
           router_settings settings);
    ~router();
    router(const router&) = delete;
    router& operator=(const router&) = delete;

    // Puts the stored configuration in force (the default when none is stored), or `initial`
    // when given (the configuration file's), which is then stored in place of the old one, and
    // starts delivering.
    result<void> start(std::optional<routing_config> initial = std::nullopt);
    // Stops every worker; what they had not delivered waits in the logs for the next start.
    void stop();

    std::shared_ptr<const routing_config> config() const;
    // Stores `c` and puts it in force; the routing in force stays when it cannot be stored.
    result<void> replace(routing_config c);

    // Whether this process's workers deliver. In cluster mode only the node holding the routing
    // duty does; the others still follow the configuration, which decides where device messages
    // go. Workers resume from their stored cursors.
    void set_delivering(bool on);
    // Puts the stored configuration in force again: another cluster node changed it. Endpoints
    // it adds start with what arrives from now on, as with replace().
    result<void> reload();

    // Replaces the taps; new ones start with what arrives from now on.
    result<void> set_taps(std::vector<tap> taps);

    // The log behind a hosted event hub endpoint, by its name (case-insensitive); null when no
    // such endpoint is configured.
    storage::event_log* hosted_event_hub(std::string_view name) const;

    std::vector<endpoint_health> health() const;
    router_counters counters() const;
    // The way in force now. Leaving the ingest log waits until every worker that delivers device
    // messages has read it to its end, so a device's messages keep their order.
    device_path path() const;

    // The name of the log a hosted event hub endpoint keeps its events in.
    static std::string hosted_log_name(std::string_view endpoint);

  private:
    class worker;
    friend class worker;
    class appender;
    friend class appender;
    struct health_cell;
    struct shared_batch;
    class reads;
    // The configuration in force and its generation (changes with every apply).
    std::pair<std::shared_ptr<const routing_config>, std::uint64_t> current() const;
    struct worker_spec;
    result<void> apply(std::shared_ptr<const routing_config> c, bool fresh_endpoints);
    result<void> reconcile(std::map<std::string, worker_spec> wanted, bool fresh);
    void wake_all();
    // A worker read every source to its end under configuration `generation`: the ingest log
    // may be left, when the configuration asks it and the workers that must have are through.
    void drained(std::uint64_t generation);
    // Takes the path the configuration asks when it bypasses the ingest log and every worker
    // that must has drained it (for routes decided on append, once their plan is made). Under
    // mutex_.
    void leave_ingest_if_drained();
    // Points telemetry where `p` sends device messages. Under mutex_.
    void take_path(device_path p);

    storage::engine& engine_;
    telemetry::telemetry_service& telemetry_;
    twin_lookup twins_;
    router_settings settings_;
    storage::event_log* ingest_ = nullptr;

    mutable std::mutex mutex_;  // config_, generation_, the paths, drain_, workers_, hosted_
    std::shared_ptr<const routing_config> config_;
    std::uint64_t generation_ = 0;
    // generation_, readable without the lock: a worker checks after each read that the
    // configuration it evaluates under is still the one in force.
    std::atomic<std::uint64_t> generation_now_{0};
    device_path path_ = device_path::direct;
    device_path wanted_path_ = device_path::direct;  // what the configuration in force asks
    std::vector<std::string> drain_;  // the workers that must have read the ingest log to its end
    std::unique_ptr<appender> appender_;
    std::uint64_t prepared_ = 0;  // the generation the appender's plan was made for
    std::unique_ptr<reads> reads_;
    std::map<std::string, std::unique_ptr<worker>> workers_;  // by lower-case endpoint name
    std::vector<tap> taps_;
    std::map<std::string, storage::event_log*> hosted_;  // by lower-case endpoint name
    std::mutex replace_mutex_;                           // one replace at a time
    bool stopped_ = false;                               // under replace_mutex_
    bool delivering_ = true;                             // under replace_mutex_

    std::atomic<std::uint64_t> undefined_{0}, too_large_{0};
};

}  // namespace iothub::routing
