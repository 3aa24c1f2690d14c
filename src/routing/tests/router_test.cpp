// Routing at run time on the real engines: where device messages and hub events go, what the
// built-in stream still receives, enrichments, the twin in conditions, and delivery resuming
// after a restart without loss or repetition.
#include "routing/router.hpp"

#include "common/crypto.hpp"
#include "common/encoding.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

#include <algorithm>
#include <condition_variable>
#include <filesystem>
#include <future>

namespace iothub::routing {
namespace {
namespace json = boost::json;
using namespace std::chrono_literals;

storage::event_record message(std::string device, std::string body,
                              storage::property_list app = {}) {
    storage::event_record e;
    e.body = std::move(body);
    e.application_properties = std::move(app);
    e.system_properties = {{"iothub-connection-device-id", std::move(device)},
                           {"content-type", "application/json"},
                           {"content-encoding", "utf-8"},
                           {"iothub-message-source", "Telemetry"}};
    return e;
}

std::string property(const storage::property_list& l, std::string_view name) {
    for (const auto& [k, v] : l)
        if (k == name) return v;
    return "<absent>";
}

class Router : public ::testing::TestWithParam<std::string> {
  protected:
    void SetUp() override { open(); }
    void TearDown() override {
        router_.reset();
        telemetry_.reset();
        engine_.reset();
        std::filesystem::remove_all(dir_);
    }

    // A sink that refuses everything, for endpoint types the tests do not run.
    struct refusing_sink final : sink {
        result<void> deliver(int, std::vector<storage::event_record>,
                             std::span<const std::uint64_t>, storage::kv_write) override {
            return error(errc::server_error, "refused");
        }
        result<void> flush(sys_time, bool) override { return {}; }
    };
    std::chrono::seconds dead_after_{3600};
    // Instances whose name ends so decide device messages' routes on append where they can.
    bool on_append() const { return GetParam().ends_with("on_append"); }

    void open() {
        router_.reset();
        telemetry_.reset();
        engine_.reset();
        if (GetParam().starts_with("memory")) {
            engine_ = storage::open_memory();
        } else {
            auto e = storage::open_rocksdb({dir_, false, 2, {}});
            ASSERT_TRUE(e) << e.error().message();
            engine_ = std::move(*e);
        }
        telemetry_ = std::make_unique<telemetry::telemetry_service>(engine_->events());
        router_settings s;
        s.hub_name = "hub1";
        s.dead_after = dead_after_;
        s.first_retry = 10ms;
        s.max_retry = 50ms;
        s.route_on_append = on_append();
        s.hub_event_interest = &interest_;
        // Kafka endpoints refuse everything; webhooks whose address says "good" deliver to
        // `delivered_`, "bad" ones fail; the hub has no sink for any other.
        s.sinks = [this](const endpoint& e) -> result<std::unique_ptr<sink>> {
            if (e.kind == endpoint_kind::kafka) return std::unique_ptr<sink>(new refusing_sink);
            const bool good = e.endpoint_uri.find("good") != std::string::npos;
            if (!good && e.endpoint_uri.find("bad") == std::string::npos)
                return error(errc::bad_request, "Not built into this test.");
            return std::unique_ptr<sink>(std::make_unique<recording_sink>(good, *this));
        };
        router_ = std::make_unique<router>(
            *engine_, *telemetry_,
            [this](std::string_view d, std::string_view) -> std::optional<json::object> {
                if (auto it = twins_.find(std::string(d)); it != twins_.end()) return it->second;
                return std::nullopt;
            },
            s);
        ASSERT_TRUE(router_->start());
    }

    void configure(std::string_view document) {
        auto c = parse(document);
        ASSERT_TRUE(c) << c.error().message();
        ASSERT_TRUE(router_->replace(std::move(*c)));
    }

    // As a device session does: to wherever device messages go now.
    void send(storage::event_record e) {
        const auto device = property(e.system_properties, "iothub-connection-device-id");
        std::promise<result<void>> done;
        std::vector<storage::event_record> batch;
        batch.push_back(std::move(e));
        telemetry_->append(telemetry_->partition_of(device), std::move(batch),
                           [&](result<void> r) { done.set_value(std::move(r)); });
        ASSERT_TRUE(done.get_future().get());
    }

