// The webhook endpoint and Event Grid subscriptions against a real HTTP server on loopback: what
// is sent (bodies, headers, schemas), the validation handshake, retries and drops, and routing
// that leads there.
#include "endpoints/eventgrid.hpp"
#include "endpoints/webhook_sink.hpp"
#include "storage/engine.hpp"

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>
#include <gtest/gtest.h>

#include <condition_variable>
#include <functional>
#include <future>
#include <sys/socket.h>
#include <thread>

namespace iothub::endpoints {
namespace {
namespace asio = boost::asio;
namespace bhttp = boost::beast::http;
namespace json = boost::json;
using namespace std::chrono_literals;

// A loopback HTTP server that records every request and answers as `respond` says.
class receiver {
  public:
    struct request {
        std::string target;
        std::map<std::string, std::string> headers;  // lower-case names
        std::string body;
    };
    using responder = std::function<std::pair<int, std::string>(const request&)>;

    explicit receiver(responder respond = {}) : respond_(std::move(respond)) {
        acceptor_.open(asio::ip::tcp::v4());
        acceptor_.set_option(asio::socket_base::reuse_address(true));
        acceptor_.bind({asio::ip::make_address("127.0.0.1"), 0});
        acceptor_.listen();
        port_ = acceptor_.local_endpoint().port();
        thread_ = std::thread([this] { serve(); });
    }
    ~receiver() {
        stopping_ = true;
        if (int fd = active_fd_.load(); fd >= 0) ::shutdown(fd, SHUT_RDWR);
        boost::system::error_code ec;
        // Wake the accept: connect to ourselves.
        asio::ip::tcp::socket s(io_);
        s.connect({asio::ip::make_address("127.0.0.1"), port_}, ec);
        thread_.join();
    }
    std::string url(std::string path = "/hook") const {
        return "http://127.0.0.1:" + std::to_string(port_) + path;
    }
    void set(responder r) {
        std::lock_guard l(m_);
        respond_ = std::move(r);
    }
    // Waits until `n` requests arrived (or 10 s passed) and returns all of them.
    std::vector<request> wait_for(std::size_t n, std::chrono::milliseconds max = 10s) {
        std::unique_lock l(m_);
        cv_.wait_for(l, max, [&] { return seen_.size() >= n; });
        return seen_;
    }

  private:
    void serve() {
        while (!stopping_) {
            asio::ip::tcp::socket s(io_);
            boost::system::error_code ec;
            acceptor_.accept(s, ec);
            if (ec || stopping_) continue;
            // A client's idle keep-alive connection must not keep the server from stopping: the
            // destructor shuts it down.
            active_fd_ = s.native_handle();
            boost::beast::flat_buffer buf;
            for (;;) {
                bhttp::request<bhttp::string_body> req;
                bhttp::read(s, buf, req, ec);
                if (ec) break;
                request r{std::string(req.target()), {}, req.body()};
                for (const auto& f : req)
                    r.headers[to_lower(std::string(f.name_string()))] = std::string(f.value());
                std::pair<int, std::string> answer{200, ""};
                {
                    std::lock_guard l(m_);
                    if (respond_) answer = respond_(r);
                    seen_.push_back(r);
                }
                cv_.notify_all();
                bhttp::response<bhttp::string_body> res{static_cast<bhttp::status>(answer.first),
                                                        11};
                res.body() = answer.second;
                res.prepare_payload();
                bhttp::write(s, res, ec);
                if (ec) break;
            }
            active_fd_ = -1;
        }
    }
    static std::string to_lower(std::string s) {
        for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        return s;
    }

