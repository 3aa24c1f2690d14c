// The device session's behaviour table, once, with no protocol and no socket: the real services
// on the memory engine, a port that records what the session says, and an io_context standing in
// for the connection's shard. Each adapter's own tests then only check its mapping.
#include "session/device_session.hpp"

#include "auth/sas.hpp"
#include "storage/engine.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/json.hpp>
#include <gtest/gtest.h>

#include <functional>

namespace iothub::session {
namespace {
using namespace std::chrono_literals;
namespace json = boost::json;

// Everything the session said, in order.
class recording_port final : public device_port {
  public:
    std::optional<result<opening>> open_result;
    std::vector<std::pair<std::uint64_t, bool>> stored;  // ticket, ok
    std::vector<std::pair<std::uint64_t, twin::device_answer>> answers;
    std::vector<c2d::delivery> deliveries;
    std::vector<std::pair<std::string, std::uint64_t>> desired;
    std::vector<std::string> methods;  // request ids
    std::optional<std::string> end_reason;
    std::size_t room = 0;

    void opened(const result<opening>& r) override { open_result = r; }
    void telemetry_stored(std::span<const std::uint64_t> tickets, const result<void>& r) override {
        for (auto t : tickets) stored.emplace_back(t, static_cast<bool>(r));
        ++appends;
    }
    int appends = 0;
    void twin_answered(std::uint64_t ticket, const twin::device_answer& a) override {
        answers.emplace_back(ticket, a);
    }
    bool c2d_room() const override { return room > 0; }
    void c2d_deliver(const c2d::delivery& d) override {
        --room;
        deliveries.push_back(d);
    }
    void desired_update(const std::string& patch, std::uint64_t version) override {
        desired.emplace_back(patch, version);
    }
    void method_request(const std::string&, const std::string& rid, const std::string&) override {
        methods.push_back(rid);
    }
    void ended(const std::string& reason) override { end_reason = reason; }
};

class DeviceSession : public ::testing::Test {
  protected:
    void SetUp() override {
        key_ = create("dev1");
        create("dev2");
        auto m = registry::parse_module(json::object{}, "dev1", "mod1");
        ASSERT_TRUE(m);
        auto made = registry_.put_module(*m, {});
        ASSERT_TRUE(made);
        module_key_ = made->auth.primary_key;
    }
    void TearDown() override { blocking_.stop(); }

    std::string create(const std::string& id) {
        auto spec = registry::parse_device(json::object{}, id);
        EXPECT_TRUE(spec);
        auto made = registry_.put_device(*spec, {});
        EXPECT_TRUE(made);
        return made ? made->auth.primary_key : "";
    }

    device_auth::device_credentials credentials(const std::string& device, const std::string& key,
                                                const std::string& module = "") {
        auto resource = "hub.example/devices/" + device;
        if (!module.empty()) resource += "/modules/" + module;
        return {device, module, auth::make_sas_token(resource, key, unix_seconds(now()) + 3600),
                std::nullopt};
    }

    // Runs the shard's handlers until `done` holds; false after ten seconds.
    bool run_until(const std::function<bool()>& done) {
        const auto deadline = std::chrono::steady_clock::now() + 10s;
        while (!done()) {
            if (std::chrono::steady_clock::now() > deadline) return false;
            io_.restart();
            io_.run_for(5ms);
        }
        return true;
    }

    std::shared_ptr<device_session> make(recording_port& port,
                                         std::shared_ptr<telemetry_budget> budget = nullptr) {
        if (!budget) budget = std::make_shared<telemetry_budget>(default_unstored_telemetry_bytes);
        return std::make_shared<device_session>(services_, io_.get_executor(), port, budget);
    }

    // A session opened with the device's key.
    std::shared_ptr<device_session> opened(recording_port& port, const std::string& device = "dev1",
                                           device_session::options o = {}) {
        auto s = make(port);
        s->open(credentials(device, device == "dev1" ? key_ : key2()), std::move(o));
        EXPECT_TRUE(run_until([&] { return port.open_result.has_value(); }));
        EXPECT_TRUE(port.open_result && *port.open_result)
            << (port.open_result && !*port.open_result ? port.open_result->error().message() : "");
        return s;
    }
    std::string key2() { return registry_.get_device("dev2")->auth.primary_key; }

    void send_c2d(const std::string& body) {
        c2d::message m;
        m.body = body;
        ASSERT_TRUE(c2d_.send("dev1", std::move(m), now()));
    }