    // Every event of the log, all partitions, once `count` have arrived (or the deadline passed).
    std::vector<storage::stored_event> wait_for(storage::event_log& log, std::size_t count,
                                                std::chrono::seconds deadline = 10s) {
        const auto until = std::chrono::steady_clock::now() + deadline;
        for (;;) {
            std::vector<storage::stored_event> all;
            std::vector<std::uint64_t> next;
            for (int p = 0; p < log.partition_count(); ++p) {
                auto r = log.read(p, 0, 10000);
                next.push_back(log.info(p).next_sequence_number);
                for (auto& e : *r) all.push_back(std::move(e));
            }
            if (all.size() >= count || std::chrono::steady_clock::now() >= until) return all;
            // Wake on the first append to any partition, or re-check within 100 ms.
            std::mutex m;
            std::condition_variable cv;
            bool grew = false;
            std::vector<std::uint64_t> tokens;
            for (int p = 0; p < log.partition_count(); ++p)
                tokens.push_back(log.watch(p, next[static_cast<std::size_t>(p)], [&] {
                    std::lock_guard l(m);
                    grew = true;
                    cv.notify_all();
                }));
            {
                std::unique_lock l(m);
                cv.wait_for(l, 100ms, [&] { return grew; });
            }
            for (auto t : tokens) log.unwatch(t);
        }
    }

    class recording_sink final : public sink {
      public:
        recording_sink(bool works, Router& t) : works_(works), t_(t) {}
        result<void> deliver(int, std::vector<storage::event_record> events,
                             std::span<const std::uint64_t>, storage::kv_write cursor) override {
            if (!works_ && !events.empty())
                return error(errc::unauthorized, "The receiver refused the key.");
            std::lock_guard lock(t_.delivered_mutex_);
            for (auto& e : events) t_.delivered_.push_back(e.body);
            held_.hold(std::move(cursor));
            return {};
        }
        result<void> flush(sys_time, bool) override { return held_.write(t_.engine_->kv()); }

      private:
        bool works_;
        Router& t_;
        held_cursors held_;
    };
    std::vector<std::string> delivered() {
        std::lock_guard lock(delivered_mutex_);
        return delivered_;
    }

    storage::event_log& hosted(std::string_view name) {
        auto* log = router_->hosted_event_hub(name);
        EXPECT_NE(log, nullptr) << name;
        return *log;
    }

    std::filesystem::path dir_ =
        std::filesystem::temp_directory_path() / ("iothub-router-" + hex_encode(random_bytes(6)));
    std::unique_ptr<storage::engine> engine_;
    std::unique_ptr<telemetry::telemetry_service> telemetry_;
    std::unique_ptr<router> router_;
    hub_events::interest interest_;
    std::map<std::string, json::object> twins_;
    std::mutex delivered_mutex_;
    std::vector<std::string> delivered_;
};

constexpr std::string_view hot_route = R"({
  "endpoints": {"eventHubs": [{"name": "hot"}]},
  "routes": [{"name": "critical", "source": "DeviceMessages",
              "condition": "$body.temperature > 30 OR level = 'critical'",
              "endpointNames": ["hot"], "isEnabled": true}]
})";

TEST_P(Router, WithoutRoutesMessagesGoStraightToTheStream) {
    EXPECT_EQ(router_->path(), device_path::direct);
    EXPECT_EQ(&telemetry_->destination(), &engine_->events());
    send(message("d1", R"({"temperature": 40})"));
    EXPECT_EQ(wait_for(engine_->events(), 1).size(), 1u);
}