    asio::io_context io_;
    asio::ip::tcp::acceptor acceptor_{io_};
    std::uint16_t port_ = 0;
    std::thread thread_;
    std::atomic<bool> stopping_{false};
    std::atomic<int> active_fd_{-1};
    std::mutex m_;
    std::condition_variable cv_;
    std::vector<request> seen_;
    responder respond_;
};

storage::event_record telemetry(std::string device, std::string body) {
    storage::event_record e;
    e.body = std::move(body);
    e.application_properties = {{"alert", "high"}};
    e.system_properties = {{"iothub-connection-device-id", std::move(device)},
                           {"content-type", "application/json"},
                           {"content-encoding", "utf-8"},
                           {"message-id", "m1"},
                           {"iothub-message-source", "Telemetry"}};
    return e;
}

TEST(webhook, posts_body_properties_and_headers_and_holds_the_cursor_until_flushed) {
    receiver rx;
    auto engine = storage::open_memory();
    routing::endpoint e;
    e.kind = routing::endpoint_kind::webhook;
    e.name = "hook";
    e.endpoint_uri = rx.url("/in?code=1");
    e.headers = {{"Authorization", "Bearer t0k"}};
    auto sink = make_webhook_sink(e, engine->kv());
    ASSERT_TRUE(sink);
    std::vector<storage::event_record> batch{telemetry("d1", R"({"t":1})"),
                                             telemetry("d1", R"({"t":2})")};
    ASSERT_TRUE((*sink)->deliver(0, batch, {storage::kv_write::op::put, "cur", "7"}));
    auto got = rx.wait_for(2);
    ASSERT_EQ(got.size(), 2u);
    EXPECT_EQ(got[0].target, "/in?code=1");
    EXPECT_EQ(got[0].body, R"({"t":1})");
    EXPECT_EQ(got[1].body, R"({"t":2})");
    EXPECT_EQ(got[0].headers["alert"], "high");
    EXPECT_EQ(got[0].headers["iothub-connection-device-id"], "d1");
    EXPECT_EQ(got[0].headers["iothub-message-id"], "m1");
    EXPECT_EQ(got[0].headers["content-type"], "application/json");
    EXPECT_EQ(got[0].headers["authorization"], "Bearer t0k");
    EXPECT_FALSE(*engine->kv().get("cur")) << "not before flush";
    ASSERT_TRUE((*sink)->flush(now(), false));
    EXPECT_EQ((*engine->kv().get("cur"))->value, "7");
}

TEST(webhook, a_refusal_or_a_dead_receiver_fails_the_batch_and_keeps_the_cursor) {
    receiver rx([](const receiver::request&) { return std::pair{500, std::string("no")}; });
    auto engine = storage::open_memory();
    routing::endpoint e;
    e.kind = routing::endpoint_kind::webhook;
    e.name = "hook";
    e.endpoint_uri = rx.url();
    auto sink = make_webhook_sink(e, engine->kv());
    ASSERT_TRUE(sink);
    auto r = (*sink)->deliver(0, {telemetry("d1", "{}")}, {storage::kv_write::op::put, "c", "1"});
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message().find("500"), std::string::npos);
    ASSERT_TRUE((*sink)->flush(now(), true));
    EXPECT_FALSE(*engine->kv().get("c"));

    e.endpoint_uri = "http://127.0.0.1:1/nothing-listens";
    http::client_options quick;
    quick.timeout = 2s;
    auto dead = make_webhook_sink(e, engine->kv(), quick);
    ASSERT_TRUE(dead);
    EXPECT_FALSE(
        (*dead)->deliver(0, {telemetry("d1", "{}")}, {storage::kv_write::op::put, "c", "1"}));
}

class EventGrid : public ::testing::Test {
  protected:
    void SetUp() override {
        routing::router_settings s;
        s.hub_name = "hub1";
        s.first_retry = 10ms;
        s.max_retry = 50ms;
        router_ =
            std::make_unique<routing::router>(*engine_, telemetry_, routing::twin_lookup{}, s);
        ASSERT_TRUE(router_->start());
        http::client_options quick;
        quick.timeout = 2s;
        grid_ = std::make_unique<event_grid>(engine_->kv(), *router_, "hub1", quick);
        ASSERT_TRUE(grid_->start());
    }
    void TearDown() override {
        grid_.reset();
        router_.reset();
    }
    void raise(storage::event_record e) {
        std::promise<void> done;
        std::vector<storage::event_record> batch{std::move(e)};
        engine_->hub_events().append(0, std::move(batch), [&](auto) { done.set_value(); });
        done.get_future().get();
    }
    static storage::event_record hub_event(std::string source, std::string op, std::string device,
                                           std::string body) {
        storage::event_record e;
        e.body = std::move(body);
        e.application_properties = {{"opType", std::move(op)},
                                    {"operationTimestamp", "2026-12-05T00:00:00.0000000Z"}};
        e.system_properties = {{"iothub-connection-device-id", std::move(device)},
                               {"correlation-id", "c-1"},
                               {"iothub-message-source", std::move(source)}};
        return e;
    }
    event_subscription subscribe(const std::string& url, std::string extra = "") {
        auto s = parse_subscription(
            "sub1",
            R"({"properties":{"destination":{"endpointType":"WebHook","properties":{"endpointUrl":")" +
                url + R"("}})" + extra + "}}");
        EXPECT_TRUE(s) << (s ? "" : s.error().message());
        auto put = grid_->put(*s);
        EXPECT_TRUE(put);
        return *put;
    }

    std::unique_ptr<storage::engine> engine_ = storage::open_memory();
    telemetry::telemetry_service telemetry_{engine_->events()};
    std::unique_ptr<routing::router> router_;
    std::unique_ptr<event_grid> grid_;
};

