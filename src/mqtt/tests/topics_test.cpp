#include "mqtt/topics.hpp"

#include <gtest/gtest.h>

namespace iothub::mqtt {
namespace {

TEST(Username, EverySdkForm) {
    auto node = parse_username(
        "localhost:18883/dev1/"
        "?api-version=2021-04-12&DeviceClientType=azure-iot-device%2F1.18.4%20("
        "node%20v20)&model-id=dtmi%3Acom%3Aexample%3BThermostat%3B1");
    ASSERT_TRUE(node);
    EXPECT_EQ(node->host, "localhost:18883");
    EXPECT_EQ(node->device_id, "dev1");
    EXPECT_EQ(node->module_id, "");
    EXPECT_EQ(node->api_version, "2021-04-12");
    EXPECT_EQ(node->client_type, "azure-iot-device/1.18.4 (node v20)");
    EXPECT_EQ(node->model_id, "dtmi:com:example;Thermostat;1");
    auto module =
        parse_username("hub.example/dev5/modA/?api-version=2020-09-30&DeviceClientType=c");
    ASSERT_TRUE(module);
    EXPECT_EQ(module->device_id, "dev5");
    EXPECT_EQ(module->module_id, "modA");
    auto old = parse_username("hub.example/dev1/api-version=2016-11-14");
    ASSERT_TRUE(old);
    EXPECT_EQ(old->device_id, "dev1");
    EXPECT_EQ(old->api_version, "2016-11-14");
    auto bare = parse_username("hub.example/dev1");
    ASSERT_TRUE(bare);
    EXPECT_EQ(bare->device_id, "dev1");
    EXPECT_FALSE(parse_username("nohost"));
    EXPECT_FALSE(parse_username("/dev1/"));
    EXPECT_FALSE(parse_username("h//?api-version=1"));
    EXPECT_FALSE(parse_username("h/a/b/c/?x=1"));
}

TEST(PropertyBag, DecodesBothDollarFormsAndEscapes) {
    auto bag = parse_property_bag("%24.mid=m%201&$.ct=application%2Fjson&alert=true&empty=&flag");
    ASSERT_EQ(bag.size(), 5u);
    EXPECT_EQ(bag[0], (std::pair<std::string, std::string>{"$.mid", "m 1"}));
    EXPECT_EQ(bag[1], (std::pair<std::string, std::string>{"$.ct", "application/json"}));
    EXPECT_EQ(bag[2].second, "true");
    EXPECT_EQ(bag[3], (std::pair<std::string, std::string>{"empty", ""}));
    EXPECT_EQ(bag[4], (std::pair<std::string, std::string>{"flag", ""}));
    EXPECT_TRUE(parse_property_bag("").empty());
}

TEST(PropertyBag, ToleratesRawCharactersFromClientsThatDoNotEncode) {
    auto bag = parse_property_bag("pct=50%&plus=a+b&bad=%zz");
    EXPECT_EQ(bag[0].second, "50%");
    EXPECT_EQ(bag[1].second, "a+b");
    EXPECT_EQ(bag[2].second, "%zz");
}

TEST(PropertyBag, EncodesSystemNamesInTheFormTheCSdkReads) {
    EXPECT_EQ(encode_property_bag(
                  {{"$.mid", "a b"}, {"$.to", "/devices/d/messages/devicebound"}, {"k", "v&w"}}),
              "%24.mid=a%20b&%24.to=%2Fdevices%2Fd%2Fmessages%2Fdevicebound&k=v%26w");
    auto round = parse_property_bag(encode_property_bag({{"x=y", "1&2"}}));
    EXPECT_EQ(round[0], (std::pair<std::string, std::string>{"x=y", "1&2"}));
}

TEST(Topics, TelemetryForTheOwnIdentityOnly) {
    auto t = classify_publish("devices/d#1/messages/events/a=1&%24.mid=x", "d#1", "");
    EXPECT_EQ(t.what, topic_info::kind::telemetry);
    EXPECT_EQ(t.bag, "a=1&%24.mid=x");
    EXPECT_EQ(classify_publish("devices/d1/messages/events/", "d1", "").what,
              topic_info::kind::telemetry);
    EXPECT_EQ(classify_publish("devices/d1/messages/events", "d1", "").bag, "");
    EXPECT_EQ(classify_publish("devices/d2/messages/events/", "d1", "").what,
              topic_info::kind::other_identity);
    EXPECT_EQ(classify_publish("devices/d10/messages/events/", "d1", "").what,
              topic_info::kind::other_identity);
    EXPECT_EQ(classify_publish("devices/d1/modules/m/messages/events/", "d1", "").what,
              topic_info::kind::other_identity)
        << "a device may not publish as its module";
    EXPECT_EQ(classify_publish("devices/d1/messages/devicebound/", "d1", "").what,
              topic_info::kind::unknown);
    EXPECT_EQ(classify_publish("random/topic", "d1", "").what, topic_info::kind::unknown);
}

TEST(Topics, ModuleTelemetryWithNodesTrailingSlash) {
    auto t = classify_publish("devices/d1/modules/m1/messages/events/%24.on=out1&k=v/", "d1", "m1");
    EXPECT_EQ(t.what, topic_info::kind::telemetry);
    EXPECT_EQ(t.bag, "%24.on=out1&k=v");
    EXPECT_EQ(classify_publish("devices/d1/messages/events/", "d1", "m1").what,
              topic_info::kind::other_identity);
    EXPECT_EQ(classify_publish("devices/d1/modules/m2/messages/events/", "d1", "m1").what,
              topic_info::kind::other_identity);
}

TEST(Topics, TwinAndMethodTopics) {
    auto get = classify_publish("$iothub/twin/GET/?$rid=42", "d", "");
    EXPECT_EQ(get.what, topic_info::kind::twin_get);
    EXPECT_EQ(get.rid, "42");
    auto patch =
        classify_publish("$iothub/twin/PATCH/properties/reported/?$rid=a-b&$version=3", "d", "");
    EXPECT_EQ(patch.what, topic_info::kind::twin_patch_reported);
    EXPECT_EQ(patch.rid, "a-b");
    EXPECT_EQ(patch.version, 3u);
    auto res = classify_publish("$iothub/methods/res/-7/?$rid=9", "d", "");
    EXPECT_EQ(res.what, topic_info::kind::method_response);
    EXPECT_EQ(res.status, -7);
    EXPECT_EQ(classify_publish("$iothub/methods/res/abc/?$rid=9", "d", "").what,
              topic_info::kind::unknown);
    EXPECT_EQ(classify_publish("$iothub/twin/GET/", "d", "").what, topic_info::kind::unknown);
}

TEST(Topics, SubscriptionFilters) {
    EXPECT_EQ(classify_filter("devices/d1/messages/devicebound/#", "d1", ""), filter_kind::c2d);
    EXPECT_EQ(classify_filter("devices/d2/messages/devicebound/#", "d1", ""), filter_kind::unknown);
    EXPECT_EQ(classify_filter("devices/+/messages/devicebound/#", "d1", ""), filter_kind::unknown);
    EXPECT_EQ(classify_filter("$iothub/twin/res/#", "d1", ""), filter_kind::twin_responses);
    EXPECT_EQ(classify_filter("$iothub/twin/PATCH/properties/desired/#", "d1", ""),
              filter_kind::twin_desired);
    EXPECT_EQ(classify_filter("$iothub/methods/POST/#", "d1", ""), filter_kind::methods);
    EXPECT_EQ(classify_filter("devices/d1/modules/m/inputs/#", "d1", "m"),
              filter_kind::module_inputs);
    EXPECT_EQ(classify_filter("devices/d1/modules/m/#", "d1", "m"), filter_kind::module_inputs);
    EXPECT_EQ(classify_filter("#", "d1", ""), filter_kind::unknown);
}

TEST(Telemetry, SystemPropertiesMapToTheirWireNames) {
    auto e = telemetry_event(
        "{}",
        parse_property_bag("%24.mid=m1&%24.cid=c1&%24.ct=application%2Fjson&%24.ce=utf-8&%24.uid=u&"
                           "%24.ctime=2024-01-01T00%3A00%3A00Z&%24.on=out&%24.weird=1&temp=21"));
    auto sys = [&](std::string_view k) {
        for (auto& [n, v] : e.system_properties)
            if (n == k) return v;
        return std::string("<missing>");
    };
    EXPECT_EQ(sys("message-id"), "m1");
    EXPECT_EQ(sys("correlation-id"), "c1");
    EXPECT_EQ(sys("content-type"), "application/json");
    EXPECT_EQ(sys("content-encoding"), "utf-8");
    EXPECT_EQ(sys("user-id"), "u");
    EXPECT_EQ(sys("iothub-outputname"), "out");
    EXPECT_EQ(sys("$.weird"), "1");
    EXPECT_EQ(e.application_properties,
              (storage::property_list{{"iothub-creation-time-utc", "2024-01-01T00:00:00Z"},
                                      {"temp", "21"}}));
    EXPECT_EQ(e.body, "{}");
}

}  // namespace
}  // namespace iothub::mqtt

