// The external Event Hubs sink against a small event hub made here with Qpid Proton (loopback
// only): what a routed message becomes, the put-token and its renewal, cursors held until the
// event hub accepted, rejections, a wrong key, a peer that never answers, one that is not there,
// TLS with extra CAs; and the connection-string and token helpers.
#include "endpoints/eventhub_sink.hpp"

#include "amqp_client/support.hpp"
#include "auth/sas.hpp"
#include "common/encoding.hpp"
#include "storage/engine.hpp"
#include "tls/dev_ca.hpp"

#include <gtest/gtest.h>
#include <proton/annotation_key.hpp>
#include <proton/condition.h>
#include <proton/connection.hpp>
#include <proton/connection_options.hpp>
#include <proton/container.hpp>
#include <proton/delivery.h>
#include <proton/delivery.hpp>
#include <proton/disposition.h>
#include <proton/listen_handler.hpp>
#include <proton/listener.hpp>
#include <proton/message.hpp>
#include <proton/message_id.hpp>
#include <proton/messaging_handler.hpp>
#include <proton/receiver.hpp>
#include <proton/receiver_options.hpp>
#include <proton/sender.hpp>
#include <proton/source.hpp>
#include <proton/ssl.hpp>
#include <proton/target.hpp>
#include <proton/timestamp.hpp>
#include <proton/tracker.hpp>
#include <proton/work_queue.hpp>

#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <thread>

namespace iothub::endpoints {
namespace {
using namespace std::chrono_literals;

constexpr std::string_view key = "c2VjcmV0LWtleS1mb3ItdGhlLXRlc3QtZXZlbnQtaHVi";
constexpr std::string_view cursor_key = "routing/cursor/eh/0";

// A delivery's C handle, to reject with a condition (the C++ binding cannot).
struct delivery_of : proton::delivery {
    explicit delivery_of(const proton::delivery& d) : proton::delivery(d) {}
    pn_delivery_t* get() const { return pn_object(); }
};

// An event hub: SASL ANONYMOUS, `$cbs` put-tokens checked against `key` for `sb://host/hub`, and
// a receiver on any other address that accepts, rejects or holds what it gets.
class fake_event_hub : public proton::messaging_handler, public proton::listen_handler {
  public:
    enum class mode { accept, reject, hold };

    explicit fake_event_hub(std::optional<proton::ssl_certificate> cert = std::nullopt)
        : cert_(std::move(cert)) {
        container_.receiver_options(proton::receiver_options().auto_accept(false));
        thread_ = std::thread([this] { container_.run(); });
        std::unique_lock lock(mutex_);
        changed_.wait_for(lock, 5s, [&] { return port_ != 0; });
    }
    ~fake_event_hub() override {
        container_.stop();
        thread_.join();
    }

    int port() const { return port_; }
    std::atomic<mode> behaviour{mode::accept};

    std::vector<proton::message> received() {
        std::lock_guard lock(mutex_);
        return received_;
    }
    std::vector<std::string> audiences() {
        std::lock_guard lock(mutex_);
        return audiences_;
    }
    int connections() {
        std::lock_guard lock(mutex_);
        return connections_;
    }

  private:
    // listen_handler
    void on_open(proton::listener& l) override {
        std::lock_guard lock(mutex_);
        port_ = l.port();
        changed_.notify_all();
    }
    proton::connection_options on_accept(proton::listener&) override {
        proton::connection_options o;
        o.handler(*this).sasl_enabled(true).sasl_allowed_mechs("ANONYMOUS");
        if (cert_) o.ssl_server_options(proton::ssl_server_options(*cert_));
        return o;
    }

    void on_container_start(proton::container& c) override { c.listen("127.0.0.1:0", *this); }

    void on_connection_open(proton::connection& c) override {
        {
            std::lock_guard lock(mutex_);
            ++connections_;
        }
        c.open();
    }

    void on_sender_open(proton::sender& s) override {
        if (s.source().address() == "$cbs") cbs_reply_ = s;
        s.open();
    }