TEST_P(Router, MatchedMessagesGoToTheirEndpointAndTheRestToTheFallback) {
    configure(hot_route);
    EXPECT_EQ(router_->path(), on_append() ? device_path::on_append : device_path::ingest)
        << "routes decide now";
    send(message("d1", R"({"temperature": 40})"));
    send(message("d2", R"({"temperature": 20})", {{"level", "critical"}}));
    send(message("d3", R"({"temperature": 20})"));
    send(message("d4", "not json at all"));  // $body undefined: the fallback takes it
    auto hot = wait_for(hosted("HOT"), 2);
    ASSERT_EQ(hot.size(), 2u);
    std::set<std::string> devices;
    for (const auto& e : hot)
        devices.insert(property(e.record.system_properties, "iothub-connection-device-id"));
    EXPECT_EQ(devices, (std::set<std::string>{"d1", "d2"}));
    auto events = wait_for(engine_->events(), 2);
    ASSERT_EQ(events.size(), 2u) << "matched messages do not also reach the fallback";
    devices.clear();
    for (const auto& e : events)
        devices.insert(property(e.record.system_properties, "iothub-connection-device-id"));
    EXPECT_EQ(devices, (std::set<std::string>{"d3", "d4"}));
    // The hot endpoint's worker counts d4's undefined condition when it reads it.
    const auto until = std::chrono::steady_clock::now() + 10s;
    while (router_->counters().undefined_evaluations < 1 &&
           std::chrono::steady_clock::now() < until)
        std::this_thread::sleep_for(5ms);
    EXPECT_GE(router_->counters().undefined_evaluations, 1u);
    // Health is counted when the worker hears its append committed, a moment after readers see it.
    endpoint_health hot_health;
    do {
        for (const auto& h : router_->health())
            if (iequals(h.endpoint, "hot")) hot_health = h;
        if (hot_health.delivered >= 2) break;
        std::this_thread::sleep_for(5ms);
    } while (std::chrono::steady_clock::now() < until);
    EXPECT_EQ(hot_health.status, health_status::healthy);
    EXPECT_EQ(hot_health.delivered, 2u);
}

TEST_P(Router, WithTheFallbackOffUnmatchedMessagesReachNoEndpoint) {
    // The `marker` route tells when the stream's worker has read past d1's message: a device's
    // messages are read in order.
    configure(R"({
      "endpoints": {"eventHubs": [{"name": "hot"}]},
      "routes": [{"name": "all", "source": "DeviceMessages", "endpointNames": ["hot"],
                  "condition": "level = 'x'", "isEnabled": true},
                 {"name": "marker", "source": "DeviceMessages", "endpointNames": ["events"],
                  "condition": "marker = 'yes'", "isEnabled": true}],
      "fallbackRoute": {"name": "$fallback", "source": "DeviceMessages", "condition": "true",
                        "endpointNames": ["events"], "isEnabled": false}
    })");
    send(message("d1", "unmatched"));
    send(message("d2", "{}", {{"level", "x"}}));
    send(message("d1", "marker", {{"marker", "yes"}}));
    ASSERT_EQ(wait_for(hosted("hot"), 1).size(), 1u);
    auto events = wait_for(engine_->events(), 1);
    ASSERT_EQ(events.size(), 1u);
    EXPECT_EQ(events[0].record.body, "marker") << "the unmatched message reached no endpoint";
    EXPECT_EQ(wait_for(hosted("hot"), 1).size(), 1u);
}

TEST_P(Router, EnrichmentsAreStampedPerEndpoint) {
    twins_["d1"] = json::parse(R"({"tags":{"site":{"name":"north"}},
        "properties":{"desired":{},"reported":{"fw":"2.1"}}})")
                       .as_object();
    configure(R"({
      "endpoints": {"eventHubs": [{"name": "hot"}]},
      "routes": [{"name": "r1", "source": "DeviceMessages", "condition": "$twin.tags.site.name = 'north'",
                  "endpointNames": ["hot"], "isEnabled": true},
                 {"name": "r2", "source": "DeviceMessages", "endpointNames": ["events"],
                  "isEnabled": true}],
      "enrichments": [
        {"key": "site", "value": "$twin.tags.site.name", "endpointNames": ["hot"]},
        {"key": "fw", "value": "$twin.properties.reported.fw", "endpointNames": ["hot", "events"]},
        {"key": "hub", "value": "$iothubname", "endpointNames": ["events"]},
        {"key": "missing", "value": "$twin.tags.nothing", "endpointNames": ["events"]},
        {"key": "static", "value": "v1", "endpointNames": ["hot"]}]
    })");
    send(message("d1", "{}"));
    auto hot = wait_for(hosted("hot"), 1);
    ASSERT_EQ(hot.size(), 1u);
    const auto& a = hot[0].record.application_properties;
    EXPECT_EQ(property(a, "site"), "north");
    EXPECT_EQ(property(a, "fw"), "2.1");
    EXPECT_EQ(property(a, "static"), "v1");
    EXPECT_EQ(property(a, "hub"), "<absent>") << "enrichments are per endpoint";
    auto events = wait_for(engine_->events(), 1);
    ASSERT_EQ(events.size(), 1u);
    const auto& b = events[0].record.application_properties;
    EXPECT_EQ(property(b, "hub"), "hub1");
    EXPECT_EQ(property(b, "fw"), "2.1");
    EXPECT_EQ(property(b, "missing"), "$twin.tags.nothing") << "the literal, as Azure";
    EXPECT_EQ(property(b, "site"), "<absent>");
}

