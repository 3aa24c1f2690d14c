#include "device_api/messages.hpp"

#include "common/encoding.hpp"

#include <gtest/gtest.h>

namespace iothub::device_api {
namespace {

std::string prop(const storage::property_list& l, std::string_view key) {
    for (const auto& [k, v] : l)
        if (k == key) return v;
    return "<missing>";
}

TEST(DeviceMessages, HeadersMapToPropertiesWhateverTheirCase) {
    http::request req;
    req.body = "{\"t\":1}";
    // The server lower-cases names; system_property_for takes any case anyway.
    req.headers = {{"iothub-app-alert", "true"},
                   {"iothub-messageid", "m-1"},
                   {"iothub-correlationid", "c-1"},
                   {"iothub-userid", "u"},
                   {"iothub-to", "/devices/d1/messages/events"},
                   {"iothub-expiry", "2030-01-02T03:04:05Z"},
                   {"iothub-contenttype", "application/json"},
                   {"iothub-contentencoding", "utf-8"},
                   {"iothub-interface-id", "urn:x"},
                   {"dt-subject", "thermo"},
                   {"iothub-creationtimeutc", "2030-01-01T00:00:00Z"},
                   {"authorization", "SharedAccessSignature x"},
                   {"user-agent", "sdk"},
                   {"iothub-app-", "nameless"}};
    auto e = event_from_request(req);
    EXPECT_EQ(e.body, "{\"t\":1}");
    ASSERT_EQ(e.application_properties.size(), 1u) << "only iothub-app-* are the device's own";
    EXPECT_EQ(prop(e.application_properties, "alert"), "true");
    const auto& s = e.system_properties;
    EXPECT_EQ(prop(s, "message-id"), "m-1");
    EXPECT_EQ(prop(s, "correlation-id"), "c-1");
    EXPECT_EQ(prop(s, "user-id"), "u");
    EXPECT_EQ(prop(s, "to"), "/devices/d1/messages/events");
    EXPECT_EQ(prop(s, "absolute-expiry-time"), "2030-01-02T03:04:05.0000000Z");
    EXPECT_EQ(prop(s, "content-type"), "application/json");
    EXPECT_EQ(prop(s, "content-encoding"), "utf-8");
    EXPECT_EQ(prop(s, "iothub-interface-id"), "urn:x");
    EXPECT_EQ(prop(s, "dt-subject"), "thermo");
    EXPECT_EQ(prop(s, "iothub-creation-time-utc"), "2030-01-01T00:00:00.0000000Z");
    EXPECT_EQ(s.size(), 10u);
    EXPECT_EQ(system_property_for("IoTHub-MessageId"), "message-id");
    EXPECT_EQ(system_property_for("iothub-ack"), "");
}

TEST(DeviceMessages, BatchContentTypeIsRecognisedWithParameters) {
    http::request req;
    req.headers = {{"content-type", "Application/Vnd.Microsoft.IotHub.Json; charset=utf-8"}};
    EXPECT_TRUE(is_batch(req));
    req.headers = {{"content-type", "application/json"}};
    EXPECT_FALSE(is_batch(req));
}

TEST(DeviceMessages, BatchItemsBase64AndPlain) {
    auto b = parse_batch(
        R"([
        {"body":")" +
        base64_encode("one") +
        R"(","properties":{"iothub-app-k":"v","iothub-messageid":"m1","dt-subject":"s"}},
        {"body":"two","base64Encoded":false},
        {"body":")" +
        base64_encode(std::string("\0\xff", 2)) + R"("}])");
    ASSERT_TRUE(b) << b.error().message();
    ASSERT_EQ(b->size(), 3u);
    EXPECT_EQ((*b)[0].body, "one");
    EXPECT_EQ(prop((*b)[0].application_properties, "k"), "v");
    EXPECT_EQ(prop((*b)[0].system_properties, "message-id"), "m1");
    EXPECT_EQ(prop((*b)[0].system_properties, "dt-subject"), "s");
    EXPECT_EQ((*b)[1].body, "two");
    EXPECT_EQ((*b)[2].body, std::string("\0\xff", 2));
}

TEST(DeviceMessages, MalformedBatchesAreRefusedWhole) {
    auto code = [](std::string_view body) -> std::optional<errc> {
        auto r = parse_batch(body);
        if (r) return std::nullopt;
        return r.error().code();
    };
    EXPECT_EQ(code("[{\"body\":"), errc::format_error);
    EXPECT_EQ(code("{\"body\":\"eA==\"}"), errc::argument_invalid) << "not an array";
    EXPECT_EQ(code("[]"), errc::argument_invalid);
    EXPECT_EQ(code("[1]"), errc::argument_invalid);
    EXPECT_EQ(code("[{\"properties\":{}}]"), errc::argument_invalid) << "no body";
    EXPECT_EQ(code("[{\"body\":\"eA==\"},{\"body\":\"not base64!\"}]"), errc::argument_invalid);
    EXPECT_EQ(code("[{\"body\":\"eA==\",\"base64Encoded\":\"no\"}]"), errc::argument_invalid);
    EXPECT_EQ(code("[{\"body\":\"eA==\",\"properties\":{\"k\":1}}]"), errc::argument_invalid);
    EXPECT_EQ(code("[{\"body\":\"eA==\",\"properties\":[]}]"), errc::argument_invalid);
}

TEST(DeviceMessages, DeliveryHeaders) {
    auto m = std::make_shared<c2d::message>();
    m->body = "hello";
    m->message_id = "mid";
    m->correlation_id = "cid";
    m->user_id = "uid";
    m->content_type = "text/plain";
    m->content_encoding = "utf-8";
    m->ack = c2d::ack_mode::full;
    m->properties = {{"k", "v"}, {"bad name", "x"}, {"line", "a\r\nInjected: yes"}};
    c2d::delivery d;
    d.lock_token = "0f8fad5b-d9cb-469f-a165-70867728950e";
    d.sequence_number = 7;
    d.delivery_count = 2;
    d.content = m;
    auto r = delivery_response(d, "dev 1");
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.body, "hello");
    auto h = [&](std::string_view name) {
        for (const auto& [k, v] : r.headers)
            if (k == name) return v;
        return std::string("<missing>");
    };
    EXPECT_EQ(h("ETag"), "\"0f8fad5b-d9cb-469f-a165-70867728950e\"");
    EXPECT_EQ(h("iothub-messageid"), "mid");
    EXPECT_EQ(h("iothub-correlationid"), "cid");
    EXPECT_EQ(h("iothub-userid"), "uid");
    EXPECT_EQ(h("iothub-to"), "/devices/dev%201/messages/devicebound");
    EXPECT_EQ(h("iothub-ack"), "full");
    EXPECT_EQ(h("iothub-sequencenumber"), "7");
    EXPECT_EQ(h("iothub-deliverycount"), "2");
    EXPECT_NE(h("iothub-expiry"), "<missing>");
    EXPECT_NE(h("iothub-enqueuedtime"), "<missing>");
    EXPECT_EQ(h("ContentType"), "text/plain");
    EXPECT_EQ(h("iothub-contenttype"), "text/plain");
    EXPECT_EQ(h("ContentEncoding"), "utf-8");
    EXPECT_EQ(h("iothub-contentencoding"), "utf-8");
    EXPECT_EQ(h("iothub-app-k"), "v");
    EXPECT_EQ(h("iothub-app-bad name"), "<missing>") << "not a header name";
    EXPECT_EQ(h("iothub-app-line"), "<missing>") << "a line break would split the response";
}

TEST(DeviceMessages, Unquote) {
    EXPECT_EQ(unquote("\"abc\""), "abc");
    EXPECT_EQ(unquote("abc"), "abc");
    EXPECT_EQ(unquote("\""), "\"");
}

}  // namespace
}  // namespace iothub::device_api
