// The device routes against real storage (memory engine), the real registry, authenticator,
// telemetry and C2D queues: requests go through the router as the server would pass them.
#include "device_api/device_api.hpp"

#include "common/encoding.hpp"
#include "device_api/messages.hpp"
#include "storage/engine.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/json.hpp>
#include <gtest/gtest.h>

#include <chrono>
#include <future>

namespace iothub::device_api {
namespace {
namespace json = boost::json;
using headers = std::vector<std::pair<std::string, std::string>>;

class DeviceApi : public ::testing::Test {
  protected:
    void TearDown() override { blocking_.stop(); }
    void SetUp() override {
        dev_ = *registry_.put_device(*registry::parse_device(json::parse("{}"), "dev1"), {});
        other_ = *registry_.put_device(*registry::parse_device(json::parse("{}"), "dev2"), {});
        mod_ =
            *registry_.put_module(*registry::parse_module(json::parse("{}"), "dev1", "mod1"), {});
        std::string print(40, 'A');
        ASSERT_TRUE(registry_.put_device(
            *registry::parse_device(
                json::parse(R"({"authentication":{"x509Thumbprint":{"primaryThumbprint":")" +
                            print + R"("}}})"),
                "x509dev"),
            {}));
        add_routes(routes_, context{auth_, sessions_, 1024});
    }

    std::string device_token(const registry::identity& id) {
        std::string resource = "hub.example/devices/" + id.device_id;
        if (!id.module_id.empty()) resource += "/modules/" + id.module_id;
        return auth::make_sas_token(resource, id.auth.primary_key, unix_seconds(now()) + 600, {});
    }
    std::string policy_token(std::string_view policy) {
        const auto* p = policies_.find(policy);
        return auth::make_sas_token("hub.example", p->primary_key, unix_seconds(now()) + 600,
                                    policy);
    }

    // Runs the matched route and waits for its answer: telemetry answers from the log's thread.
    http::response call(std::string method, std::string target, std::string body = {},
                        headers hs = {}, std::optional<std::string> authorization = std::nullopt,
                        std::shared_ptr<const auth::client_certificate> cert = {}) {
        http::request req;
        req.method = std::move(method);
        req.target = target;
        auto t = http::parse_target(target);
        req.path = t->path;
        req.segments = t->segments;
        req.query = t->query;
        req.body = std::move(body);
        req.headers = std::move(hs);
        // No `authorization` argument: dev1's own token; an empty one: no header at all.
        auto token = authorization ? *authorization : device_token(dev_);
        if (!token.empty()) req.headers.emplace_back("authorization", token);
        req.client_certificate = std::move(cert);
        req.executor = io_.get_executor();
        auto m = routes_.match(req);
        if (!m) return http::error_response(m.error());
        // The request's network thread is io_: run it until the route answers.
        std::optional<http::response> answer;
        (*m)->fn(req, http::responder([&](http::response r) { answer = std::move(r); }));
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
        while (!answer && std::chrono::steady_clock::now() < deadline) {
            io_.restart();
            io_.run_for(std::chrono::milliseconds(2));
        }
        EXPECT_TRUE(answer) << "no answer within five seconds";
        return answer ? std::move(*answer) : http::response{};
    }
    static std::string header(const http::response& r, std::string_view name) {
        for (const auto& [k, v] : r.headers)
            if (k == name) return v;
        return "<missing>";
    }
    std::vector<storage::stored_event> events(std::string_view device = "dev1") {
        return *engine_->events().read(telemetry_.partition_of(device), 0, 100);
    }
    static std::string prop(const storage::property_list& l, std::string_view key) {
        for (const auto& [k, v] : l)
            if (k == key) return v;
        return "<missing>";
    }
    void send_c2d(std::string body, c2d::ack_mode ack = c2d::ack_mode::full) {
        c2d::message m;
        m.body = std::move(body);
        m.message_id = "id-" + m.body;
        m.ack = ack;
        m.properties = {{"k", "v"}};
        ASSERT_TRUE(c2d_.send("dev1", std::move(m), now()));
    }
    std::string lock_of(const http::response& r) { return std::string(unquote(header(r, "ETag"))); }

    std::unique_ptr<storage::engine> engine_ = storage::open_memory();
    registry::device_registry registry_{engine_->kv()};
    auth::policy_set policies_{auth::default_policies()};
    auth::host_names hosts_{{"hub.example"}};
    device_auth::device_authenticator auth_{registry_, policies_, hosts_};
    telemetry::telemetry_service telemetry_{engine_->events(), 512};
    connections::connection_table connections_;
    c2d::c2d_service c2d_{engine_->kv(), registry_, connections_};
    boost::asio::io_context io_;
    runtime::blocking_pool blocking_{2};
    twin::twin_service twins_{engine_->kv(), registry_, engine_->hub_events(), "hub.example"};
    methods::method_service methods_{connections_, io_.get_executor()};
    session::services sessions_{auth_,    connections_, telemetry_,    twins_,
                                methods_, c2d_,         engine_->kv(), blocking_};
    http::router routes_;
    registry::identity dev_, other_, mod_;
};