TEST_P(Router, HubEventsReachEndpointsOnlyThroughRoutesOfTheirSource) {
    configure(R"({
      "endpoints": {"eventHubs": [{"name": "twins"}]},
      "routes": [{"name": "t", "source": "TwinChangeEvents", "endpointNames": ["twins"],
                  "condition": "opType = 'updateTwin'", "isEnabled": true},
                 {"name": "marker", "source": "TwinChangeEvents", "endpointNames": ["events"],
                  "condition": "opType = 'marker'", "isEnabled": true}]
    })");
    EXPECT_EQ(router_->path(), device_path::direct) << "device messages unaffected";
    auto twin_event = message("d1", R"({"version":2})", {{"opType", "updateTwin"}});
    twin_event.system_properties.back().second = "twinChangeEvents";
    auto connected = message("d1", "{}", {{"opType", "deviceConnected"}});
    connected.system_properties.back().second = "deviceConnectionStateEvents";
    // Read after the others (one partition, in order): the stream's worker has passed them.
    auto marker = message("d1", "marker", {{"opType", "marker"}});
    marker.system_properties.back().second = "twinChangeEvents";
    std::promise<void> done;
    std::vector<storage::event_record> batch{connected, twin_event, marker};
    engine_->hub_events().append(storage::partition_for("d1", 4), std::move(batch),
                                 [&](auto) { done.set_value(); });
    done.get_future().get();
    auto got = wait_for(hosted("twins"), 1);
    ASSERT_EQ(got.size(), 1u);
    EXPECT_EQ(got[0].record.body, R"({"version":2})");
    auto events = wait_for(engine_->events(), 1);
    ASSERT_EQ(events.size(), 1u);
    EXPECT_EQ(events[0].record.body, "marker") << "no route of theirs to events";
}

TEST_P(Router, EndpointsTheHubCannotDeliverToYetAreUnhealthyAndKeepTheirMessages) {
    configure(R"({
      "endpoints": {"webhooks": [{"name": "hook", "endpointUri": "http://127.0.0.1:9/x"}]},
      "routes": [{"name": "w", "source": "DeviceMessages", "endpointNames": ["hook"],
                  "isEnabled": true}]
    })");
    const auto until = std::chrono::steady_clock::now() + 10s;
    for (;;) {
        bool unhealthy = false;
        for (const auto& h : router_->health())
            unhealthy =
                unhealthy || (h.endpoint == "hook" && h.status == health_status::unhealthy &&
                              !h.last_error.empty());
        if (unhealthy) break;
        ASSERT_LT(std::chrono::steady_clock::now(), until) << "never reported unhealthy";
        std::this_thread::sleep_for(10ms);
    }
}