    void on_message(proton::delivery& d, proton::message& m) override {
        if (d.receiver().target().address() == "$cbs") return put_token(d, m);
        {
            std::lock_guard lock(mutex_);
            received_.push_back(m);
        }
        switch (behaviour.load()) {
            case mode::accept:
                return d.accept();
            case mode::hold:
                return;
            case mode::reject: {
                auto* pd = delivery_of(d).get();
                auto* c = pn_disposition_condition(pn_delivery_local(pd));
                pn_condition_set_name(c, "amqp:link:message-size-exceeded");
                pn_condition_set_description(c, "Too large for this event hub.");
                pn_delivery_update(pd, PN_REJECTED);
                pn_delivery_settle(pd);
                return;
            }
        }
    }

    void put_token(proton::delivery& d, proton::message& m) {
        const auto audience = amqp_client::text_of(m.properties().get("name"));
        const auto token = amqp_client::text_of(m.body());
        {
            std::lock_guard lock(mutex_);
            audiences_.push_back(audience);
        }
        int status = 401;
        std::string why = "The shared access signature does not match.";
        if (auto t = auth::parse_sas_token(token);
            t && auth::signature_matches(*t, key, auth::key_encoding::text) &&
            t->key_name == "send" && percent_decode(t->resource) == audience) {
            status = 200;
            why = "OK";
        }
        d.accept();
        proton::message reply;
        reply.correlation_id(m.id());
        reply.to(m.reply_to());
        reply.properties().put("status-code", status);
        reply.properties().put("status-description", why);
        if (cbs_reply_) cbs_reply_.send(reply);
    }

    void on_error(const proton::error_condition&) override {}