TEST_F(DeviceApi, OneEventWithHeaders) {
    auto r = call("POST", "/devices/dev1/messages/events?api-version=2021-04-12", "{\"t\":1}",
                  {{"iothub-app-alert", "true"},
                   {"iothub-messageid", "m-1"},
                   {"iothub-contenttype", "application/json"}});
    ASSERT_EQ(r.status, 204) << r.body;
    auto ev = events();
    ASSERT_EQ(ev.size(), 1u);
    const auto& e = ev[0].record;
    EXPECT_EQ(e.body, "{\"t\":1}");
    EXPECT_EQ(prop(e.application_properties, "alert"), "true");
    EXPECT_EQ(prop(e.system_properties, "message-id"), "m-1");
    EXPECT_EQ(prop(e.system_properties, "content-type"), "application/json");
    EXPECT_EQ(prop(e.system_properties, "iothub-connection-device-id"), "dev1");
}

TEST_F(DeviceApi, TelemetryThatCannotBeStoredIsAServerErrorAndNothingIsKept) {
    storage::faults_of(*engine_)->fail_appends(1);
    auto r = call("POST", "/devices/dev1/messages/events?api-version=2021-04-12", "lost");
    EXPECT_EQ(r.status, 500);
    EXPECT_NE(r.body.find("ServerError"), std::string::npos) << r.body;
    EXPECT_TRUE(events().empty());
    EXPECT_EQ(call("POST", "/devices/dev1/messages/events?api-version=2021-04-12", "kept").status,
              204);
    ASSERT_EQ(events().size(), 1u);
}

TEST_F(DeviceApi, ModuleEventsCarryTheModule) {
    auto r =
        call("POST", "/devices/dev1/modules/mod1/messages/events", "x", {}, device_token(mod_));
    ASSERT_EQ(r.status, 204) << r.body;
    auto ev = events();
    ASSERT_EQ(ev.size(), 1u);
    EXPECT_EQ(prop(ev[0].record.system_properties, "iothub-connection-module-id"), "mod1");
    EXPECT_EQ(call("POST", "/devices/dev1/modules/mod1/messages/events", "x").status, 401)
        << "a device token does not speak for its module";
}

TEST_F(DeviceApi, TheIdentityInThePathMustBeTheAuthenticatedOne) {
    auto r = call("POST", "/devices/dev2/messages/events", "x");  // dev1's token
    EXPECT_EQ(r.status, 401);
    EXPECT_EQ(header(r, "iothub-errorcode"), "IotHubUnauthorizedAccess");
    EXPECT_NE(r.body.find("ErrorCode:IotHubUnauthorizedAccess"), std::string::npos);
    EXPECT_EQ(call("POST", "/devices/ghost/messages/events", "x").status, 401)
        << "an unknown device is unauthorized, as in Azure";
    EXPECT_EQ(call("POST", "/devices/dev1/messages/events", "x", {}, "").status, 401)
        << "no credentials";
    EXPECT_EQ(
        call("POST", "/devices/dev1/messages/events", "x", {}, "SharedAccessSignature x").status,
        401);
    EXPECT_EQ(
        call("POST", "/devices/dev1/messages/events", "x", {}, policy_token("service")).status, 401)
        << "service has no DeviceConnect";
    EXPECT_EQ(call("POST", "/devices/dev1/messages/events", "x", {}, policy_token("device")).status,
              204)
        << "a policy with DeviceConnect speaks for any device";
    EXPECT_EQ(events().size(), 1u);
}

