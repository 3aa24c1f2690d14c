#include "telemetry/telemetry.hpp"

#include "storage/engine.hpp"

#include <gtest/gtest.h>

namespace iothub::telemetry {
namespace {

std::string sys(const storage::event_record& e, std::string_view key) {
    for (const auto& [k, v] : e.system_properties)
        if (k == key) return v;
    return "<missing>";
}

TEST(Telemetry, StampsTheSenderAndLandsInTheDevicesPartition) {
    auto engine = storage::open_memory({4, {}});
    telemetry_service svc(engine->events());
    device_auth::device_principal who{"dev1", "mod1", "gen-7"};
    storage::event_record msg;
    msg.body = "hello";
    msg.system_properties = {{"message-id", "m1"}, {"iothub-connection-device-id", "spoofed"}};
    bool ok = false;
    svc.ingest(who, msg, [&](result<void> r) { ok = static_cast<bool>(r); });
    ASSERT_TRUE(ok);
    auto events = engine->events().read(svc.partition_of("dev1"), 0, 10);
    ASSERT_EQ(events->size(), 1u);
    const auto& e = events->front().record;
    EXPECT_EQ(sys(e, "iothub-connection-device-id"), "dev1") << "the device cannot spoof it";
    EXPECT_EQ(sys(e, "iothub-connection-module-id"), "mod1");
    EXPECT_EQ(sys(e, "iothub-connection-auth-generation-id"), "gen-7");
    EXPECT_EQ(sys(e, "iothub-connection-auth-method"),
              R"({"scope":"device","type":"sas","issuer":"iothub"})");
    EXPECT_EQ(sys(e, "iothub-message-source"), "Telemetry");
    EXPECT_EQ(sys(e, "message-id"), "m1");
}

TEST(Telemetry, TheSizeLimitCountsBodyAndProperties) {
    auto engine = storage::open_memory();
    telemetry_service svc(engine->events(), 100);
    storage::event_record fits;
    fits.body = std::string(90, 'x');
    fits.application_properties = {{"k", "v"}};
    EXPECT_TRUE(svc.check(fits));
    fits.application_properties.emplace_back("long", std::string(20, 'y'));
    auto r = svc.check(fits);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code(), errc::message_too_large);
    std::optional<result<void>> outcome;
    svc.ingest({"d"}, fits, [&](result<void> x) { outcome = x; });
    ASSERT_TRUE(outcome);
    EXPECT_FALSE(*outcome);
    EXPECT_TRUE(engine->events().info(svc.partition_of("d")).empty()) << "nothing was written";
}

TEST(Telemetry, ABatchIsCheckedMessageByMessageAndAsAWhole) {
    auto engine = storage::open_memory();
    telemetry_service svc(engine->events(), 100);
    storage::event_record m;
    m.body = std::string(40, 'x');
    EXPECT_TRUE(svc.check_batch({m, m}));
    auto whole = svc.check_batch({m, m, m});  // each fits, together they do not
    ASSERT_FALSE(whole);
    EXPECT_EQ(whole.error().code(), errc::message_too_large);
    EXPECT_NE(whole.error().message().find("The batch is 120 bytes"), std::string::npos);
    storage::event_record big;
    big.body = std::string(101, 'x');
    auto one = svc.check_batch({m, big});
    ASSERT_FALSE(one);
    EXPECT_NE(one.error().message().find("Message 2 of the batch"), std::string::npos);
    auto empty = svc.check_batch({});
    ASSERT_FALSE(empty);
    EXPECT_EQ(empty.error().code(), errc::argument_invalid);
}

}  // namespace
}  // namespace iothub::telemetry
