// Allocation: weighted hashing (spread by weight, stable, moving few devices when a hub is
// linked), candidates (iotHubs, applyAllocationPolicy), static, custom webhook requests and
// answers, updateHubAssignment; and the linked hub store's rules.
#include "dps/allocation.hpp"

#include "dps/registrations.hpp"
#include "storage/engine.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

#include <map>

namespace iothub::dps {
namespace {
namespace json = boost::json;

linked_hub hub(std::string host, int weight = 1, bool apply = true) {
    return {std::move(host),
            "HostName=x;SharedAccessKeyName=p;SharedAccessKey=AAAA",
            weight,
            apply,
            {}};
}
linked_hub self(std::string host) {
    return {std::move(host), {}, 1, true, {}};
}

const webhook_function no_webhook = [](std::string_view,
                                       const json::object&) -> result<json::object> {
    return error(errc::service_unavailable, "no webhook here");
};

std::string allocate_to(const json::object& enrollment, std::string_view id,
                        const std::vector<linked_hub>& hubs, std::string current = {}) {
    const json::value payload;
    allocation_input in{enrollment, enrollment_kind::group, id, false, payload, current, {}};
    auto a = allocate(in, hubs, no_webhook);
    if (!a) return "error: " + a.error().message();
    return a->hub.host_name;
}

TEST(Allocation, HashingSpreadsByWeightAndIsStable) {
    const json::object e{{"allocationPolicy", "hashed"}};
    const std::vector<linked_hub> hubs{self("a"), hub("b", 3)};
    std::map<std::string, int> counts;
    for (int i = 0; i < 4000; ++i) ++counts[allocate_to(e, "dev-" + std::to_string(i), hubs)];
    EXPECT_NEAR(counts["b"], 3000, 150) << "weight 3 of 4";
    EXPECT_NEAR(counts["a"], 1000, 150);
    EXPECT_EQ(allocate_to(e, "dev-7", hubs), allocate_to(e, "DEV-7", hubs))
        << "registration ids compare ignoring case";

    // Linking a third hub moves only what it takes over.
    auto more = hubs;
    more.push_back(hub("c", 4));
    int moved = 0, moved_elsewhere = 0;
    for (int i = 0; i < 4000; ++i) {
        const auto id = "dev-" + std::to_string(i);
        const auto before = allocate_to(e, id, hubs), after = allocate_to(e, id, more);
        if (before != after) ++moved;
        if (before != after && after != "c") ++moved_elsewhere;
    }
    EXPECT_NEAR(moved, 2000, 150) << "the new hub takes half (weight 4 of 8)";
    EXPECT_EQ(moved_elsewhere, 0);
}

TEST(Allocation, CandidatesFollowIotHubsAndApplyAllocationPolicy) {
    const std::vector<linked_hub> hubs{self("a"), hub("b", 1, false), hub("c")};
    const json::object hashed{{"allocationPolicy", "hashed"}};
    for (int i = 0; i < 50; ++i) EXPECT_NE(allocate_to(hashed, "d" + std::to_string(i), hubs), "b");
    const json::object named{{"allocationPolicy", "hashed"}, {"iotHubs", json::array{"B"}}};
    EXPECT_EQ(allocate_to(named, "d1", hubs), "b") << "an enrollment may name a hub kept out";
    const json::object unknown{{"iotHubs", json::array{"zzz"}}};
    EXPECT_EQ(allocate_to(unknown, "d1", hubs),
              "error: None of the enrollment's iotHubs is a linked hub.");
    const std::vector<linked_hub> none{hub("b", 1, false)};
    EXPECT_NE(allocate_to(hashed, "d1", none).find("error:"), std::string::npos);
}

TEST(Allocation, StaticAndKeepingTheAssignment) {
    const std::vector<linked_hub> hubs{self("a"), hub("b"), hub("c")};
    EXPECT_EQ(
        allocate_to({{"allocationPolicy", "static"}, {"iotHubs", json::array{"c"}}}, "d", hubs),
        "c");
    EXPECT_EQ(allocate_to({{"allocationPolicy", "static"}, {"iotHubHostName", "b"}}, "d", hubs),
              "b");
    EXPECT_NE(allocate_to({{"allocationPolicy", "static"}}, "d", hubs).find("error:"),
              std::string::npos);
    const json::object keep{{"allocationPolicy", "static"},
                            {"iotHubs", json::array{"c"}},
                            {"reprovisionPolicy", {{"updateHubAssignment", false}}}};
    EXPECT_EQ(allocate_to(keep, "d", hubs, "b"), "b") << "stays while its hub is linked";
    EXPECT_EQ(allocate_to(keep, "d", hubs, "gone"), "c");
}

TEST(Allocation, CustomSendsTheRequestAndTakesTheAnswer) {
    const std::vector<linked_hub> hubs{self("a"), hub("b")};
    const json::object e{
        {"registrationId", "r1"},
        {"allocationPolicy", "custom"},
        {"attestation", {{"type", "symmetricKey"}, {"symmetricKey", {{"primaryKey", "SECRET"}}}}},
        {"customAllocationDefinition", {{"webhookUrl", "https://fn.example/alloc"}}}};
    json::object seen;
    std::string url;
    webhook_function webhook = [&](std::string_view u,
                                   const json::object& r) -> result<json::object> {
        url = std::string(u);
        seen = r;
        return json::object{{"IoTHubHostName", "B"},
                            {"initialTwin", {{"tags", {{"t", 1}}}}},
                            {"payload", {{"hello", "device"}}}};
    };
    const json::value payload{{"model", "x1"}};
    allocation_input in{e, enrollment_kind::individual, "r1", false, payload, "a", "r1"};
    auto a = allocate(in, hubs, webhook);
    ASSERT_TRUE(a) << a.error().message();
    EXPECT_EQ(url, "https://fn.example/alloc");
    EXPECT_EQ(a->hub.host_name, "b") << "the answer's host is matched ignoring case";
    EXPECT_EQ(json::serialize(a->payload), R"({"hello":"device"})");
    ASSERT_TRUE(a->initial_twin);
    EXPECT_EQ(seen.at("individualEnrollment").at("attestation"),
              (json::object{{"type", "symmetricKey"}}));
    const auto& context = seen.at("deviceRuntimeContext").as_object();
    EXPECT_EQ(context.at("registrationId"), "r1");
    EXPECT_EQ(context.at("currentIotHubHostName"), "a");
    EXPECT_EQ(context.at("payload"), payload);
    EXPECT_TRUE(context.at("symmetricKey").is_object());
    EXPECT_EQ(seen.at("linkedHubs"), (json::array{"a", "b"}));

    webhook = [](std::string_view, const json::object&) -> result<json::object> {
        return json::object{{"iotHubHostName", "elsewhere"}};
    };
    auto wrong = allocate(in, hubs, webhook);
    ASSERT_FALSE(wrong);
    EXPECT_NE(wrong.error().message().find("elsewhere"), std::string::npos);
    EXPECT_FALSE(allocate(in, hubs, no_webhook));
}

TEST(LinkedHubs, StoreRules) {
    auto engine = storage::open_memory();
    linked_hub_store store(engine->kv(), "hub-a");
    auto only = store.list();
    ASSERT_TRUE(only);
    ASSERT_EQ(only->size(), 1u);
    EXPECT_TRUE(only->front().is_self());

    const std::string cs = "HostName=hub-b;SharedAccessKeyName=iothubowner;SharedAccessKey=AAAA";
    auto b = store.put({{"connectionString", cs}, {"allocationWeight", 5}}, "HUB-B");
    ASSERT_TRUE(b) << b.error().message();
    EXPECT_EQ(b->allocation_weight, 5);
    EXPECT_FALSE(store.put({{"connectionString", cs}}, "hub-c")) << "host differs";
    EXPECT_FALSE(store.put({{"connectionString", "HostName=hub-c;SharedAccessKey=AAAA"}}, "hub-c"))
        << "no policy name";
    EXPECT_FALSE(store.put({{"connectionString", cs}, {"allocationWeight", 0}}, "hub-b"));
    EXPECT_FALSE(store.put({{"allocationWeight", 2}}, "hub-c")) << "a new link needs its string";
    auto own = store.put({{"applyAllocationPolicy", false}}, "hub-a");
    ASSERT_TRUE(own);
    EXPECT_TRUE(own->is_self());

    auto all = store.list();
    ASSERT_TRUE(all);
    ASSERT_EQ(all->size(), 2u);
    EXPECT_EQ((*all)[0].host_name, "hub-a");
    EXPECT_FALSE((*all)[0].apply_allocation_policy);
    EXPECT_EQ((*all)[1].host_name, "hub-b");
    EXPECT_EQ(json::serialize(describe((*all)[1]).at("connectionString")),
              R"("HostName=hub-b;SharedAccessKeyName=iothubowner;SharedAccessKey=****")");

    EXPECT_EQ(store.remove("hub-a").error().code(), errc::argument_invalid);
    EXPECT_TRUE(store.remove("Hub-B"));
    EXPECT_EQ(store.remove("hub-b").error().code(), errc::not_found);
}

TEST(LinkedHubs, AHubThatCannotBeReachedIsHeldBackInsteadOfCalledAgain) {
    // Nothing on this loopback address serves the hub's API: the first call fails on the
    // network, the next fails at once, saying when the hub is called again.
    linked_hub gone{"127.0.0.77",
                    "HostName=127.0.0.77;SharedAccessKeyName=o;SharedAccessKey=AAAA",
                    1,
                    true,
                    {}};
    device_assignment a;
    a.hub = gone;
    a.device_id = "d1";
    auto first = assign_in_linked_hub(gone, a, {});
    ASSERT_FALSE(first);
    EXPECT_EQ(first.error().code(), errc::service_unavailable);
    EXPECT_EQ(first.error().message().find("called again"), std::string::npos);
    auto second = assign_in_linked_hub(gone, a, {});
    ASSERT_FALSE(second);
    EXPECT_EQ(second.error().code(), errc::service_unavailable);
    EXPECT_NE(second.error().message().find("called again"), std::string::npos)
        << second.error().message();
}

TEST(Assignment, TwinPatchKeepsTagsAndDesiredPropertiesOnly) {
    const auto twin = json::parse(R"({"deviceId":"d","etag":"x","tags":{"a":1},
        "properties":{"desired":{"m":2,"$metadata":{},"$version":4},"reported":{"r":3}}})")
                          .as_object();
    EXPECT_EQ(twin_patch(twin),
              json::parse(R"({"tags":{"a":1},"properties":{"desired":{"m":2}}})").as_object());
    // A webhook's twin may be anything: what is not an object is left out, never read as one.
    EXPECT_TRUE(twin_patch(json::parse(R"({"tags":"t","properties":"p"})").as_object()).empty());
    EXPECT_TRUE(twin_patch(json::parse(R"({"properties":{"desired":[1]}})").as_object()).empty());
}

TEST(RegistrationPayload, ComesFromTheRequestBody) {
    EXPECT_EQ(json::serialize(registration_payload(R"({"registrationId":"r","payload":{"a":1}})")),
              R"({"a":1})");
    EXPECT_TRUE(registration_payload(R"({"registrationId":"r"})").is_null());
    EXPECT_TRUE(registration_payload(" ").is_null());
    EXPECT_TRUE(registration_payload("[1]").is_null());
}

}  // namespace
}  // namespace iothub::dps
