#include "methods/methods.hpp"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/json.hpp>
#include <gtest/gtest.h>

#include <future>
#include <map>
#include <mutex>
#include <thread>

namespace iothub::methods {
namespace {
namespace json = boost::json;
using namespace std::chrono_literals;

// A device connection as the method service sees it: records what it was sent.
class recording_channel final : public connections::device_channel {
  public:
    struct request {
        std::string name, rid, payload;
    };
    bool wants_desired_updates() const override { return false; }
    void send_desired_update(std::string, std::uint64_t) override {}
    bool accepts_methods() const override { return subscribed; }
    void send_method_request(std::string name, std::string rid, std::string payload) override {
        std::lock_guard lock(mutex);
        requests.push_back({std::move(name), std::move(rid), std::move(payload)});
        cv.notify_all();
    }
    request next() {
        std::unique_lock lock(mutex);
        cv.wait_for(lock, 10s, [&] { return !requests.empty(); });
        if (requests.empty()) return {};
        auto r = requests.front();
        requests.erase(requests.begin());
        return r;
    }
    std::atomic<bool> subscribed{true};
    std::mutex mutex;
    std::condition_variable cv;
    std::vector<request> requests;
};

// Time the test moves: timeouts fire when it says, not after a wait.
class manual_timeouts final : public timeout_clock {
  public:
    std::uint64_t schedule(std::chrono::milliseconds after, std::function<void()> fire) override {
        std::lock_guard lock(mutex_);
        auto id = next_++;
        pending_.emplace(id, std::pair{now_ + after, std::move(fire)});
        return id;
    }
    void cancel(std::uint64_t id) override {
        std::lock_guard lock(mutex_);
        pending_.erase(id);
    }
    // Moves time on and fires what became due, in order.
    void advance(std::chrono::milliseconds by) {
        std::vector<std::function<void()>> due;
        {
            std::lock_guard lock(mutex_);
            now_ += by;
            for (auto it = pending_.begin(); it != pending_.end();) {
                if (it->second.first <= now_) {
                    due.push_back(std::move(it->second.second));
                    it = pending_.erase(it);
                } else {
                    ++it;
                }
            }
        }
        for (auto& fire : due) fire();
    }

  private:
    std::mutex mutex_;
    std::chrono::milliseconds now_{0};
    std::map<std::uint64_t, std::pair<std::chrono::milliseconds, std::function<void()>>> pending_;
    std::uint64_t next_ = 1;
};

class Methods : public ::testing::Test {
  protected:
    void SetUp() override {
        limits_.min_response_timeout = 1s;
        service_ = std::make_unique<method_service>(table_, clock_, limits_);
        thread_ = std::thread([this] { io_.run(); });
    }
    void TearDown() override {
        service_.reset();
        work_.reset();
        thread_.join();
    }
    void connect(const std::string& device, const std::string& module = "") {
        entry_ = table_.attach(
            device, module, [](const std::string&) {}, now(), channel_);
    }
    std::future<result<method_result>> call(std::string device, std::string name,
                                            std::string payload = "null",
                                            std::chrono::seconds response = 5s,
                                            std::chrono::seconds connect = 0s) {
        auto p = std::make_shared<std::promise<result<method_result>>>();
        auto f = p->get_future();
        method_call c{std::move(device),  "",       std::move(name),
                      std::move(payload), response, connect};
        service_->invoke(std::move(c),
                         [p](result<method_result> r) { p->set_value(std::move(r)); });
        return f;
    }