    std::optional<proton::ssl_certificate> cert_;
    proton::container container_{*this};
    std::thread thread_;
    std::mutex mutex_;
    std::condition_variable changed_;
    int port_ = 0;
    int connections_ = 0;
    std::vector<proton::message> received_;
    std::vector<std::string> audiences_;
    proton::sender cbs_reply_;
};

routing::endpoint endpoint_for(const std::string& connection_string) {
    routing::endpoint e;
    e.kind = routing::endpoint_kind::event_hub;
    e.name = "remote";
    e.connection_string = connection_string;
    return e;
}

// Plain AMQP to the fake, as to the emulator.
std::string plain_connection_string(int port, std::string_view with_key = key) {
    return "Endpoint=sb://127.0.0.1:" + std::to_string(port) +
           "/;SharedAccessKeyName=send;SharedAccessKey=" + std::string(with_key) +
           ";EntityPath=hub;UseDevelopmentEmulator=true";
}

storage::event_record event(const std::string& device, const std::string& body) {
    storage::event_record e;
    e.body = body;
    e.application_properties = {{"level", "high"}};
    e.system_properties = {{"message-id", "id-" + body},
                           {"content-type", "application/json"},
                           {"content-encoding", "utf-8"},
                           {"user-id", "skipped"},
                           {"iothub-connection-device-id", device},
                           {"iothub-enqueuedtime", "2024-05-01T12:00:00.000Z"},
                           {"dt-subject", "thermostat"}};
    return e;
}

storage::kv_write cursor(std::uint64_t n) {
    storage::kv_write w;
    w.key = std::string(cursor_key);
    w.value = std::to_string(n);
    return w;
}

class EventHubSink : public ::testing::Test {
  protected:
    std::unique_ptr<storage::engine> engine_ = storage::open_memory({});
    storage::kv_store& kv() { return engine_->kv(); }
    bool cursor_written() {
        auto v = kv().get(cursor_key);
        return v && v->has_value();
    }
};

TEST(EventHubTarget, ReadsTheConnectionString) {
    auto t = parse_eventhub_target(endpoint_for(
        "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey=abc=;"
        "EntityPath=telemetry"));
    ASSERT_TRUE(t) << t.error().message();
    EXPECT_EQ(t->host, "ns.servicebus.windows.net");
    EXPECT_EQ(t->port, 5671);
    EXPECT_TRUE(t->tls);
    EXPECT_EQ(t->key_name, "send");
    EXPECT_EQ(t->key, "abc=");
    EXPECT_EQ(t->url(), "amqps://ns.servicebus.windows.net:5671");
    EXPECT_EQ(t->audience(), "sb://ns.servicebus.windows.net/telemetry");

    auto e = endpoint_for("endpoint=sb://localhost:15671;sharedaccesskeyname=k;sharedaccesskey=v");
    e.entity_path = "mirror";
    t = parse_eventhub_target(e);
    ASSERT_TRUE(t) << t.error().message();
    EXPECT_EQ(t->url(), "amqps://localhost:15671");
    EXPECT_EQ(t->entity, "mirror") << "entityPath when the string has no EntityPath";

    t = parse_eventhub_target(endpoint_for(
        "Endpoint=sb://localhost;SharedAccessKeyName=k;SharedAccessKey=v;EntityPath=eh1;"
        "UseDevelopmentEmulator=true"));
    ASSERT_TRUE(t);
    EXPECT_EQ(t->url(), "amqp://localhost:5672") << "the emulator speaks plain AMQP";

    for (auto bad :
         {"Endpoint=https://x/;SharedAccessKeyName=k;SharedAccessKey=v;EntityPath=e",
          "Endpoint=sb://x/;SharedAccessKey=v;EntityPath=e",
          "Endpoint=sb://x/;SharedAccessKeyName=k;SharedAccessKey=v",
          "Endpoint=sb://x:99999/;SharedAccessKeyName=k;SharedAccessKey=v;EntityPath=e"}) {
        auto r = parse_eventhub_target(endpoint_for(bad));
        ASSERT_FALSE(r) << bad;
        EXPECT_EQ(r.error().code(), errc::argument_invalid);
        EXPECT_NE(r.error().message().find("'remote'"), std::string::npos);
    }
}

TEST(EventHubTarget, TokensAreForTheEntityAndSignedWithTheKeysText) {
    auto t = parse_eventhub_target(endpoint_for(plain_connection_string(5672)));
    ASSERT_TRUE(t);
    const auto token = eventhub_token(*t, 2000000000);
    EXPECT_EQ(token.rfind("SharedAccessSignature sr=sb%3A%2F%2F127.0.0.1%2Fhub&sig=", 0), 0u)
        << token;
    auto parsed = auth::parse_sas_token(token);
    ASSERT_TRUE(parsed);
    EXPECT_EQ(percent_decode(parsed->resource), "sb://127.0.0.1/hub");
    EXPECT_EQ(parsed->key_name, "send");
    EXPECT_EQ(parsed->expiry, 2000000000);
    EXPECT_TRUE(auth::signature_matches(*parsed, key, auth::key_encoding::text));
    EXPECT_FALSE(auth::signature_matches(*parsed, key, auth::key_encoding::base64));
}

TEST_F(EventHubSink, DeliversEveryMessageAndHoldsTheCursorUntilFlush) {
    fake_event_hub hub;
    auto sink = make_eventhub_sink(endpoint_for(plain_connection_string(hub.port())), kv());
    ASSERT_TRUE(sink) << sink.error().message();
    std::vector<storage::event_record> events{event("dev-1", "a"), event("dev-2", "b"),
                                              event("dev-1", "c")};
    auto r = (*sink)->deliver(0, events, cursor(3));
    ASSERT_TRUE(r) << r.error().message();
    EXPECT_FALSE(cursor_written()) << "cursors wait for flush";
    ASSERT_TRUE((*sink)->flush(now(), false));
    EXPECT_TRUE(cursor_written());

    auto got = hub.received();
    ASSERT_EQ(got.size(), 3u);
    std::vector<std::string> bodies;
    for (auto& m : got) bodies.push_back(amqp_client::text_of(m.body()));
    EXPECT_EQ(bodies, (std::vector<std::string>{"a", "b", "c"}));
    auto& m = got[1];
    EXPECT_EQ(m.body().type(), proton::BINARY) << "a data section";
    EXPECT_EQ(m.id(), proton::message_id("id-b"));
    EXPECT_EQ(m.content_type(), "application/json");
    EXPECT_EQ(m.content_encoding(), "utf-8");
    EXPECT_TRUE(m.user().empty());
    EXPECT_EQ(amqp_client::text_of(m.properties().get("level")), "high");
    auto ann = [&](const char* k) {
        return amqp_client::text_of(m.message_annotations().get(proton::annotation_key(k)));
    };
    EXPECT_EQ(ann("x-opt-partition-key"), "dev-2");
    EXPECT_EQ(ann("iothub-connection-device-id"), "dev-2");
    EXPECT_EQ(ann("dt-subject"), "thermostat");
    EXPECT_EQ(m.message_annotations().get(proton::annotation_key("iothub-enqueuedtime")).type(),
              proton::TIMESTAMP);
    EXPECT_EQ(proton::get<proton::timestamp>(
                  m.message_annotations().get(proton::annotation_key("iothub-enqueuedtime"))),
              proton::timestamp(1714564800000));
    EXPECT_EQ(hub.audiences(), (std::vector<std::string>{"sb://127.0.0.1/hub"}));

    // Nothing to send: the cursor only, and no new connection.
    ASSERT_TRUE((*sink)->deliver(0, {}, cursor(4)));
    ASSERT_TRUE((*sink)->deliver(0, {event("dev-3", "d")}, cursor(5)));
    EXPECT_EQ(hub.connections(), 1);
}

TEST_F(EventHubSink, ARejectionFailsTheCallWithTheEventHubsWordsAndTheConnectionGoesOn) {
    fake_event_hub hub;
    hub.behaviour = fake_event_hub::mode::reject;
    auto sink = make_eventhub_sink(endpoint_for(plain_connection_string(hub.port())), kv());
    ASSERT_TRUE(sink);
    auto r = (*sink)->deliver(0, {event("dev-1", "a")}, cursor(1));
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message().find("amqp:link:message-size-exceeded"), std::string::npos)
        << r.error().message();
    EXPECT_NE(r.error().message().find("Too large for this event hub."), std::string::npos);
    ASSERT_TRUE((*sink)->flush(now(), true));
    EXPECT_FALSE(cursor_written());

