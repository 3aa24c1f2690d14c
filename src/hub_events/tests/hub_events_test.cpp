// The envelope of each hub event, and the order of connection-state sequence numbers.
#include "hub_events/hub_events.hpp"

#include "storage/engine.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

#include <future>

namespace iothub::hub_events {
namespace {

std::string prop(const storage::property_list& l, std::string_view name) {
    for (const auto& [k, v] : l)
        if (k == name) return v;
    return "<absent>";
}

TEST(hub_events, twin_change_has_azures_envelope) {
    const auto at = sys_time(std::chrono::seconds(1700000000));
    auto e = twin_change("hub1", {"d1", ""}, "updateTwin", R"({"version":3})", at);
    EXPECT_EQ(e.body, R"({"version":3})");
    EXPECT_EQ(prop(e.application_properties, "hubName"), "hub1");
    EXPECT_EQ(prop(e.application_properties, "deviceId"), "d1");
    EXPECT_EQ(prop(e.application_properties, "opType"), "updateTwin");
    EXPECT_EQ(prop(e.application_properties, "iothub-message-schema"), "twinChangeNotification");
    EXPECT_EQ(prop(e.application_properties, "operationTimestamp"), format_iso8601(at));
    EXPECT_EQ(prop(e.application_properties, "moduleId"), "<absent>");
    EXPECT_EQ(prop(e.system_properties, "iothub-message-source"), "twinChangeEvents");
    EXPECT_EQ(prop(e.system_properties, "content-type"), "application/json");
    EXPECT_EQ(prop(e.system_properties, "content-encoding"), "utf-8");
    EXPECT_EQ(prop(e.system_properties, "user-id"), "hub1");
    EXPECT_EQ(prop(e.system_properties, "iothub-connection-device-id"), "d1");
    EXPECT_EQ(prop(e.system_properties, "correlation-id").size(), 36u);
}

TEST(hub_events, lifecycle_and_connection_state_of_a_module) {
    const auto at = sys_time(std::chrono::seconds(1700000000));
    auto created = lifecycle("hub1", {"d1", "m1"}, true, R"({"deviceId":"d1"})", at);
    EXPECT_EQ(prop(created.application_properties, "opType"), "createDeviceIdentity");
    EXPECT_EQ(prop(created.application_properties, "moduleId"), "m1");
    EXPECT_EQ(prop(created.system_properties, "iothub-connection-module-id"), "m1");
    EXPECT_EQ(prop(created.system_properties, "iothub-message-source"), "deviceLifecycleEvents");
    auto deleted = lifecycle("hub1", {"d1", ""}, false, "{}", at);
    EXPECT_EQ(prop(deleted.application_properties, "opType"), "deleteDeviceIdentity");
    EXPECT_EQ(prop(deleted.application_properties, "iothub-message-schema"),
              "deviceLifecycleNotification");

    auto c = connection_state("hub1", {"d1", ""}, false, std::string(64, '0'), at);
    EXPECT_EQ(prop(c.application_properties, "opType"), "deviceDisconnected");
    EXPECT_EQ(prop(c.system_properties, "iothub-message-source"), "deviceConnectionStateEvents");
    auto body = boost::json::parse(c.body).as_object();
    EXPECT_EQ(body.at("sequenceNumber").as_string(), std::string(64, '0'));
}

TEST(hub_events, sequence_numbers_increase_even_when_the_clock_goes_back) {
    auto engine = storage::open_memory();
    sys_time clock = sys_time(std::chrono::seconds(1700000000));
    publisher p(engine->hub_events(), "hub1", [&] { return clock; });
    std::string last;
    for (int i = 0; i < 100; ++i) {
        if (i == 50) clock -= std::chrono::hours(1);
        auto s = p.next_sequence_number();
        ASSERT_EQ(s.size(), 64u);
        EXPECT_GT(s, last);
        last = s;
    }
}

TEST(hub_events, raised_events_land_in_the_devices_partition) {
    auto engine = storage::open_memory();
    publisher p(engine->hub_events(), "hub1");
    p.connection_state({"dev-7", ""}, true);
    p.device_lifecycle({"dev-7", ""}, true, R"({"deviceId":"dev-7"})");
    const int part = storage::partition_for("dev-7", engine->hub_events().partition_count());
    auto read = engine->hub_events().read(part, 0, 10);
    ASSERT_TRUE(read);
    ASSERT_EQ(read->size(), 2u);
    EXPECT_EQ(prop((*read)[0].record.application_properties, "opType"), "deviceConnected");
    EXPECT_EQ(prop((*read)[1].record.application_properties, "opType"), "createDeviceIdentity");
}

TEST(hub_events, only_wanted_events_are_raised) {
    auto engine = storage::open_memory();
    publisher p(engine->hub_events(), "hub1");
    p.interest().set(connection_state_source, false);
    p.connection_state({"dev-7", ""}, true);
    p.device_lifecycle({"dev-7", ""}, true, R"({"deviceId":"dev-7"})");
    p.interest().set(lifecycle_source, false);
    p.interest().set(connection_state_source, true);
    p.device_lifecycle({"dev-7", ""}, false, R"({"deviceId":"dev-7"})");
    p.connection_state({"dev-7", ""}, false);
    const int part = storage::partition_for("dev-7", engine->hub_events().partition_count());
    auto read = engine->hub_events().read(part, 0, 10);
    ASSERT_TRUE(read);
    ASSERT_EQ(read->size(), 2u);
    EXPECT_EQ(prop((*read)[0].record.application_properties, "opType"), "createDeviceIdentity");
    EXPECT_EQ(prop((*read)[1].record.application_properties, "opType"), "deviceDisconnected");
}

}  // namespace
}  // namespace iothub::hub_events
