// The MQTT server on loopback with memory storage, driven by the codec over a plain TCP socket:
// cloud-to-device delivery as a device sees it.
#include "auth/sas.hpp"
#include "mqtt/server.hpp"
#include "mqtt/topics.hpp"
#include "storage/engine.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <boost/json.hpp>
#include <gtest/gtest.h>

#include <cerrno>
#include <sys/socket.h>
#include <thread>

namespace iothub::mqtt {
namespace {
namespace asio = boost::asio;
using asio::ip::tcp;
using namespace std::chrono_literals;

// A device's side of the conversation. Reads give up after 10 s so a broken hub fails the test
// instead of hanging it.
class device_client {
  public:
    device_client(std::uint16_t port, std::string device_id, std::string key)
        : socket_(io_), device_id_(std::move(device_id)), key_(std::move(key)) {
        socket_.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
        timeval tv{10, 0};
        ::setsockopt(socket_.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    }

    connack_packet connect(bool clean) {
        connect_packet c;
        c.protocol_name = "MQTT";
        c.clean_session = clean;
        c.client_id = device_id_;
        c.username = "hub.example/" + device_id_ + "/?api-version=2021-04-12";
        c.password = auth::make_sas_token("hub.example/devices/" + device_id_, key_,
                                          unix_seconds(now()) + 3600);
        send(c);
        return expect<connack_packet>();
    }
    void send(const packet& p) { asio::write(socket_, asio::buffer(encode(p))); }

    template <class T>
    T expect() {
        auto p = next();
        auto* t = std::get_if<T>(&p);
        if (!t) {
            ADD_FAILURE() << "unexpected packet type " << p.index();
            return T{};
        }
        return *t;
    }

    packet next() {
        for (;;) {
            auto r = decoder_.next();
            if (auto* p = std::get_if<packet>(&r)) return std::move(*p);
            if (auto* e = std::get_if<decode_error>(&r)) {
                ADD_FAILURE() << e->reason;
                return disconnect_packet{};
            }
            std::array<char, 4096> buf;
            boost::system::error_code ec;
            auto n = read(buf, ec);
            if (ec) {
                ADD_FAILURE() << "read: " << ec.message();
                return disconnect_packet{};
            }
            decoder_.feed(std::string_view(buf.data(), n));
        }
    }

    void close() { socket_.close(); }

    // Reads until the hub closes the connection; false if a packet of `T` arrives first (or
    // nothing happens within the read timeout).
    template <class T>
    bool closed_without() {
        for (;;) {
            auto r = decoder_.next();
            if (auto* p = std::get_if<packet>(&r)) {
                if (std::holds_alternative<T>(*p)) return false;
                continue;
            }
            std::array<char, 4096> buf;
            boost::system::error_code ec;
            auto n = read(buf, ec);
            if (ec) return ec == asio::error::eof || ec == asio::error::connection_reset;
            decoder_.feed(std::string_view(buf.data(), n));
        }
    }

  private:
    // recv(2) itself, so the socket's receive timeout bounds every wait (Asio's synchronous read
    // polls without one): a packet that never comes fails the test instead of hanging it.
    std::size_t read(std::array<char, 4096>& buf, boost::system::error_code& ec) {
        auto n = ::recv(socket_.native_handle(), buf.data(), buf.size(), 0);
        if (n > 0) return static_cast<std::size_t>(n);
        if (n == 0) {
            ec = asio::error::eof;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            ec = asio::error::timed_out;
        } else {
            ec = boost::system::error_code(errno, boost::system::system_category());
        }
        return 0;
    }

    asio::io_context io_;
    tcp::socket socket_;
    std::string device_id_, key_;
    decoder decoder_{1 << 20};
};

class ServerC2d : public ::testing::Test {
  protected:
    void SetUp() override {
        auto spec = registry::parse_device(boost::json::object{}, "dev#1");
        ASSERT_TRUE(spec);
        auto created = registry_.put_device(*spec, {});
        ASSERT_TRUE(created);
        key_ = created->auth.primary_key;
        server_ = std::make_unique<server>(shards_, sessions_, server_settings{});
        auto port = server_->listen("127.0.0.1", 0, nullptr);
        ASSERT_TRUE(port) << port.error().message();
        port_ = *port;
        shards_.start();
    }
    void TearDown() override {
        server_->begin_stop();
        for (int i = 0; i < 500 && server_->active_connections() > 0; ++i)
            std::this_thread::sleep_for(10ms);
        shards_.stop();
        blocking_.stop();
    }

    void send(std::string body, storage::property_list props = {}) {
        c2d::message m;
        m.message_id = "mid-" + body;
        m.body = std::move(body);
        m.properties = std::move(props);
        auto r = c2d_.send("dev#1", std::move(m), now());
        ASSERT_TRUE(r) << r.error().message();
    }
    // The hub settles on its blocking pool; wait (bounded) for the queue to reach `depth`.
    bool depth_becomes(std::size_t depth) {
        for (int i = 0; i < 1000; ++i) {
            if (c2d_.depth("dev#1") == depth) return true;
            std::this_thread::sleep_for(10ms);
        }
        return false;
    }
    std::unique_ptr<device_client> subscribed(bool clean = true) {
        auto d = std::make_unique<device_client>(port_, "dev#1", key_);
        EXPECT_EQ(d->connect(clean).code, connack_code::accepted);
        d->send(subscribe_packet{7, {{"devices/dev#1/messages/devicebound/#", 1}}});
        auto ack = d->expect<suback_packet>();
        EXPECT_EQ(ack.return_codes, std::vector<std::uint8_t>{1});
        return d;
    }