TEST_F(DeviceApi, ClientCertificateAuthenticates) {
    auto cert = std::make_shared<auth::client_certificate>();
    cert->sha1_hex = std::string(40, 'A');
    EXPECT_EQ(call("POST", "/devices/x509dev/messages/events", "x", {}, "", cert).status, 204);
    cert->sha1_hex = std::string(40, 'B');
    EXPECT_EQ(call("POST", "/devices/x509dev/messages/events", "x", {}, "", cert).status, 401);
}

TEST_F(DeviceApi, OversizeEventIs413) {
    auto r = call("POST", "/devices/dev1/messages/events", std::string(600, 'x'));
    EXPECT_EQ(r.status, 413);
    EXPECT_EQ(header(r, "iothub-errorcode"), "MessageTooLarge");
    EXPECT_TRUE(events().empty());
}

TEST_F(DeviceApi, BatchAppendsAllOrNothing) {
    const headers batch{{"content-type", "application/vnd.microsoft.iothub.json"}};
    auto body = "[{\"body\":\"" + base64_encode("a") +
                "\",\"properties\":{\"iothub-app-k\":\"v\",\"iothub-messageid\":\"m1\"}},"
                "{\"body\":\"b\",\"base64Encoded\":false},{\"body\":\"" +
                base64_encode("c") + "\"}]";
    auto r = call("POST", "/devices/dev1/messages/events", body, batch);
    ASSERT_EQ(r.status, 204) << r.body;
    auto ev = events();
    ASSERT_EQ(ev.size(), 3u);
    EXPECT_EQ(ev[0].record.body, "a");
    EXPECT_EQ(prop(ev[0].record.application_properties, "k"), "v");
    EXPECT_EQ(prop(ev[0].record.system_properties, "message-id"), "m1");
    EXPECT_EQ(ev[1].record.body, "b");
    EXPECT_EQ(ev[2].record.body, "c");
    EXPECT_EQ(prop(ev[2].record.system_properties, "iothub-connection-device-id"), "dev1");

    EXPECT_EQ(call("POST", "/devices/dev1/messages/events", "[{\"body\":1}]", batch).status, 400);
    EXPECT_EQ(call("POST", "/devices/dev1/messages/events", "not json", batch).status, 400);
    // One message over the telemetry limit (512 here) refuses the whole batch.
    auto one_too_big = "[{\"body\":\"" + base64_encode("ok") + "\"},{\"body\":\"" +
                       base64_encode(std::string(600, 'x')) + "\"}]";
    auto big = call("POST", "/devices/dev1/messages/events", one_too_big, batch);
    EXPECT_EQ(big.status, 413);
    EXPECT_EQ(header(big, "iothub-errorcode"), "MessageTooLarge");
    // The batch itself over its limit (1024 here).
    std::string many = "[";
    for (int i = 0; i < 60; ++i) many += (i ? "," : "") + std::string("{\"body\":\"eHh4eHh4\"}");
    many += "]";
    ASSERT_GT(many.size(), 1024u);
    EXPECT_EQ(call("POST", "/devices/dev1/messages/events", many, batch).status, 413);
    EXPECT_EQ(events().size(), 3u) << "refused batches wrote nothing";
}