TEST_P(Router, AnEndpointFailingLongerThanAllowedIsDeadAndItsMessagesAreDropped) {
    dead_after_ = 1s;
    open();
    configure(R"({
      "endpoints": {"kafka": [{"name": "lake", "brokers": "127.0.0.1:1", "topic": "t"}]},
      "routes": [{"name": "k", "source": "DeviceMessages", "endpointNames": ["lake"],
                  "isEnabled": true}]
    })");
    send(message("d1", "{}"));
    const auto until = std::chrono::steady_clock::now() + 20s;
    endpoint_health lake;
    for (;;) {
        for (const auto& h : router_->health())
            if (h.endpoint == "lake") lake = h;
        if (lake.status == health_status::dead && lake.dropped >= 1) break;
        ASSERT_LT(std::chrono::steady_clock::now(), until)
            << "status " << to_string(lake.status) << ", dropped " << lake.dropped;
        std::this_thread::sleep_for(20ms);
        send(message("d1", "{}"));  // messages keep coming; a dead endpoint does not hold them
    }
    EXPECT_EQ(lake.last_error, "refused");
}

TEST_P(Router, AnEndpointRedefinedUnderItsNameDeliversWhatWaitedForTheFix) {
    auto hook = [](std::string_view uri) {
        return R"({"endpoints": {"webhooks": [{"name": "hook", "endpointUri": ")" +
               std::string(uri) + R"("}]},
          "routes": [{"name": "w", "source": "DeviceMessages", "endpointNames": ["hook"],
                      "isEnabled": true}]})";
    };
    configure(hook("http://bad.example/x"));
    for (int i = 0; i < 3; ++i) send(message("d1", "m" + std::to_string(i)));
    const auto until = std::chrono::steady_clock::now() + 10s;
    auto unhealthy = [&] {
        for (const auto& h : router_->health())
            if (h.endpoint == "hook" && h.status == health_status::unhealthy) return true;
        return false;
    };
    while (!unhealthy()) {
        ASSERT_LT(std::chrono::steady_clock::now(), until) << "never reported unhealthy";
        std::this_thread::sleep_for(10ms);
    }
    configure(hook("http://good.example/x"));
    send(message("d1", "m3"));
    while (delivered().size() < 4) {
        ASSERT_LT(std::chrono::steady_clock::now(), until) << "held messages not delivered";
        std::this_thread::sleep_for(10ms);
    }
    EXPECT_EQ(delivered(), (std::vector<std::string>{"m0", "m1", "m2", "m3"}));

    // Another name is another endpoint: it starts with what comes after it.
    configure(R"({"endpoints": {"webhooks": [{"name": "hook2", "endpointUri": "http://good/2"}]},
          "routes": [{"name": "w", "source": "DeviceMessages", "endpointNames": ["hook2"],
                      "isEnabled": true}]})");
    send(message("d1", "m4"));
    while (delivered().size() < 5) {
        ASSERT_LT(std::chrono::steady_clock::now(), until);
        std::this_thread::sleep_for(10ms);
    }
    // A replay of what hook had would reach hook2 before m4 (one device, in order).
    EXPECT_EQ(delivered(), (std::vector<std::string>{"m0", "m1", "m2", "m3", "m4"}));
}

TEST_P(Router, AfterARestartDeliveryResumesWithoutLossOrRepetition) {
    if (GetParam().starts_with("memory")) GTEST_SKIP() << "nothing survives the memory engine";
    configure(hot_route);
    for (int i = 0; i < 50; ++i) send(message("d" + std::to_string(i), R"({"temperature": 99})"));
    ASSERT_EQ(wait_for(hosted("hot"), 50).size(), 50u);
    open();  // the configuration and the cursors come back from storage
    ASSERT_NE(router_->hosted_event_hub("hot"), nullptr);
    EXPECT_NE(router_->path(), device_path::direct);
    for (int i = 0; i < 10; ++i) send(message("e" + std::to_string(i), R"({"temperature": 99})"));
    auto all = wait_for(hosted("hot"), 60);
    EXPECT_EQ(all.size(), 60u);
    EXPECT_TRUE(wait_for(hosted("hot"), 61, 1s).size() == 60u) << "nothing delivered twice";
}