    std::unique_ptr<storage::engine> engine_ = storage::open_memory();
    registry::device_registry registry_{engine_->kv()};
    auth::policy_set policies_{auth::default_policies()};
    auth::host_names hosts_{{"hub.example"}};
    runtime::shard_set shards_{1};
    runtime::blocking_pool blocking_{2};
    device_auth::device_authenticator authenticator_{registry_, policies_, hosts_};
    connections::connection_table connections_;
    telemetry::telemetry_service telemetry_{engine_->events()};
    twin::twin_service twins_{engine_->kv(), registry_, engine_->hub_events(), "hub.example"};
    methods::method_service methods_{connections_, shards_.at(0).get_executor()};
    c2d::c2d_service c2d_{engine_->kv(), registry_, connections_};
    core::services sessions_{authenticator_, connections_, telemetry_,    twins_,
                             methods_,       c2d_,         engine_->kv(), blocking_};
    std::unique_ptr<server> server_;
    std::uint16_t port_ = 0;
    std::string key_;
};

TEST_F(ServerC2d, SubscribingDeliversInOrderAndPubackCompletes) {
    send("a", {{"color", "red&blue"}});
    send("b");
    auto client = subscribed();
    auto& d = *client;
    auto a = d.expect<publish_packet>();
    auto b = d.expect<publish_packet>();
    EXPECT_EQ(a.payload, "a");
    EXPECT_EQ(b.payload, "b");
    EXPECT_EQ(a.qos, 1);
    EXPECT_FALSE(a.dup);
    const std::string prefix = "devices/dev#1/messages/devicebound/";
    ASSERT_EQ(a.topic.rfind(prefix, 0), 0u) << a.topic;
    auto bag = parse_property_bag(a.topic.substr(prefix.size()));
    EXPECT_EQ(bag, (storage::property_list{{"$.mid", "mid-a"},
                                           {"$.to", "/devices/dev%231/messages/devicebound"},
                                           {"color", "red&blue"}}));
    EXPECT_NE(a.topic.find("%24.mid=mid-a"), std::string::npos) << "the C SDK's spelling";

    d.send(puback_packet{a.packet_id});
    EXPECT_TRUE(depth_becomes(1));
    d.send(puback_packet{4242});  // unknown: ignored
    d.send(puback_packet{b.packet_id});
    EXPECT_TRUE(depth_becomes(0));

    send("c");  // while connected: the channel hears of it
    auto c = d.expect<publish_packet>();
    EXPECT_EQ(c.payload, "c");
    d.send(puback_packet{c.packet_id});
    EXPECT_TRUE(depth_becomes(0));
}

TEST_F(ServerC2d, UnacknowledgedMessagesComeBackWithDupAfterReconnect) {
    send("a");
    send("b");
    {
        auto client = subscribed(false);
        auto& d = *client;
        auto a = d.expect<publish_packet>();
        EXPECT_EQ(a.payload, "a");
        EXPECT_EQ(d.expect<publish_packet>().payload, "b");
        d.close();  // no PUBACK: both count as abandoned
    }
    // A restored clean=0 session delivers without subscribing again. Its delivery may race the
    // abandon of the old connection's locks, so wait for the first message.
    device_client again(port_, "dev#1", key_);
    auto ack = again.connect(false);
    EXPECT_EQ(ack.code, connack_code::accepted);
    EXPECT_TRUE(ack.session_present);
    auto a = again.expect<publish_packet>();
    EXPECT_EQ(a.payload, "a");
    EXPECT_TRUE(a.dup) << "second delivery";
    auto b = again.expect<publish_packet>();
    EXPECT_EQ(b.payload, "b");
    again.send(puback_packet{a.packet_id});
    again.send(puback_packet{b.packet_id});
    EXPECT_TRUE(depth_becomes(0));
}

TEST_F(ServerC2d, TelemetryThatCannotBeStoredClosesTheConnectionWithoutAPuback) {
    storage::faults_of(*engine_)->fail_appends(1);
    device_client d(port_, "dev#1", key_);
    ASSERT_EQ(d.connect(false).code, connack_code::accepted);
    publish_packet p;
    p.topic = "devices/dev#1/messages/events/";
    p.qos = 1;
    p.packet_id = 5;
    p.payload = "lost";
    d.send(p);
    EXPECT_TRUE(d.closed_without<puback_packet>()) << "no PUBACK for what was not stored";

    device_client again(port_, "dev#1", key_);
    ASSERT_EQ(again.connect(false).code, connack_code::accepted);
    p.payload = "kept";
    again.send(p);
    EXPECT_EQ(again.expect<puback_packet>().packet_id, 5);
    telemetry::telemetry_service t(engine_->events());
    auto events = engine_->events().read(t.partition_of("dev#1"), 0, 10);
    ASSERT_EQ(events->size(), 1u);
    EXPECT_EQ(events->front().record.body, "kept");
}

}  // namespace
}  // namespace iothub::mqtt