    hub.behaviour = fake_event_hub::mode::accept;
    r = (*sink)->deliver(0, {event("dev-1", "a")}, cursor(1));
    ASSERT_TRUE(r) << r.error().message();
    ASSERT_TRUE((*sink)->flush(now(), true));
    EXPECT_TRUE(cursor_written());
    EXPECT_EQ(hub.connections(), 1);
}

TEST_F(EventHubSink, AWrongKeyIsAnAuthorizationFailure) {
    fake_event_hub hub;
    auto sink = make_eventhub_sink(
        endpoint_for(plain_connection_string(hub.port(), "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZw==")),
        kv());
    ASSERT_TRUE(sink);
    auto r = (*sink)->deliver(0, {event("dev-1", "a")}, cursor(1));
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code(), errc::unauthorized);
    EXPECT_NE(r.error().message().find("refused the token"), std::string::npos)
        << r.error().message();
    EXPECT_NE(r.error().message().find("401"), std::string::npos);
    EXPECT_TRUE(hub.received().empty());
}

TEST_F(EventHubSink, NoDispositionInTimeFailsAndTheNextDeliveryReconnects) {
    fake_event_hub hub;
    hub.behaviour = fake_event_hub::mode::hold;
    eventhub_sink_options o;
    o.timeout = 500ms;
    auto sink = make_eventhub_sink(endpoint_for(plain_connection_string(hub.port())), kv(), o);
    ASSERT_TRUE(sink);
    const auto start = std::chrono::steady_clock::now();
    auto r = (*sink)->deliver(0, {event("dev-1", "a"), event("dev-1", "b")}, cursor(1));
    ASSERT_FALSE(r);
    EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
    EXPECT_NE(r.error().message().find("0 of 2"), std::string::npos) << r.error().message();

    hub.behaviour = fake_event_hub::mode::accept;
    r = (*sink)->deliver(0, {event("dev-1", "a"), event("dev-1", "b")}, cursor(1));
    ASSERT_TRUE(r) << r.error().message();
    EXPECT_EQ(hub.connections(), 2);
}