    std::unique_ptr<storage::engine> engine_ = storage::open_memory({4, {}});
    registry::device_registry registry_{engine_->kv()};
    auth::policy_set policies_{auth::default_policies()};
    auth::host_names hosts_{{"hub.example"}};
    boost::asio::io_context io_;
    runtime::blocking_pool blocking_{2};
    device_auth::device_authenticator authenticator_{registry_, policies_, hosts_};
    connections::connection_table connections_;
    telemetry::telemetry_service telemetry_{engine_->events(), 1000};
    twin::twin_service twins_{engine_->kv(), registry_, engine_->hub_events(), "hub.example"};
    methods::method_service methods_{connections_, io_.get_executor()};
    c2d::c2d_service c2d_{engine_->kv(), registry_, connections_};
    services services_{authenticator_, connections_, telemetry_,    twins_,
                       methods_,       c2d_,         engine_->kv(), blocking_};
    std::string key_, module_key_;
};

storage::event_record message(std::string body) {
    storage::event_record e;
    e.body = std::move(body);
    return e;
}

// --- opening and the end ------------------------------------------------------------------------

TEST_F(DeviceSession, OpensWithTheDevicesKeyAndShowsItConnected) {
    recording_port port;
    auto s = opened(port);
    EXPECT_TRUE(s->is_open());
    EXPECT_EQ(s->principal().device_id, "dev1");
    EXPECT_TRUE(connections_.find("dev1", ""));
    EXPECT_TRUE(connections_.live(*registry_.get_device("dev1")).connected);
    s->close("bye");
    EXPECT_FALSE(connections_.find("dev1", ""));
    EXPECT_FALSE(port.end_reason) << "closed by the adapter: not an end from the hub";
}

TEST_F(DeviceSession, AWrongKeyOrADisabledDeviceIsRefusedAndNothingIsAttached) {
    recording_port port;
    auto s = make(port);
    s->open(credentials("dev1", key2()), {});
    ASSERT_TRUE(run_until([&] { return port.open_result.has_value(); }));
    ASSERT_FALSE(*port.open_result);
    EXPECT_EQ(port.open_result->error().code(), errc::unauthorized);
    EXPECT_TRUE(s->closed());
    EXPECT_FALSE(connections_.find("dev1", ""));

    auto d = registry_.get_device("dev2");
    auto spec = registry::parse_device(json::object{{"status", "disabled"}}, "dev2");
    ASSERT_TRUE(registry_.put_device(*spec, registry::if_match::parse("*")));
    recording_port port2;
    auto s2 = make(port2);
    s2->open(credentials("dev2", d->auth.primary_key), {});
    ASSERT_TRUE(run_until([&] { return port2.open_result.has_value(); }));
    ASSERT_FALSE(*port2.open_result);
    EXPECT_EQ(port2.open_result->error().code(), errc::device_disabled);
}

TEST_F(DeviceSession, ALiveOpenBeyondTheConnectRateIsThrottledBeforeAnythingElse) {
    connect_limiter limit(1, 1);
    services_.connects = &limit;
    ASSERT_TRUE(limit.try_acquire());  // the bucket is empty for the next second
    // Every open below is decided inside open(), microseconds after that.
    recording_port wrong_key, granted, request;
    auto a = make(wrong_key);
    a->open(credentials("dev1", key2()), {});
    EXPECT_FALSE(wrong_key.open_result) << "answered from the executor, not inside open()";
    auto b = make(granted);
    b->open(device_auth::device_principal{"dev2", "", "gen"}, {});
    device_session::options scoped;
    scoped.live = false;
    auto c = make(request);
    c->open(credentials("dev1", key_), scoped);

    // Refused before authentication: a wrong key is not even looked at.
    ASSERT_TRUE(run_until([&] { return wrong_key.open_result.has_value(); }));
    ASSERT_FALSE(*wrong_key.open_result);
    EXPECT_EQ(wrong_key.open_result->error().code(), errc::throttled);
    EXPECT_TRUE(a->closed());
    // An identity authenticated already (AMQP put-token) hears it at once.
    ASSERT_TRUE(granted.open_result);
    ASSERT_FALSE(*granted.open_result);
    EXPECT_EQ(granted.open_result->error().code(), errc::throttled);
    EXPECT_FALSE(connections_.find("dev2", ""));
    // A request-scoped (HTTPS) session is no connection and takes nothing.
    ASSERT_TRUE(run_until([&] { return request.open_result.has_value(); }));
    EXPECT_TRUE(*request.open_result);
    services_.connects = nullptr;
}

TEST_F(DeviceSession, ASecondSessionOfTheIdentityEndsTheFirst) {
    recording_port first, second;
    auto a = opened(first);
    auto b = opened(second);
    ASSERT_TRUE(run_until([&] { return first.end_reason.has_value(); }));
    EXPECT_NE(first.end_reason->find("replaced"), std::string::npos) << *first.end_reason;
    EXPECT_TRUE(a->closed());
    EXPECT_TRUE(b->is_open());
    // The first one's end does not disconnect the second.
    EXPECT_TRUE(connections_.find("dev1", ""));
    EXPECT_FALSE(second.end_reason);
}

TEST_F(DeviceSession, RevocationEndsTheSession) {
    recording_port port;
    auto s = opened(port);
    connections_.close("dev1", "", "the device was disabled", true);
    ASSERT_TRUE(run_until([&] { return port.end_reason.has_value(); }));
    EXPECT_EQ(*port.end_reason, "the device was disabled");
    EXPECT_FALSE(connections_.find("dev1", ""));
}

TEST_F(DeviceSession, AnExpiredTokenEndsTheSession) {
    recording_port port;
    auto s = make(port);
    device_auth::device_principal who{"dev1", "", "gen"};
    who.expires = now() + 1h;
    s->open(who, {});
    ASSERT_TRUE(port.open_result && *port.open_result);
    s->tick(now());
    EXPECT_FALSE(port.end_reason);
    s->renew(now() + 2h);
    s->tick(now() + 90min);
    EXPECT_FALSE(port.end_reason) << "renewed";
    s->tick(now() + 3h);
    ASSERT_TRUE(port.end_reason);
    EXPECT_EQ(*port.end_reason, "the SAS token expired");
}

TEST_F(DeviceSession, ARequestScopedSessionNeitherShowsConnectedNorEndsALiveOne) {
    recording_port live_port, request_port;
    auto live = opened(live_port);
    device_session::options o;
    o.live = false;
    auto request = opened(request_port, "dev1", o);
    ASSERT_TRUE(request->admit(message("polled"), 1));
    ASSERT_TRUE(run_until([&] { return request_port.stored.size() == 1; }));
    EXPECT_FALSE(live_port.end_reason);
    EXPECT_TRUE(live->is_open());
    request->close("request done");
    EXPECT_TRUE(connections_.find("dev1", "")) << "the live connection stays";
}

TEST_F(DeviceSession, APersistentRecordIsRestoredUnlessTheSessionIsClean) {
    device_session::options o;
    o.record_key = "test/session/dev1";
    o.clean = false;
    {
        recording_port port;
        auto s = opened(port, "dev1", o);
        EXPECT_FALSE((*port.open_result)->record);
        s->save_record("subscriptions");
        ASSERT_TRUE(run_until([&] { return engine_->kv().get(o.record_key)->has_value(); }));
        s->close("bye");
    }
    {
        recording_port port;
        auto s = opened(port, "dev1", o);
        EXPECT_EQ((*port.open_result)->record, "subscriptions");
        s->close("bye");
    }
    o.clean = true;
    recording_port port;
    auto s = opened(port, "dev1", o);
    EXPECT_FALSE((*port.open_result)->record);
    EXPECT_FALSE(*engine_->kv().get(o.record_key)) << "a clean session forgets the old one";
}

// --- telemetry ----------------------------------------------------------------------------------

TEST_F(DeviceSession, TelemetryOfOneHandlerIsOneAppendAcknowledgedInOrder) {
    recording_port port;
    auto s = opened(port);
    for (std::uint64_t t = 1; t <= 3; ++t)
        ASSERT_TRUE(s->admit(message("m" + std::to_string(t)), t));
    std::vector<storage::event_record> batch{message("b1"), message("b2")};
    ASSERT_TRUE(s->admit_batch(std::move(batch), 4));
    ASSERT_TRUE(run_until([&] { return port.stored.size() == 4; }));
    EXPECT_EQ(port.appends, 1) << "told once, for the whole append";
    EXPECT_EQ(port.stored, (std::vector<std::pair<std::uint64_t, bool>>{
                               {1, true}, {2, true}, {3, true}, {4, true}}));
    auto events = engine_->events().read(telemetry_.partition_of("dev1"), 0, 10);
    ASSERT_TRUE(events);
    ASSERT_EQ(events->size(), 5u);
    EXPECT_EQ(events->back().record.body, "b2");
    const auto& sys = events->front().record.system_properties;
    EXPECT_NE(std::find(sys.begin(), sys.end(),
                        std::pair<std::string, std::string>{"iothub-connection-device-id", "dev1"}),
              sys.end())
        << "stamped with the sender";
}

TEST_F(DeviceSession, TelemetryOverTheLimitIsRefusedWithNothingAdmitted) {
    recording_port port;
    auto s = opened(port);
    auto big = s->admit(message(std::string(1001, 'x')), 1);
    ASSERT_FALSE(big);
    EXPECT_EQ(big.error().code(), errc::message_too_large);
    std::vector<storage::event_record> batch{message(std::string(600, 'x')),
                                             message(std::string(600, 'y'))};
    auto whole = s->admit_batch(std::move(batch), 2);
    ASSERT_FALSE(whole);
    EXPECT_EQ(whole.error().code(), errc::message_too_large);
    ASSERT_TRUE(s->admit(message("fits"), 3));
    ASSERT_TRUE(run_until([&] { return !port.stored.empty(); }));
    EXPECT_EQ(port.stored.size(), 1u);
    EXPECT_EQ(engine_->events().info(telemetry_.partition_of("dev1")).next_sequence_number, 1u);
}

TEST_F(DeviceSession, UnstoredTelemetryIsBoundedByTheConnectionsBudget) {
    recording_port port;
    auto budget = std::make_shared<telemetry_budget>(1000);
    int freed = 0;
    budget->on_freed = [&] { ++freed; };
    auto s = make(port, budget);
    s->open(credentials("dev1", key_), {});
    ASSERT_TRUE(run_until([&] { return port.open_result.has_value(); }));
    ASSERT_TRUE(s->admit(message(std::string(600, 'a')), 1));
    EXPECT_FALSE(budget->spent());
    ASSERT_TRUE(s->admit(message(std::string(600, 'b')), 2));
    EXPECT_TRUE(budget->spent()) << "the adapter stops reading now";
    ASSERT_TRUE(run_until([&] { return port.stored.size() == 2; }));
    EXPECT_EQ(budget->used(), 0u);
    EXPECT_EQ(freed, 1);
}

TEST_F(DeviceSession, AdmittedTelemetryIsStoredEvenIfTheSessionClosesFirst) {
    recording_port port;
    auto s = opened(port);
    ASSERT_TRUE(s->admit(message("last words"), 0));
    s->close("gone");
    s.reset();  // the adapter lets go
    const int p = telemetry_.partition_of("dev1");
    ASSERT_TRUE(run_until([&] { return engine_->events().info(p).next_sequence_number == 1; }));
    EXPECT_TRUE(port.stored.empty()) << "nobody to tell";
}

// --- twin ---------------------------------------------------------------------------------------

TEST_F(DeviceSession, TwinRequestsAreAnsweredInArrivalOrder) {
    recording_port port;
    auto s = opened(port);
    using v = twin_request::verb;
    s->twin({v::patch_reported, R"({"a":1})", std::nullopt, 1});
    s->twin({v::subscribe_desired, "", std::nullopt, 2});
    s->twin({v::patch_reported, R"({"a":2})", std::nullopt, 3});
    s->twin({v::invalid, "Unsupported twin operation 'POST' on '/x'.", std::nullopt, 4});
    s->twin({v::get, "", std::nullopt, 5});
    ASSERT_TRUE(run_until([&] { return port.answers.size() == 5; }));
    std::vector<std::uint64_t> order;
    for (auto& [t, a] : port.answers) order.push_back(t);
    EXPECT_EQ(order, (std::vector<std::uint64_t>{1, 2, 3, 4, 5}));
    EXPECT_EQ(port.answers[0].second.status, 204);
    EXPECT_EQ(port.answers[1].second.status, 200);
    EXPECT_EQ(port.answers[3].second.status, 400);
    EXPECT_NE(port.answers[3].second.body.find("400027"), std::string::npos);
    auto got = json::parse(port.answers[4].second.body);
    EXPECT_EQ(got.at("reported").at("a"), 2) << "the second patch applied after the first";
    EXPECT_TRUE(connections_.channel("dev1", "")->wants_desired_updates());
}

// --- cloud-to-device ----------------------------------------------------------------------------

TEST_F(DeviceSession, C2dFlowsWithinTheAdaptersRoomAndAbandonsOnlyItsOwnLocksAtTheEnd) {
    for (auto b : {"a", "b", "c"}) send_c2d(b);
    recording_port port;
    port.room = 2;
    auto s = opened(port);
    s->listen_c2d(true);
    ASSERT_TRUE(run_until([&] { return port.deliveries.size() == 2; }));
    EXPECT_EQ(port.deliveries[0].content->body, "a");
    EXPECT_EQ(port.deliveries[1].content->body, "b");
    bool completed = false;
    s->settle_c2d(port.deliveries[0].lock_token, c2d_outcome::complete,
                  [&](result<void> r) { completed = static_cast<bool>(r); });
    ASSERT_TRUE(run_until([&] { return completed; }));
    EXPECT_EQ(c2d_.depth("dev1"), 2u);
    port.room = 1;
    s->c2d_room_freed();
    ASSERT_EQ(port.deliveries.size(), 3u);
    EXPECT_EQ(port.deliveries[2].content->body, "c");

    // A newer session holds nothing yet; the old one's end abandons its two locks only.
    s->close("gone");
    recording_port next;
    next.room = 5;
    auto again = opened(next);
    again->listen_c2d(true);
    ASSERT_TRUE(run_until([&] { return next.deliveries.size() == 2; }));
    EXPECT_EQ(next.deliveries[0].content->body, "b");
    EXPECT_EQ(next.deliveries[0].delivery_count, 2u) << "delivered before, abandoned at the end";
}

TEST_F(DeviceSession, ModulesNeverReceiveC2dAndPollingTakesOneAtATime) {
    send_c2d("for the device");
    recording_port module_port;
    module_port.room = 5;
    auto m = make(module_port);
    m->open(credentials("dev1", module_key_, "mod1"), {});
    ASSERT_TRUE(run_until([&] { return module_port.open_result.has_value(); }));
    m->listen_c2d(true);
    EXPECT_FALSE(m->take_c2d());
    io_.restart();
    io_.run_for(20ms);
    EXPECT_TRUE(module_port.deliveries.empty());

    recording_port port;
    device_session::options o;
    o.live = false;
    auto s = opened(port, "dev1", o);
    auto d = s->take_c2d();
    ASSERT_TRUE(d);
    EXPECT_EQ(d->content->body, "for the device");
    EXPECT_FALSE(s->take_c2d()) << "locked by the first poll";
}

// --- methods and desired properties ------------------------------------------------------------

TEST_F(DeviceSession, MethodsWaitingForTheDeviceAreDeliveredWhenItListens) {
    recording_port port;
    auto s = opened(port);
    std::optional<result<methods::method_result>> outcome;
    methods::method_call call;
    call.device_id = "dev1";
    call.name = "reboot";
    call.connect_timeout = 30s;
    methods_.invoke(call, [&](result<methods::method_result> r) { outcome = std::move(r); });
    io_.restart();
    io_.run_for(20ms);
    EXPECT_TRUE(port.methods.empty()) << "not listening yet";
    s->listen_methods(true);
    ASSERT_TRUE(run_until([&] { return port.methods.size() == 1; }));
    EXPECT_TRUE(s->method_response(port.methods[0], 200, R"({"ok":true})"));
    ASSERT_TRUE(run_until([&] { return outcome.has_value(); }));
    ASSERT_TRUE(*outcome);
    EXPECT_EQ((*outcome)->status, 200);
    EXPECT_FALSE(s->method_response(port.methods[0], 200, "{}")) << "answered once";
}

TEST_F(DeviceSession, DesiredUpdatesReachOnlyADeviceThatListens) {
    recording_port port;
    auto s = opened(port);
    auto channel = connections_.channel("dev1", "");
    ASSERT_TRUE(channel);
    EXPECT_FALSE(channel->wants_desired_updates());
    s->listen_desired(true);
    EXPECT_TRUE(channel->wants_desired_updates());
    channel->send_desired_update(R"({"rate":5,"$version":2})", 2);
    ASSERT_TRUE(run_until([&] { return port.desired.size() == 1; }));
    EXPECT_EQ(port.desired[0].second, 2u);
    s->close("gone");
    EXPECT_FALSE(channel->wants_desired_updates());
}

}  // namespace
}  // namespace iothub::session

namespace iothub::session {
namespace {

TEST_F(DeviceSession, TelemetryThatCannotBeStoredIsReportedAndNothingOfItIsKept) {
    recording_port port;
    auto s = opened(port);
    storage::faults_of(*engine_)->fail_appends(1);
    ASSERT_TRUE(s->admit(message("lost"), 1));
    ASSERT_TRUE(s->admit(message("with it"), 2));
    ASSERT_TRUE(run_until([&] { return port.stored.size() == 2; }));
    EXPECT_EQ(port.stored, (std::vector<std::pair<std::uint64_t, bool>>{{1, false}, {2, false}}));
    ASSERT_TRUE(s->admit(message("stored"), 3));
    ASSERT_TRUE(run_until([&] { return port.stored.size() == 3; }));
    EXPECT_TRUE(port.stored.back().second);
    auto events = engine_->events().read(telemetry_.partition_of("dev1"), 0, 10);
    ASSERT_EQ(events->size(), 1u);
    EXPECT_EQ(events->front().record.body, "stored");
}

}  // namespace
}  // namespace iothub::session
