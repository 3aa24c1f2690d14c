#include "mqtt/session.hpp"

#include <gtest/gtest.h>

namespace iothub::mqtt {
namespace {

using namespace std::chrono_literals;

struct recorder : session_handler {
    std::vector<connect_packet> connects;
    std::vector<publish_packet> publishes;
    std::vector<std::string> subscribed, unsubscribed;
    std::vector<std::uint16_t> delivered;
    std::uint8_t grant = 1;
    void on_connect(const connect_packet& c) override { connects.push_back(c); }
    void on_publish(publish_packet&& p) override { publishes.push_back(std::move(p)); }
    std::uint8_t on_subscribe(const subscription& s) override {
        subscribed.push_back(s.filter + "@" + std::to_string(s.qos));
        return grant;
    }
    void on_unsubscribe(const std::string& f) override { unsubscribed.push_back(f); }
    void on_delivered(std::uint16_t id) override { delivered.push_back(id); }
};

class Session : public ::testing::Test {
  protected:
    clock::time_point t0 = clock::time_point{} + 1000s;
    recorder h;
    session s{h, session_limits{}, t0};

    std::vector<packet> take() {
        decoder d(1 << 20);
        d.feed(s.output());
        s.output().clear();
        std::vector<packet> out;
        for (;;) {
            auto r = d.next();
            if (!std::holds_alternative<packet>(r)) break;
            out.push_back(std::move(std::get<packet>(r)));
        }
        return out;
    }
    static std::string connect_bytes(std::uint16_t keep_alive = 60, std::string id = "dev1",
                                     std::uint8_t level = 4) {
        return encode(connect_packet{"MQTT",
                                     level,
                                     false,
                                     keep_alive,
                                     std::move(id),
                                     std::string("u"),
                                     std::string("p"),
                                     {}});
    }
    void connected(std::uint16_t keep_alive = 60) {
        s.receive(connect_bytes(keep_alive), t0);
        ASSERT_EQ(s.current(), session::state::authenticating);
        s.accept(false);
        auto acks = take();
        ASSERT_EQ(acks.size(), 1u);
        ASSERT_EQ(std::get<connack_packet>(acks[0]).code, connack_code::accepted);
    }
};

TEST_F(Session, ConnectWaitsForTheHandlerThenAccepts) {
    s.receive(connect_bytes(), t0);
    ASSERT_EQ(h.connects.size(), 1u);
    EXPECT_EQ(h.connects[0].client_id, "dev1");
    EXPECT_TRUE(s.output().empty()) << "no CONNACK before the handler decides";
    EXPECT_TRUE(s.reading_paused());
    s.accept(true);
    auto out = take();
    ASSERT_EQ(out.size(), 1u);
    EXPECT_TRUE(std::get<connack_packet>(out[0]).session_present);
    EXPECT_EQ(s.current(), session::state::connected);
}

TEST_F(Session, PacketsPipelinedBehindConnectWaitForAuthentication) {
    s.receive(connect_bytes() + encode(publish_packet{"t", "x", 0, false, false, 0}), t0);
    EXPECT_TRUE(h.publishes.empty());
    s.accept(false);
    EXPECT_EQ(h.publishes.size(), 1u);
}

TEST_F(Session, RefusalsSendTheirCodeAndClose) {
    s.receive(connect_bytes(), t0);
    s.refuse(connack_code::not_authorized, "bad token");
    auto out = take();
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(std::get<connack_packet>(out[0]).code, connack_code::not_authorized);
    EXPECT_TRUE(s.closed());
    EXPECT_NE(s.close_reason().find("bad token"), std::string::npos);
}

TEST_F(Session, ProtocolLevelAndClientIdAreChecked) {
    session a{h, {}, t0};
    a.receive(connect_bytes(60, "dev1", 3), t0);
    EXPECT_TRUE(a.closed());
    EXPECT_NE(a.output().find(std::string("\x20\x02\x00\x01", 4)), std::string::npos)
        << "CONNACK 1";
    session b{h, {}, t0};
    b.receive(connect_bytes(60, ""), t0);
    EXPECT_TRUE(b.closed());
    EXPECT_NE(b.output().find(std::string("\x20\x02\x00\x02", 4)), std::string::npos)
        << "CONNACK 2";
    EXPECT_TRUE(h.connects.empty());
}

TEST_F(Session, AnythingButConnectFirstCloses) {
    s.receive(encode(pingreq_packet{}), t0);
    EXPECT_TRUE(s.closed());
    EXPECT_TRUE(s.output().empty());
}

TEST_F(Session, AForeignFirstByteClosesWithoutWaitingForAWholePacket) {
    s.receive("G", t0);  // "GET / HTTP/1.1" would otherwise announce a 69-byte packet
    EXPECT_TRUE(s.closed());
}

TEST_F(Session, Qos1AcksGoOutInArrivalOrder) {
    connected();
    std::string three;
    for (std::uint16_t id : {1, 2, 3})
        three += encode(publish_packet{"t", "x", 1, false, false, id});
    s.receive(three, t0);
    ASSERT_EQ(h.publishes.size(), 3u);
    s.acknowledge(3);
    s.acknowledge(2);
    EXPECT_TRUE(take().empty()) << "2 and 3 wait for 1";
    s.acknowledge(1);
    auto acks = take();
    ASSERT_EQ(acks.size(), 3u);
    EXPECT_EQ(std::get<puback_packet>(acks[0]).packet_id, 1);
    EXPECT_EQ(std::get<puback_packet>(acks[2]).packet_id, 3);
}

TEST_F(Session, ReadingPausesWhenTooManyAreUnacknowledged) {
    session_limits lim;
    lim.max_unacknowledged = 2;
    session small{h, lim, t0};
    small.receive(connect_bytes(), t0);
    small.accept(false);
    std::string burst;
    for (std::uint16_t id = 1; id <= 4; ++id)
        burst += encode(publish_packet{"t", "x", 1, false, false, id});
    small.receive(burst, t0);
    EXPECT_EQ(h.publishes.size(), 2u);
    EXPECT_TRUE(small.reading_paused());
    small.acknowledge(1);
    EXPECT_EQ(h.publishes.size(), 3u) << "room for one more is used at once";
    small.acknowledge(2);
    small.acknowledge(3);
    EXPECT_EQ(h.publishes.size(), 4u);
}

TEST_F(Session, SubscribeCapsQosAndReportsEachFilter) {
    connected();
    h.grant = suback_failure;
    s.receive(encode(subscribe_packet{5, {{"a", 2}, {"b", 0}}}), t0);
    EXPECT_EQ(h.subscribed, (std::vector<std::string>{"a@1", "b@0"}));
    auto out = take();
    ASSERT_EQ(out.size(), 1u);
    auto& ack = std::get<suback_packet>(out[0]);
    EXPECT_EQ(ack.packet_id, 5);
    EXPECT_EQ(ack.return_codes, (std::vector<std::uint8_t>{0x80, 0x80}));
    s.receive(encode(unsubscribe_packet{6, {"a"}}), t0);
    EXPECT_EQ(h.unsubscribed, (std::vector<std::string>{"a"}));
    EXPECT_EQ(std::get<unsuback_packet>(take()[0]).packet_id, 6);
}

TEST_F(Session, Qos2AndServerPacketsClose) {
    connected();
    s.receive(encode(publish_packet{"t", "x", 2, false, false, 1}), t0);
    EXPECT_TRUE(s.closed());
    EXPECT_NE(s.close_reason().find("QoS 2"), std::string::npos);
    session other{h, {}, t0};
    other.receive(connect_bytes(), t0);
    other.accept(false);
    other.receive(encode(connack_packet{}), t0);
    EXPECT_TRUE(other.closed());
}

TEST_F(Session, PingAndDisconnect) {
    connected();
    s.receive(encode(pingreq_packet{}), t0);
    EXPECT_TRUE(std::holds_alternative<pingresp_packet>(take()[0]));
    s.receive(encode(disconnect_packet{}), t0);
    EXPECT_TRUE(s.closed());
    EXPECT_TRUE(s.graceful());
}

TEST_F(Session, KeepAliveIsOneAndAHalfTimesTheClients) {
    connected(60);
    EXPECT_EQ(s.deadline(), t0 + 90s);
    s.tick(t0 + 89s);
    EXPECT_FALSE(s.closed());
    s.receive(encode(pingreq_packet{}), t0 + 80s);
    EXPECT_EQ(s.deadline(), t0 + 170s);
    s.tick(t0 + 170s);
    EXPECT_TRUE(s.closed());
    EXPECT_FALSE(s.graceful());
    EXPECT_NE(s.close_reason().find("keep-alive"), std::string::npos);
}

TEST_F(Session, HugeKeepAlivesAreCappedAndZeroMeansNone) {
    connected(65535);
    EXPECT_EQ(s.deadline(), t0 + std::chrono::milliseconds(1767 * 1500));
    session none{h, {}, t0};
    none.receive(connect_bytes(0), t0);
    none.accept(false);
    EXPECT_EQ(none.deadline(), clock::time_point::max());
}

TEST_F(Session, ConnectMustArriveInTime) {
    s.tick(t0 + 9s);
    EXPECT_FALSE(s.closed());
    s.tick(t0 + 10s);
    EXPECT_TRUE(s.closed());
}

TEST_F(Session, OutboundQos1IsTrackedUntilPuback) {
    connected();
    auto id = s.publish("devices/dev1/messages/devicebound/%24.to=x", "hello", 1);
    EXPECT_NE(id, 0);
    auto sent = take();
    auto& p = std::get<publish_packet>(sent[0]);
    EXPECT_EQ(p.packet_id, id);
    EXPECT_EQ(p.qos, 1);
    s.receive(encode(puback_packet{id}), t0);
    EXPECT_EQ(h.delivered, (std::vector<std::uint16_t>{id}));
    s.receive(encode(puback_packet{id}), t0);
    EXPECT_EQ(h.delivered.size(), 1u) << "a repeated PUBACK is ignored";
}

TEST_F(Session, MalformedInputClosesWithTheReason) {
    connected();
    s.receive(std::string("\x36\x03\x00\x01t", 5), t0);
    EXPECT_TRUE(s.closed());
    EXPECT_NE(s.close_reason().find("malformed packet"), std::string::npos);
}

}  // namespace
}  // namespace iothub::mqtt