TEST_F(EventHubSink, AnEventHubThatIsNotThereFailsWithinTheTimeoutAndCloses) {
    int port = 0;
    {
        fake_event_hub gone;  // a port that was just free
        port = gone.port();
    }
    eventhub_sink_options o;
    o.timeout = 2s;
    auto sink = make_eventhub_sink(endpoint_for(plain_connection_string(port)), kv(), o);
    ASSERT_TRUE(sink);
    const auto start = std::chrono::steady_clock::now();
    auto r = (*sink)->deliver(0, {event("dev-1", "a")}, cursor(1));
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code(), errc::service_unavailable);
    EXPECT_NE(r.error().message().find("amqp://127.0.0.1:" + std::to_string(port)),
              std::string::npos)
        << r.error().message();
    sink->reset();
    EXPECT_LT(std::chrono::steady_clock::now() - start, 6s);
}

TEST_F(EventHubSink, TheTokenIsRenewedWhileTheConnectionLives) {
    fake_event_hub hub;
    eventhub_sink_options o;
    o.token_renewal = 1s;
    auto sink = make_eventhub_sink(endpoint_for(plain_connection_string(hub.port())), kv(), o);
    ASSERT_TRUE(sink);
    ASSERT_TRUE((*sink)->deliver(0, {event("dev-1", "a")}, cursor(1)));
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (hub.audiences().size() < 3 && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(50ms);
    EXPECT_GE(hub.audiences().size(), 3u);
    ASSERT_TRUE((*sink)->deliver(0, {event("dev-1", "b")}, cursor(2)));
    EXPECT_EQ(hub.connections(), 1);
}

TEST_F(EventHubSink, TlsTrustsTheExtraCasAndNothingElseBeyondTheSystems) {
    const auto root = std::filesystem::temp_directory_path() /
                      ("eh-sink-tls-" + std::to_string(::getpid()) + "-" + std::to_string(rand()));
    auto ours = tls::ensure_dev_certificates(root / "ours", {"localhost"});
    auto other = tls::ensure_dev_certificates(root / "other", {"localhost"});
    ASSERT_TRUE(ours && other);
    {
        fake_event_hub hub(
            proton::ssl_certificate(ours->server_cert.string(), ours->server_key.string()));
        const auto cs = "Endpoint=sb://localhost:" + std::to_string(hub.port()) +
                        "/;SharedAccessKeyName=send;SharedAccessKey=" + std::string(key) +
                        ";EntityPath=hub";
        eventhub_sink_options o;
        o.timeout = 5s;
        o.extra_ca_files = {other->ca_cert};
        auto untrusted = make_eventhub_sink(endpoint_for(cs), kv(), o);
        ASSERT_TRUE(untrusted);
        auto r = (*untrusted)->deliver(0, {event("dev-1", "a")}, cursor(1));
        ASSERT_FALSE(r);
        EXPECT_TRUE(hub.received().empty());

        o.extra_ca_files = {other->ca_cert, ours->ca_cert};
        auto trusted = make_eventhub_sink(endpoint_for(cs), kv(), o);
        ASSERT_TRUE(trusted);
        r = (*trusted)->deliver(0, {event("dev-1", "a")}, cursor(1));
        ASSERT_TRUE(r) << r.error().message();
        EXPECT_EQ(hub.received().size(), 1u);
        EXPECT_EQ(hub.audiences(), (std::vector<std::string>{"sb://localhost/hub"}));
    }
    {
        eventhub_sink_options o;
        o.extra_ca_files = {root / "nowhere.pem"};
        auto r = make_eventhub_sink(endpoint_for(plain_connection_string(5672)), kv(), o);
        ASSERT_FALSE(r);
        EXPECT_NE(r.error().message().find("nowhere.pem"), std::string::npos);
    }
    std::filesystem::remove_all(root);
}

}  // namespace
}  // namespace iothub::endpoints
