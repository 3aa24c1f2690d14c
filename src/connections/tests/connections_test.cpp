#include "connections/connections.hpp"

#include <gtest/gtest.h>

namespace iothub::connections {
namespace {

const sys_time t0 = sys_time(std::chrono::seconds(1700000000));

registry::identity identity(std::string d, std::string m = {}) {
    registry::identity id;
    id.device_id = std::move(d);
    id.module_id = std::move(m);
    return id;
}

TEST(Connections, ANewConnectionReplacesTheOld) {
    connection_table t;
    std::vector<std::string> closed;
    auto first = t.attach(
        "d", "", [&](const std::string& r) { closed.push_back("first:" + r); }, t0);
    EXPECT_EQ(t.connected_devices(), 1u);
    auto second = t.attach(
        "d", "", [&](const std::string& r) { closed.push_back("second:" + r); }, t0);
    ASSERT_EQ(closed.size(), 1u);
    EXPECT_EQ(closed[0].rfind("first:", 0), 0u);
    EXPECT_EQ(t.connected_devices(), 1u);
    t.detach(first, t0);  // the replaced one ending later changes nothing
    EXPECT_TRUE(t.live(identity("d")).connected);
    t.detach(second, t0 + std::chrono::seconds(5));
    auto live = t.live(identity("d"));
    EXPECT_FALSE(live.connected);
    EXPECT_EQ(live.connection_state_updated, t0 + std::chrono::seconds(5));
    EXPECT_EQ(t.connected_devices(), 0u);
}

TEST(Connections, StateChangesAreObservedInOrderAndOncePerTransition) {
    connection_table t;
    std::vector<std::string> seen;
    t.on_state_change([&](const std::string& d, const std::string& m, bool connected) {
        seen.push_back(d + (m.empty() ? "" : "/" + m) + (connected ? " up" : " down"));
    });
    auto first = t.attach(
        "d", "", [](const std::string&) {}, t0);
    auto second = t.attach(
        "d", "", [](const std::string&) {}, t0);  // takeover
    t.detach(first, t0);                          // superseded: nothing
    auto module = t.attach(
        "d", "m", [](const std::string&) {}, t0);
    t.detach(second, t0);
    t.detach(second, t0);  // twice: once only
    t.detach(module, t0);
    EXPECT_EQ(seen,
              (std::vector<std::string>{"d up", "d down", "d up", "d/m up", "d down", "d/m down"}));
}

TEST(Connections, AConnectionOnAnotherNodeShowsInTheLiveFields) {
    using std::chrono::seconds;
    connection_table t;
    t.connected_elsewhere("d", "", true, t0 + seconds(1));
    auto live = t.live(identity("d"));
    EXPECT_TRUE(live.connected);
    EXPECT_EQ(live.connection_state_updated, t0 + seconds(1));
    EXPECT_EQ(t.connected_devices(), 0u) << "only this node's connections count here";
    t.connected_elsewhere("d", "", false, t0 + seconds(2));
    live = t.live(identity("d"));
    EXPECT_FALSE(live.connected);
    EXPECT_EQ(live.connection_state_updated, t0 + seconds(2));

    // The device moves here; the other node's record ending afterwards changes nothing.
    t.connected_elsewhere("d", "", true, t0 + seconds(3));
    auto here = t.attach(
        "d", "", [](const std::string&) {}, t0 + seconds(4));
    t.connected_elsewhere("d", "", false, t0 + seconds(5));
    EXPECT_TRUE(t.live(identity("d")).connected);
    EXPECT_EQ(t.live(identity("d")).connection_state_updated, t0 + seconds(4));
    t.detach(here, t0 + seconds(6));
    EXPECT_FALSE(t.live(identity("d")).connected);

    // Another node takes it over: connected there even before this one has ended.
    here = t.attach(
        "d", "", [](const std::string&) {}, t0 + seconds(7));
    t.connected_elsewhere("d", "", true, t0 + seconds(8));
    t.detach(here, t0 + seconds(9));
    EXPECT_TRUE(t.live(identity("d")).connected);
}

TEST(Connections, LastActivityFollowsTouches) {
    connection_table t;
    auto e = t.attach(
        "d", "", [](const std::string&) {}, t0);
    e->touch(t0 + std::chrono::seconds(3));
    EXPECT_EQ(t.live(identity("d")).last_activity, t0 + std::chrono::seconds(3));
    t.detach(e, t0 + std::chrono::seconds(9));
    EXPECT_EQ(t.live(identity("d")).last_activity, t0 + std::chrono::seconds(3));
    EXPECT_FALSE(t.live(identity("never")).last_activity);
}

TEST(Connections, ClosingADeviceCanTakeItsModules) {
    connection_table t;
    std::vector<std::string> closed;
    auto note = [&](std::string who) {
        return [&, who](const std::string&) { closed.push_back(who); };
    };
    auto d = t.attach("d", "", note("d"), t0);
    auto m = t.attach("d", "m", note("d/m"), t0);
    auto other = t.attach("dx", "", note("dx"), t0);
    EXPECT_EQ(t.connected_devices(), 2u) << "modules are not devices";
    t.close("d", "", "disabled", false);
    EXPECT_EQ(closed, (std::vector<std::string>{"d"}));
    t.close("d", "", "deleted", true);
    EXPECT_EQ(closed, (std::vector<std::string>{"d", "d", "d/m"}));
    EXPECT_TRUE(t.live(identity("d", "m")).connected) << "closing asks; detach records the end";
    EXPECT_EQ(t.find("dx", "")->device_id, "dx");
}

}  // namespace
}  // namespace iothub::connections

#include "connections/activity.hpp"
#include "storage/engine.hpp"

namespace iothub::connections {
namespace {

TEST(Activity, LastActivitySurvivesARestartAndOnlyMovesAreWritten) {
    auto engine = storage::open_memory();
    {
        connection_table t;
        activity_records records(t, engine->kv());
        auto e = t.attach(
            "dev1", "", [](const std::string&) {}, t0);
        e->touch(t0 + std::chrono::seconds(5));
        t.touch("dev2", "m", t0 + std::chrono::seconds(7));  // a module that polls
        ASSERT_TRUE(records.flush());
        EXPECT_EQ(engine->kv().scan("activity/", "", 10)->size(), 2u);
        EXPECT_TRUE(t.changed_activity().empty()) << "nothing moved since";
        t.detach(e, t0 + std::chrono::seconds(9));
    }
    connection_table after;
    activity_records records(after, engine->kv());
    ASSERT_TRUE(records.load());
    EXPECT_EQ(after.live(identity("dev1")).last_activity, t0 + std::chrono::seconds(5));
    EXPECT_EQ(after.live(identity("dev2", "m")).last_activity, t0 + std::chrono::seconds(7));
    EXPECT_FALSE(after.live(identity("dev1")).connected);
    records.forget("dev1", "");
    EXPECT_FALSE(*engine->kv().get("activity/dev1"));
}

}  // namespace
}  // namespace iothub::connections