    boost::asio::io_context io_;
    boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_{
        io_.get_executor()};
    std::thread thread_;
    connections::connection_table table_;
    std::shared_ptr<recording_channel> channel_ = std::make_shared<recording_channel>();
    std::shared_ptr<manual_timeouts> clock_ = std::make_shared<manual_timeouts>();
    std::shared_ptr<connections::connection_table::entry> entry_;
    method_limits limits_;
    std::unique_ptr<method_service> service_;
};

TEST(ParseCall, DefaultsAndRanges) {
    auto c = parse_call(json::parse(R"({"methodName":"reboot","payload":{"a":1}})"), "d", "");
    ASSERT_TRUE(c) << c.error().message();
    EXPECT_EQ(c->name, "reboot");
    EXPECT_EQ(c->payload, R"({"a":1})");
    EXPECT_EQ(c->response_timeout, 30s);
    EXPECT_EQ(c->connect_timeout, 0s);
    c = parse_call(json::parse(R"({"methodName":"m"})"), "d", "");
    ASSERT_TRUE(c);
    EXPECT_EQ(c->payload, "null");
    c = parse_call(
        json::parse(
            R"({"methodName":"m","responseTimeoutInSeconds":300,"connectTimeoutInSeconds":300})"),
        "d", "");
    ASSERT_TRUE(c);
    EXPECT_EQ(c->response_timeout, 300s);
    for (auto bad :
         {R"({})", R"({"methodName":""})", R"({"methodName":5})", R"([1])",
          R"({"methodName":"m","responseTimeoutInSeconds":4})",
          R"({"methodName":"m","responseTimeoutInSeconds":301})",
          R"({"methodName":"m","connectTimeoutInSeconds":-1})",
          R"({"methodName":"m","connectTimeoutInSeconds":301})",
          R"({"methodName":"m","responseTimeoutInSeconds":"10"})", R"({"methodName":"a/b"})"}) {
        auto r = parse_call(json::parse(bad), "d", "");
        ASSERT_FALSE(r) << bad;
        EXPECT_EQ(r.error().code(), errc::argument_invalid) << bad;
    }
    json::object big{{"methodName", "m"}, {"payload", std::string(128 * 1024, 'x')}};
    auto r = parse_call(big, "d", "");
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code(), errc::message_too_large);
}

TEST_F(Methods, DeliversAndReturnsTheDevicesAnswer) {
    connect("dev1");
    auto f = call("dev1", "reboot", R"({"delay":1})");
    auto req = channel_->next();
    EXPECT_EQ(req.name, "reboot");
    EXPECT_EQ(req.payload, R"({"delay":1})");
    EXPECT_TRUE(service_->respond("dev1", "", req.rid, 201, R"({"done":true})"));
    auto r = f.get();
    ASSERT_TRUE(r) << r.error().message();
    EXPECT_EQ(r->status, 201);
    EXPECT_EQ(r->payload, json::parse(R"({"done":true})"));
    EXPECT_FALSE(service_->respond("dev1", "", req.rid, 200, "")) << "answered once only";
    EXPECT_EQ(service_->in_flight(), 0u);
}

TEST_F(Methods, ConcurrentCallsAreCorrelatedByRequestId) {
    connect("dev1");
    auto a = call("dev1", "a");
    auto b = call("dev1", "b");
    auto first = channel_->next(), second = channel_->next();
    EXPECT_NE(first.rid, second.rid);
    // Answer in the opposite order.
    EXPECT_TRUE(service_->respond("dev1", "", second.rid, 2, "\"second\""));
    EXPECT_TRUE(service_->respond("dev1", "", first.rid, 1, ""));
    auto ra = a.get(), rb = b.get();
    ASSERT_TRUE(ra && rb);
    EXPECT_EQ(first.name == "a" ? ra->status : rb->status, 1);
    EXPECT_EQ(first.name == "a" ? rb->payload : ra->payload, json::value("second"));
    EXPECT_TRUE((first.name == "a" ? ra->payload : rb->payload).is_null());
}

TEST_F(Methods, AnotherIdentityCannotAnswer) {
    connect("dev1");
    auto f = call("dev1", "m");
    auto req = channel_->next();
    EXPECT_FALSE(service_->respond("dev2", "", req.rid, 200, ""));
    EXPECT_FALSE(service_->respond("dev1", "mod", req.rid, 200, ""));
    EXPECT_TRUE(service_->respond("dev1", "", req.rid, 200, "not json"));
    auto r = f.get();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->payload, json::value("not json"));
}

TEST_F(Methods, OfflineOrUnsubscribedDeviceIsNotOnline) {
    auto r = call("dev1", "m").get();
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code(), errc::device_not_online);
    connect("dev1");
    channel_->subscribed = false;
    r = call("dev1", "m").get();
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code(), errc::device_not_online);
}

TEST_F(Methods, NoAnswerIsAGatewayTimeout) {
    connect("dev1");
    auto f = call("dev1", "m", "null", 10s);
    clock_->advance(9s);
    EXPECT_EQ(f.wait_for(0s), std::future_status::timeout) << "not yet";
    clock_->advance(1s);
    ASSERT_EQ(f.wait_for(0s), std::future_status::ready);
    auto r = f.get();
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code(), errc::gateway_timeout);
    EXPECT_EQ(service_->in_flight(), 0u);
}