// Answers the handshake by echoing the code; 2xx to the rest.
receiver::responder validating() {
    return [](const receiver::request& r) -> std::pair<int, std::string> {
        if (r.headers.count("aeg-event-type") &&
            r.headers.at("aeg-event-type") == "SubscriptionValidation") {
            auto code =
                json::parse(r.body).as_array()[0].at("data").at("validationCode").as_string();
            return {200, json::serialize(json::object{{"validationResponse", code}})};
        }
        return {200, ""};
    };
}

TEST_F(EventGrid, ValidatesFirstThenDeliversInTheEventGridSchema) {
    receiver rx(validating());
    subscribe(rx.url());
    auto first = rx.wait_for(1);
    ASSERT_GE(first.size(), 1u);
    EXPECT_EQ(first[0].headers["aeg-event-type"], "SubscriptionValidation");
    auto v = json::parse(first[0].body).as_array()[0].as_object();
    EXPECT_EQ(v.at("eventType").as_string(), "Microsoft.EventGrid.SubscriptionValidationEvent");

    raise(hub_event("deviceConnectionStateEvents", "deviceConnected", "d1",
                    R"({"sequenceNumber":"00ab"})"));
    raise(hub_event("twinChangeEvents", "updateTwin", "d1", "{}"));  // not an Event Grid type
    auto got = rx.wait_for(2);
    ASSERT_EQ(got.size(), 2u);
    EXPECT_EQ(got[1].headers["aeg-event-type"], "Notification");
    EXPECT_EQ(got[1].headers["aeg-subscription-name"], "SUB1");
    auto events = json::parse(got[1].body).as_array();
    ASSERT_EQ(events.size(), 1u);
    const auto& e = events[0].as_object();
    EXPECT_EQ(e.at("eventType").as_string(), "Microsoft.Devices.DeviceConnected");
    EXPECT_EQ(e.at("subject").as_string(), "devices/d1");
    EXPECT_EQ(e.at("id").as_string(), "c-1");
    EXPECT_EQ(e.at("eventTime").as_string(), "2026-12-05T00:00:00.0000000Z");
    EXPECT_EQ(e.at("data").at("deviceConnectionStateEventInfo").at("sequenceNumber").as_string(),
              "00ab");
    EXPECT_EQ(e.at("data").at("hubName").as_string(), "hub1");
    EXPECT_NE(e.at("topic").as_string().find("IOTHUBS/HUB1"), std::string::npos);
    auto shown = grid_->get("SUB1");
    ASSERT_TRUE(shown);
    EXPECT_TRUE(shown->validated);
}

TEST_F(EventGrid, WithoutTheRightCodeNothingElseIsSent) {
    receiver rx([](const receiver::request&) { return std::pair{200, std::string("{}")}; });
    subscribe(rx.url());
    ASSERT_GE(rx.wait_for(1).size(), 1u);
    raise(hub_event("deviceLifecycleEvents", "createDeviceIdentity", "d1", R"({"deviceId":"d1"})"));
    // The event is dropped, not sent, while the subscription is not active.
    const auto until = std::chrono::steady_clock::now() + 10s;
    while (grid_->get("sub1")->dropped < 1) {
        ASSERT_LT(std::chrono::steady_clock::now(), until) << "the event was never handled";
        std::this_thread::sleep_for(10ms);
    }
    auto seen = rx.wait_for(1);
    ASSERT_GE(seen.size(), 1u);
    for (const auto& r : seen) EXPECT_EQ(r.headers.at("aeg-event-type"), "SubscriptionValidation");
    EXPECT_FALSE(grid_->get("sub1")->validated);
}

