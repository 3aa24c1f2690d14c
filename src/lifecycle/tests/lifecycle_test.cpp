// What follows a registry change, with the real registry, twins, queues and connection table on
// the memory engine, and storage work run inline.
#include "lifecycle/lifecycle.hpp"

#include "storage/engine.hpp"
#include "twin/tests/wait.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

namespace iothub::lifecycle {
namespace {
namespace json = boost::json;

class Lifecycle : public ::testing::Test {
  protected:
    void SetUp() override {
        service_.on_access_ended([this](const std::string& d, const std::string& m) {
            ended_access_.push_back(m.empty() ? d : d + "/" + m);
        });
        auto dev = registry_.put_device(*registry::parse_device(json::object{}, "dev1"), {});
        ASSERT_TRUE(dev);
        ASSERT_TRUE(
            registry_.put_module(*registry::parse_module(json::object{}, "dev1", "mod1"), {}));
    }

    // A live connection whose end is recorded.
    void connect(const std::string& d, const std::string& m = "") {
        entries_.push_back(connections_.attach(
            d, m,
            [this, d, m](const std::string& why) { closed_[m.empty() ? d : d + "/" + m] = why; },
            now()));
    }

    std::unique_ptr<storage::engine> engine_ = storage::open_memory();
    registry::device_registry registry_{engine_->kv()};
    connections::connection_table connections_;
    connections::activity_records activity_{connections_, engine_->kv()};
    twin::twin_service twins_{engine_->kv(), registry_, engine_->hub_events(), "hub.example"};
    c2d::c2d_service c2d_{engine_->kv(), registry_, connections_};
    hub_events::publisher events_{engine_->hub_events(), "hub"};
    lifecycle_service service_{
        registry_,
        {twins_, c2d_, connections_, activity_, [](std::function<void()> fn) { fn(); }, &events_}};
    std::vector<std::shared_ptr<connections::connection_table::entry>> entries_;
    std::map<std::string, std::string> closed_;
    std::vector<std::string> ended_access_;
};

// Lifecycle events for dev2, in the order they were raised.
std::vector<std::pair<std::string, json::object>> lifecycle_events(storage::event_log& log,
                                                                   const std::string& device) {
    std::vector<std::pair<std::string, json::object>> out;
    auto read = log.read(storage::partition_for(device, log.partition_count()), 0, 100);
    for (const auto& e : *read) {
        std::string op, who;
        for (const auto& [k, v] : e.record.application_properties) {
            if (k == "opType") op = v;
            if (k == "deviceId") who = v;
        }
        if (who == device && op.find("DeviceIdentity") != std::string::npos)
            out.emplace_back(op, json::parse(e.record.body).as_object());
    }
    return out;
}

TEST_F(Lifecycle, CreatingAndDeletingRaiseLifecycleEventsWithTheTwin) {
    ASSERT_TRUE(registry_.put_device(*registry::parse_device(json::object{}, "dev2"), {}));
    ASSERT_TRUE(
        twin::waiting::update(twins_, "dev2", "", json::object{{"tags", {{"room", 7}}}}, {}));
    ASSERT_TRUE(registry_.delete_device("dev2", {}));
    auto seen = lifecycle_events(engine_->hub_events(), "dev2");
    ASSERT_EQ(seen.size(), 2u);
    EXPECT_EQ(seen[0].first, "createDeviceIdentity");
    EXPECT_EQ(seen[0].second.at("deviceId").as_string(), "dev2");
    EXPECT_EQ(seen[1].first, "deleteDeviceIdentity");
    EXPECT_EQ(seen[1].second.at("tags").at("room").as_int64(), 7) << "the twin as it was";
}

TEST_F(Lifecycle, DeletingADeviceEndsItsAndItsModulesConnectionsAndDropsItsState) {
    connect("dev1");
    connect("dev1", "mod1");
    ASSERT_TRUE(twin::waiting::update(twins_, "dev1", "", json::object{{"tags", {{"a", 1}}}}, {}));
    c2d::message m;
    m.body = "queued";
    ASSERT_TRUE(c2d_.send("dev1", m, now()));
    entries_.front()->touch(now());
    ASSERT_TRUE(activity_.flush());

    ASSERT_TRUE(registry_.delete_device("dev1", {}));
    EXPECT_EQ(closed_["dev1"], "the identity was deleted");
    EXPECT_EQ(closed_["dev1/mod1"], "the identity was deleted");
    EXPECT_NE(std::find(ended_access_.begin(), ended_access_.end(), "dev1"), ended_access_.end());
    EXPECT_FALSE(*engine_->kv().get(twin::twin_key("dev1", ""))) << "the twin record is gone";
    EXPECT_EQ(c2d_.depth("dev1"), 0u) << "so is the queue";
    EXPECT_FALSE(*engine_->kv().get("activity/dev1")) << "and the activity record";
}

TEST_F(Lifecycle, DisablingOrNewKeysEndTheConnectionButKeepTheState) {
    connect("dev1");
    auto spec = registry::parse_device(json::object{{"status", "disabled"}}, "dev1");
    ASSERT_TRUE(registry_.put_device(*spec, registry::if_match::parse("*")));
    EXPECT_EQ(closed_["dev1"], "the device was disabled");

    closed_.clear();
    connect("dev1", "mod1");
    auto keys = registry::parse_module(
        json::object{{"authentication",
                      {{"symmetricKey",
                        {{"primaryKey", "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="},
                         {"secondaryKey", "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}}}}}},
        "dev1", "mod1");
    ASSERT_TRUE(keys);
    ASSERT_TRUE(registry_.put_module(*keys, registry::if_match::parse("*")));
    EXPECT_EQ(closed_["dev1/mod1"], "the identity's credentials changed");
    EXPECT_EQ(closed_.count("dev1"), 0u) << "a module's keys are its own";
}

TEST_F(Lifecycle, OtherChangesEndNothing) {
    connect("dev1");
    auto spec = registry::parse_device(json::object{{"status", "enabled"}}, "dev1");
    ASSERT_TRUE(registry_.put_device(*spec, registry::if_match::parse("*")));
    EXPECT_TRUE(closed_.empty());
    EXPECT_TRUE(ended_access_.empty());
}

}  // namespace
}  // namespace iothub::lifecycle