TEST_F(DeviceApi, PollLocksSoASecondPollSeesNothing) {
    EXPECT_EQ(call("GET", "/devices/dev1/messages/devicebound").status, 204);
    send_c2d("hello");
    auto r = call("GET", "/devices/dev1/messages/devicebound?api-version=2021-04-12");
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.body, "hello");
    EXPECT_EQ(header(r, "iothub-messageid"), "id-hello");
    EXPECT_EQ(header(r, "iothub-app-k"), "v");
    EXPECT_EQ(header(r, "iothub-deliverycount"), "1");
    EXPECT_EQ(header(r, "iothub-ack"), "full");
    auto etag = header(r, "ETag");
    ASSERT_GE(etag.size(), 3u);
    EXPECT_EQ(etag.front(), '"');
    EXPECT_EQ(call("GET", "/devices/dev1/messages/devicebound").status, 204)
        << "the message is locked";
    // C# spells it deviceBound; an If-Match quoted as C sends it.
    auto done = call("DELETE", "/devices/dev1/messages/deviceBound/" + lock_of(r), {},
                     {{"if-match", etag}});
    EXPECT_EQ(done.status, 204) << done.body;
    EXPECT_EQ(c2d_.depth("dev1"), 0u);
    auto fb = c2d_.receive_feedback(now());
    ASSERT_TRUE(fb);
    ASSERT_EQ(fb->records.size(), 1u);
    EXPECT_EQ(fb->records[0].what, c2d::outcome::success);
}

TEST_F(DeviceApi, AbandonRedeliversAndRejectRemoves) {
    send_c2d("m");
    auto first = call("GET", "/devices/dev1/messages/devicebound");
    ASSERT_EQ(first.status, 200);
    // Node sends If-Match unquoted.
    EXPECT_EQ(call("POST", "/devices/dev1/messages/devicebound/" + lock_of(first) + "/abandon", {},
                   {{"if-match", lock_of(first)}})
                  .status,
              204);
    auto again = call("GET", "/devices/dev1/messages/devicebound");
    ASSERT_EQ(again.status, 200);
    EXPECT_EQ(header(again, "iothub-deliverycount"), "2");
    EXPECT_NE(lock_of(again), lock_of(first));
    EXPECT_EQ(
        call("DELETE", "/devices/dev1/messages/devicebound/" + lock_of(again) + "?reject").status,
        204);
    EXPECT_EQ(c2d_.depth("dev1"), 0u);
    auto fb = c2d_.receive_feedback(now());
    ASSERT_TRUE(fb);
    EXPECT_EQ(fb->records.back().what, c2d::outcome::rejected);
}

TEST_F(DeviceApi, WrongOrSpentLockTokenIs412LockLost) {
    send_c2d("m");
    auto r = call("GET", "/devices/dev1/messages/devicebound");
    ASSERT_EQ(r.status, 200);
    auto bogus = call("DELETE",
                      "/devices/dev1/messages/devicebound/"
                      "00000000-0000-0000-0000-000000000000");
    EXPECT_EQ(bogus.status, 412);
    EXPECT_EQ(header(bogus, "iothub-errorcode"), "DeviceMessageLockLost");
    EXPECT_EQ(call("DELETE", "/devices/dev1/messages/devicebound/" + lock_of(r), {},
                   {{"if-match", "\"something-else\""}})
                  .status,
              412);
    EXPECT_EQ(call("DELETE", "/devices/dev1/messages/devicebound/" + lock_of(r)).status, 204);
    EXPECT_EQ(call("DELETE", "/devices/dev1/messages/devicebound/" + lock_of(r)).status, 412)
        << "already completed";
    EXPECT_EQ(call("POST", "/devices/dev1/messages/devicebound/" + lock_of(r) + "/abandon").status,
              412);
}

TEST_F(DeviceApi, OnlyTheOwnerSettlesOrPolls) {
    send_c2d("m");
    auto r = call("GET", "/devices/dev1/messages/devicebound");
    ASSERT_EQ(r.status, 200);
    EXPECT_EQ(call("GET", "/devices/dev2/messages/devicebound").status, 401);
    EXPECT_EQ(call("DELETE", "/devices/dev2/messages/devicebound/" + lock_of(r), {}, {},
                   device_token(other_))
                  .status,
              412)
        << "another device's lock is not dev2's to settle";
    EXPECT_EQ(call("DELETE", "/devices/dev1/messages/devicebound/" + lock_of(r)).status, 204);
}

TEST_F(DeviceApi, ModulesHaveNoC2dOverHttps) {
    auto r =
        call("GET", "/devices/dev1/modules/mod1/messages/devicebound", {}, {}, device_token(mod_));
    EXPECT_EQ(r.status, 400);
}

}  // namespace
}  // namespace iothub::device_api