TEST_F(EventGrid, FiltersAndCloudEventsSchema) {
    receiver rx(validating());
    subscribe(rx.url(), R"(,"filter":{"includedEventTypes":["Microsoft.Devices.DeviceCreated"],
        "subjectBeginsWith":"devices/keep"},"eventDeliverySchema":"CloudEventSchemaV1_0")");
    ASSERT_GE(rx.wait_for(1).size(), 1u);
    raise(hub_event("deviceLifecycleEvents", "createDeviceIdentity", "other", "{}"));
    raise(hub_event("deviceLifecycleEvents", "deleteDeviceIdentity", "keep1", "{}"));
    raise(hub_event("deviceLifecycleEvents", "createDeviceIdentity", "keep2",
                    R"({"deviceId":"keep2","etag":"AAAA"})"));
    auto got = rx.wait_for(2);
    ASSERT_EQ(got.size(), 2u);
    EXPECT_NE(got[1].headers["content-type"].find("cloudevents-batch+json"), std::string::npos);
    auto e = json::parse(got[1].body).as_array()[0].as_object();
    EXPECT_EQ(e.at("specversion").as_string(), "1.0");
    EXPECT_EQ(e.at("type").as_string(), "Microsoft.Devices.DeviceCreated");
    EXPECT_EQ(e.at("subject").as_string(), "devices/keep2");
    EXPECT_EQ(e.at("data").at("twin").at("etag").as_string(), "AAAA");
}

TEST_F(EventGrid, RetriesThenDropsAfterThePolicy) {
    std::atomic<int> notifications{0};
    receiver rx([&](const receiver::request& r) -> std::pair<int, std::string> {
        if (r.headers.at("aeg-event-type") == "SubscriptionValidation") return validating()(r);
        ++notifications;
        return {503, "busy"};
    });
    subscribe(rx.url(), R"(,"retryPolicy":{"maxDeliveryAttempts":3,"eventTimeToLiveInMinutes":5})");
    ASSERT_GE(rx.wait_for(1).size(), 1u);
    raise(hub_event("deviceConnectionStateEvents", "deviceDisconnected", "d1", "{}"));
    const auto until = std::chrono::steady_clock::now() + 10s;
    while (grid_->get("sub1")->dropped == 0) {
        ASSERT_LT(std::chrono::steady_clock::now(), until) << "never dropped";
        std::this_thread::sleep_for(10ms);
    }
    EXPECT_EQ(notifications.load(), 3) << "three attempts, then dropped";
    EXPECT_EQ(grid_->get("sub1")->dropped, 1u);
}

TEST(EventGridSubscription, BadDocumentsAreRefused) {
    EXPECT_FALSE(parse_subscription("s", "[]"));
    EXPECT_FALSE(parse_subscription("bad name!", R"({"destination":{}})"));
    EXPECT_FALSE(parse_subscription("s", R"({"destination":{"endpointType":"EventHub"}})"));
    EXPECT_FALSE(parse_subscription(
        "s",
        R"({"destination":{"endpointType":"WebHook","properties":{"endpointUrl":"ftp://x"}}})"));
    auto unknown = parse_subscription(
        "s", R"({"destination":{"endpointType":"WebHook","properties":{"endpointUrl":"http://x/"}},
                 "filter":{"includedEventTypes":["Microsoft.Devices.Nope"]}})");
    ASSERT_FALSE(unknown);
    EXPECT_NE(unknown.error().message().find("Nope"), std::string::npos);
    auto bare = parse_subscription(
        "s",
        R"({"destination":{"endpointType":"webhook","properties":{"endpointUrl":"https://x/"}}})");
    ASSERT_TRUE(bare) << "a bare properties object is accepted";
    EXPECT_EQ(bare->max_delivery_attempts, 30u);
    EXPECT_EQ(bare->event_ttl_minutes, 1440u);
}

}  // namespace
}  // namespace iothub::endpoints
