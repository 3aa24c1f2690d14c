#include "mqtt/codec.hpp"

#include <gtest/gtest.h>

namespace iothub::mqtt {
namespace {

std::variant<std::monostate, packet, decode_error> decode_one(std::string_view bytes,
                                                              std::size_t max = 1 << 20) {
    decoder d(max);
    d.feed(bytes);
    return d.next();
}

template <class T>
T expect_packet(std::string_view bytes) {
    auto r = decode_one(bytes);
    if (auto* e = std::get_if<decode_error>(&r)) ADD_FAILURE() << e->reason;
    EXPECT_TRUE(std::holds_alternative<packet>(r));
    if (!std::holds_alternative<packet>(r)) return T{};
    auto& p = std::get<packet>(r);
    EXPECT_TRUE(std::holds_alternative<T>(p));
    return std::holds_alternative<T>(p) ? std::get<T>(p) : T{};
}

std::string expect_error(std::string_view bytes, std::size_t max = 1 << 20) {
    auto r = decode_one(bytes, max);
    EXPECT_TRUE(std::holds_alternative<decode_error>(r));
    return std::holds_alternative<decode_error>(r) ? std::get<decode_error>(r).reason : "";
}

TEST(Codec, DecodesTheNodeSdkConnect) {
    connect_packet c;
    c.protocol_name = "MQTT";
    c.clean_session = false;
    c.keep_alive = 180;
    c.client_id = "dev1";
    c.username =
        "localhost/dev1/?api-version=2021-04-12&DeviceClientType=azure-iot-device%2F1.18.4";
    c.password = "SharedAccessSignature sr=localhost%2Fdevices%2Fdev1&sig=x&se=1";
    auto bytes = encode(c);
    EXPECT_EQ(static_cast<unsigned char>(bytes[0]), 0x10);
    EXPECT_EQ(bytes.substr(bytes.find("MQTT") + 4, 4), std::string("\x04\xc0\x00\xb4", 4))
        << "level 4, flags 0xC0 (username, password, clean=0), keep-alive 180, as captured";
    auto back = expect_packet<connect_packet>(bytes);
    EXPECT_EQ(back.client_id, "dev1");
    EXPECT_FALSE(back.clean_session);
    EXPECT_EQ(back.keep_alive, 180);
    EXPECT_EQ(back.username, c.username);
    EXPECT_EQ(back.password, c.password);
    EXPECT_FALSE(back.will);
}

TEST(Codec, RoundTripsEveryPacketAServerSendsOrReceives) {
    publish_packet p{
        "devices/d/messages/events/a=1", std::string("\0bin\xff", 5), 1, true, true, 7};
    auto pb = expect_packet<publish_packet>(encode(p));
    EXPECT_EQ(pb.topic, p.topic);
    EXPECT_EQ(pb.payload, p.payload);
    EXPECT_EQ(pb.qos, 1);
    EXPECT_TRUE(pb.retain);
    EXPECT_TRUE(pb.dup);
    EXPECT_EQ(pb.packet_id, 7);
    EXPECT_EQ(expect_packet<puback_packet>(encode(puback_packet{513})).packet_id, 513);
    auto s = expect_packet<subscribe_packet>(encode(subscribe_packet{3, {{"a/#", 1}, {"b", 0}}}));
    ASSERT_EQ(s.subscriptions.size(), 2u);
    EXPECT_EQ(s.subscriptions[1].filter, "b");
    auto sa = expect_packet<suback_packet>(encode(suback_packet{3, {1, suback_failure}}));
    EXPECT_EQ(sa.return_codes, (std::vector<std::uint8_t>{1, 0x80}));
    auto ca =
        expect_packet<connack_packet>(encode(connack_packet{true, connack_code::not_authorized}));
    EXPECT_TRUE(ca.session_present);
    EXPECT_EQ(ca.code, connack_code::not_authorized);
    EXPECT_EQ(expect_packet<unsubscribe_packet>(encode(unsubscribe_packet{9, {"x"}})).filters[0],
              "x");
    expect_packet<pingreq_packet>(encode(pingreq_packet{}));
    expect_packet<disconnect_packet>(encode(disconnect_packet{}));
    EXPECT_EQ(encode(pingresp_packet{}), std::string("\xd0\x00", 2));
}

TEST(Codec, LargePayloadsUseMultiByteLengthsAndArriveInPieces) {
    publish_packet p{"t", std::string(300000, 'x'), 0, false, false, 0};
    auto bytes = encode(p);
    decoder d(1 << 20);
    for (std::size_t i = 0; i < bytes.size(); i += 1000) {
        EXPECT_TRUE(std::holds_alternative<std::monostate>(d.next()));
        d.feed(std::string_view(bytes).substr(i, 1000));
    }
    auto r = d.next();
    ASSERT_TRUE(std::holds_alternative<packet>(r));
    EXPECT_EQ(std::get<publish_packet>(std::get<packet>(r)).payload.size(), 300000u);
    EXPECT_TRUE(std::holds_alternative<std::monostate>(d.next()));
}

TEST(Codec, SeveralPacketsInOneRead) {
    std::string bytes =
        encode(pingreq_packet{}) + encode(puback_packet{1}) + encode(disconnect_packet{});
    decoder d(1024);
    d.feed(bytes);
    EXPECT_TRUE(std::holds_alternative<pingreq_packet>(std::get<packet>(d.next())));
    EXPECT_TRUE(std::holds_alternative<puback_packet>(std::get<packet>(d.next())));
    EXPECT_TRUE(std::holds_alternative<disconnect_packet>(std::get<packet>(d.next())));
    EXPECT_TRUE(std::holds_alternative<std::monostate>(d.next()));
}

TEST(Codec, LentBytesMayBeReusedOnceAPacketIsOut) {
    publish_packet first{"a", "one", 1, false, false, 7};
    publish_packet second{"b", "two", 1, false, false, 8};
    const std::string third = encode(publish_packet{"c", "three", 0, false, false, 0});
    // One read: two whole packets and the start of a third.
    std::string read = encode(first) + encode(second) + third.substr(0, 4);
    decoder d(1024);
    d.lend(read);
    auto r = d.next();
    EXPECT_EQ(std::get<publish_packet>(std::get<packet>(r)).payload, "one");
    std::fill(read.begin(), read.end(), '\xff');  // the caller's buffer is reused
    r = d.next();
    EXPECT_EQ(std::get<publish_packet>(std::get<packet>(r)).payload, "two");
    EXPECT_TRUE(std::holds_alternative<std::monostate>(d.next()));
    EXPECT_EQ(d.buffered(), 4u) << "the incomplete tail is kept";
    std::string rest = third.substr(4);
    d.lend(rest);
    r = d.next();
    EXPECT_EQ(std::get<publish_packet>(std::get<packet>(r)).payload, "three");
    EXPECT_TRUE(std::holds_alternative<std::monostate>(d.next()));
    EXPECT_EQ(d.buffered(), 0u);
    // A paused reader keeps what it will decode later.
    std::string later = encode(publish_packet{"d", "four", 0, false, false, 0});
    d.lend(later);
    d.keep();
    std::fill(later.begin(), later.end(), '\xff');
    r = d.next();
    EXPECT_EQ(std::get<publish_packet>(std::get<packet>(r)).payload, "four");
}

TEST(Codec, OversizeIsRejectedFromTheHeaderAlone) {
    std::string header("\x30\x80\x80\x40", 4);  // PUBLISH claiming 1 MiB, no body yet
    EXPECT_NE(expect_error(header, 256 * 1024).find("exceeds the limit"), std::string::npos);
    EXPECT_NE(expect_error(std::string("\x30\xff\xff\xff\xff\x01", 6)).find("four bytes"),
              std::string::npos);
}

TEST(Codec, MalformedPacketsAreErrorsWithReasons) {
    auto fails = [](std::string bytes, std::string_view needle) {
        auto reason = expect_error(bytes);
        EXPECT_NE(reason.find(needle), std::string::npos) << reason;
    };
    fails(std::string("\x00\x00", 2), "unknown packet type");
    fails(std::string("\xf0\x00", 2), "unknown packet type");
    fails(std::string("\x36\x03\x00\x01t", 5), "QoS 3");
    fails(std::string("\x32\x05\x00\x01t\x00\x00", 7), "identifier 0");
    fails(std::string("\x38\x03\x00\x01t", 5), "DUP");
    fails(std::string("\x30\x02\x00\x00", 4), "empty topic");
    fails(std::string("\x30\x04\x00\x02\xc3\x28", 6), "UTF-8");
    fails(std::string("\x30\x03\x00\x01\x00", 5), "UTF-8");     // U+0000
    fails(std::string("\x80\x04\x00\x01\x00\x00", 6), "0010");  // SUBSCRIBE with flags 0
    fails(std::string("\x82\x02\x00\x01", 4), "without topic filters");
    fails(std::string("\x82\x06\x00\x01\x00\x01t\x03", 8), "QoS 3");
    fails(std::string("\x82\x06\x00\x01\x00\x01t\x04", 8), "reserved");
    fails(std::string("\xc0\x01\x00", 3), "PINGREQ");
    fails(std::string("\x40\x01\x00", 3), "acknowledgement");
    connect_packet c{"MQTT", 4, true, 0, "id", {}, {}, {}};
    auto bytes = encode(c);
    bytes[9] |= 0x01;  // reserved flag
    fails(bytes, "reserved flag");
    auto bad_name = encode(connect_packet{"MQTX", 4, true, 0, "id", {}, {}, {}});
    fails(bad_name, "protocol name");
    auto truncated = encode(connect_packet{"MQTT", 4, true, 0, "id", std::string("u"), {}, {}});
    truncated[1] = static_cast<char>(truncated[1] - 1);
    truncated.pop_back();
    fails(truncated, "truncated");
}

TEST(Codec, Utf8Rules) {
    EXPECT_TRUE(valid_mqtt_utf8("devices/caf\xc3\xa9"));
    EXPECT_TRUE(valid_mqtt_utf8("\xf0\x9f\x98\x80"));
    EXPECT_FALSE(valid_mqtt_utf8("\xc0\xaf"));          // overlong
    EXPECT_FALSE(valid_mqtt_utf8("\xed\xa0\x80"));      // surrogate
    EXPECT_FALSE(valid_mqtt_utf8("\xf4\x90\x80\x80"));  // beyond U+10FFFF
    EXPECT_FALSE(valid_mqtt_utf8("\xe2\x82"));          // truncated
}

}  // namespace
}  // namespace iothub::mqtt