namespace iothub::mqtt {
namespace {

TEST(DpsTopics, UsernamesOfTheProvisioningService) {
    auto u = parse_dps_username(
        "0ne00ABCDEF/registrations/dev-1/api-version=2019-03-31&ClientVersion=azure-iot%2F1");
    ASSERT_TRUE(u);
    EXPECT_EQ(u->id_scope, "0ne00ABCDEF");
    EXPECT_EQ(u->registration_id, "dev-1");
    EXPECT_EQ(u->api_version, "2019-03-31");
    // A hub device's username is not the provisioning service's.
    EXPECT_FALSE(parse_dps_username("hub.example/dev-1/?api-version=2021-04-12"));
    EXPECT_FALSE(parse_dps_username("hub.example/registrations/?api-version=1"));
    EXPECT_FALSE(parse_dps_username("/registrations/dev-1/api-version=1"));
    EXPECT_FALSE(parse_dps_username("0ne/registrations/dev-1"));
}

TEST(DpsTopics, RegisterAndPollPublishes) {
    auto r = classify_dps_publish("$dps/registrations/PUT/iotdps-register/?$rid=7");
    EXPECT_EQ(r.what, dps_publish::kind::register_device);
    EXPECT_EQ(r.rid, "7");
    auto p = classify_dps_publish(
        "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=8&operationId=5.ab.cd");
    EXPECT_EQ(p.what, dps_publish::kind::operation_status);
    EXPECT_EQ(p.operation_id, "5.ab.cd");
    EXPECT_EQ(
        classify_dps_publish("$dps/registrations/GET/iotdps-get-operationstatus/?$rid=8").what,
        dps_publish::kind::unknown)
        << "a poll names its operation";
    EXPECT_EQ(classify_dps_publish("$dps/registrations/PUT/iotdps-register/").what,
              dps_publish::kind::unknown);
    EXPECT_EQ(classify_dps_publish("devices/d/messages/events/").what, dps_publish::kind::unknown);
}

}  // namespace
}  // namespace iothub::mqtt