TEST_F(Methods, ConnectTimeoutWaitsForTheDevice) {
    auto f = call("dev1", "m", "null", 5s, 5s);
    clock_->advance(4s);
    connect("dev1");
    service_->device_ready("dev1", "");
    clock_->advance(2s);  // past the connect timeout: it no longer applies once delivered
    auto req = channel_->next();
    EXPECT_EQ(req.name, "m");
    EXPECT_TRUE(service_->respond("dev1", "", req.rid, 200, "{}"));
    auto r = f.get();
    ASSERT_TRUE(r) << r.error().message();
    EXPECT_EQ(r->status, 200);
}

TEST_F(Methods, ConnectTimeoutExpires) {
    auto f = call("dev1", "m", "null", 5s, 30s);
    clock_->advance(30s);
    ASSERT_EQ(f.wait_for(0s), std::future_status::ready);
    auto r = f.get();
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code(), errc::device_not_online);
}

TEST_F(Methods, ACallWaitingForTheDeviceFollowsItToAnotherNode) {
    std::atomic<bool> there{false};
    std::vector<method_call> forwarded;
    service_->set_elsewhere([&](const method_call& c, method_service::completion& done) {
        if (!there) return false;
        forwarded.push_back(c);
        done(method_result{201, json::value("from there")});
        return true;
    });
    auto f = call("dev1", "m", "null", 5s, 30s);
    EXPECT_EQ(f.wait_for(0s), std::future_status::timeout) << "it waits for the device";
    EXPECT_TRUE(service_->waiting_for("dev1", ""));
    there = true;
    service_->device_ready_elsewhere("dev1", "");
    ASSERT_EQ(f.wait_for(0s), std::future_status::ready);
    auto r = f.get();
    ASSERT_TRUE(r) << r.error().message();
    EXPECT_EQ(r->status, 201);
    ASSERT_EQ(forwarded.size(), 1u);
    EXPECT_LE(forwarded[0].connect_timeout, 30s);
    EXPECT_GE(forwarded[0].connect_timeout, 1s);
    // Its local timeout is gone with it: nothing fires into a finished call.
    clock_->advance(60s);
    EXPECT_EQ(service_->in_flight(), 0u);
}

TEST_F(Methods, OversizedAnswerFailsTheCall) {
    connect("dev1");
    auto f = call("dev1", "m");
    auto req = channel_->next();
    EXPECT_TRUE(
        service_->respond("dev1", "", req.rid, 200, "\"" + std::string(128 * 1024, 'x') + "\""));
    auto r = f.get();
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code(), errc::message_too_large);
}

TEST_F(Methods, StopEndsEveryCall) {
    connect("dev1");
    auto a = call("dev1", "m");
    auto b = call("dev2", "m", "null", 5s, 60s);
    channel_->next();
    service_->stop();
    EXPECT_EQ(a.get().error().code(), errc::service_unavailable);
    EXPECT_EQ(b.get().error().code(), errc::service_unavailable);
    EXPECT_EQ(call("dev1", "m").get().error().code(), errc::service_unavailable);
}

}  // namespace
}  // namespace iothub::methods

namespace iothub::methods {
namespace {

TEST_F(Methods, AnUnregisteredIdentityIsNotFoundAndOnlyDisconnectedOnesAreLookedUp) {
    int lookups = 0;
    service_->set_registered([&](const std::string& d, const std::string&) -> result<void> {
        ++lookups;
        if (d == "ghost") return error(errc::device_not_found, "no such device");
        return {};
    });
    auto ghost = call("ghost", "m").get();
    ASSERT_FALSE(ghost);
    EXPECT_EQ(ghost.error().code(), errc::device_not_found);
    auto offline = call("dev1", "m").get();
    ASSERT_FALSE(offline);
    EXPECT_EQ(offline.error().code(), errc::device_not_online) << "registered, not connected";
    EXPECT_EQ(lookups, 2);
    connect("dev1");
    auto pending = call("dev1", "m", "null", 5s);
    auto req = channel_->next();
    ASSERT_TRUE(service_->respond("dev1", "", req.rid, 200, "{}"));
    EXPECT_TRUE(pending.get());
    EXPECT_EQ(lookups, 2) << "a connected identity exists: no lookup";
}

}  // namespace
}  // namespace iothub::methods