TEST_P(Router, OnlyTheHubEventsARouteOrTapReadsAreWanted) {
    using namespace hub_events;
    EXPECT_FALSE(interest_.wants(connection_state_source)) << "the default routes none";
    EXPECT_FALSE(interest_.wants(lifecycle_source));
    EXPECT_FALSE(interest_.wants(twin_change_source));
    configure(R"({
      "routes": [{"name": "c", "source": "DeviceConnectionStateEvents", "endpointNames": ["events"],
                  "condition": "true", "isEnabled": true},
                 {"name": "l", "source": "DeviceLifecycleEvents", "endpointNames": ["events"],
                  "condition": "true", "isEnabled": false}]
    })");
    EXPECT_TRUE(interest_.wants(connection_state_source));
    EXPECT_FALSE(interest_.wants(lifecycle_source)) << "its route is disabled";
    EXPECT_FALSE(interest_.wants(twin_change_source));
    tap t;
    t.name = "sub";
    t.definition = "sub";
    t.route_target = std::string(builtin_eventgrid);
    t.hub_events = [](const storage::event_record&) { return true; };
    t.make_sink = [this]() -> result<std::unique_ptr<sink>> {
        return std::unique_ptr<sink>(std::make_unique<recording_sink>(true, *this));
    };
    ASSERT_TRUE(router_->set_taps({t}));
    EXPECT_TRUE(interest_.wants(lifecycle_source)) << "a subscription may read any";
    EXPECT_TRUE(interest_.wants(twin_change_source));
    ASSERT_TRUE(router_->set_taps({}));
    configure("{}");
    EXPECT_FALSE(interest_.wants(connection_state_source));
    EXPECT_FALSE(interest_.wants(lifecycle_source));
}

TEST_P(Router, ReplacingWithTheDefaultSendsMessagesStraightToTheStreamAgain) {
    configure(hot_route);
    send(message("d1", R"({"temperature": 1})"));
    ASSERT_TRUE(router_->replace(default_config()));
    // The backlog drains into the stream, then device messages skip the ingest log again.
    ASSERT_EQ(wait_for(engine_->events(), 1).size(), 1u);
    const auto until = std::chrono::steady_clock::now() + 10s;
    while (router_->path() != device_path::direct ||
           &telemetry_->destination() != &engine_->events() || telemetry_->dispatched()) {
        ASSERT_LT(std::chrono::steady_clock::now(), until);
        std::this_thread::sleep_for(10ms);
    }
    EXPECT_EQ(router_->hosted_event_hub("hot"), nullptr);
}

// Routes decided on append take over from the ingest log only once its backlog is delivered, so
// a device's messages reach the endpoint in the order it sent them.
TEST_P(Router, LeavingTheIngestLogWaitsUntilItsBacklogIsDelivered) {
    if (!on_append()) GTEST_SKIP() << "the ingest log is the only way";
    configure(hot_route);
    EXPECT_EQ(router_->path(), device_path::on_append);
    router_->set_delivering(false);  // the backlog waits: no worker reads it
    EXPECT_EQ(router_->path(), device_path::ingest) << "nothing delivers without workers";
    for (int i = 0; i < 5; ++i)
        send(message("d1", R"({"temperature": 99, "n": )" + std::to_string(i) + "}"));
    router_->set_delivering(true);
    for (int i = 5; i < 10; ++i)
        send(message("d1", R"({"temperature": 99, "n": )" + std::to_string(i) + "}"));
    auto all = wait_for(hosted("hot"), 10);
    ASSERT_EQ(all.size(), 10u);
    std::sort(all.begin(), all.end(),
              [](const auto& a, const auto& b) { return a.sequence_number < b.sequence_number; });
    for (std::size_t i = 0; i < all.size(); ++i)
        EXPECT_NE(all[i].record.body.find("\"n\": " + std::to_string(i) + "}"), std::string::npos)
            << "message " << i << " in place: " << all[i].record.body;
    const auto until = std::chrono::steady_clock::now() + 10s;
    while (router_->path() != device_path::on_append) {
        ASSERT_LT(std::chrono::steady_clock::now(), until) << "the drained ingest log is left";
        std::this_thread::sleep_for(10ms);
    }
    send(message("d1", R"({"temperature": 99, "n": 10})"));
    EXPECT_EQ(wait_for(hosted("hot"), 11).size(), 11u);
    EXPECT_TRUE(telemetry_->dispatched());
}

INSTANTIATE_TEST_SUITE_P(Engines, Router,
                         ::testing::Values("memory", "rocksdb", "memory_on_append",
                                           "rocksdb_on_append"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace iothub::routing
