// The AMQP connection's link families, tested without a socket: a Proton client driver talks to
// the hub's connection through memory (the server's output is captured by a transport that keeps
// what it is asked to write), with the real services on the memory engine.
#include "amqp/detail/connection.hpp"
#include "auth/connection_string.hpp"
#include "auth/sas.hpp"
#include "common/encoding.hpp"
#include "storage/engine.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/json.hpp>
#include <gtest/gtest.h>
#include <proton/connection.h>
#include <proton/delivery.h>
#include <proton/disposition.h>
#include <proton/event.h>
#include <proton/session.h>

#include <algorithm>
#include <filesystem>
#include <functional>

namespace iothub::amqp {
namespace {
using namespace std::chrono_literals;
namespace asio = boost::asio;
namespace json = boost::json;

// A stream that keeps what the hub writes and never has anything to read.
class memory_stream final : public net::stream {
  public:
    explicit memory_stream(std::string& sink) : sink_(sink) {}
    net::io_result read_some(std::span<char>) override {
        return net::io_result::wait(net::direction::read);
    }
    net::io_result write_some(std::span<const char> b) override {
        sink_.append(b.data(), b.size());
        return net::io_result::done(b.size());
    }
    void async_wait(net::direction, std::function<void(net::error_code)> ready) override {
        waiting_ = std::move(ready);  // never readable; let go of at close
    }
    void close() override { waiting_ = nullptr; }
    std::string peer() const override { return "memory"; }
    std::string_view kind() const override { return "amqp-test"; }

  private:
    std::string& sink_;
    std::function<void(net::error_code)> waiting_;
};

// The client side: a Proton driver, links by address, and what arrived on them.
class client {
  public:
    client() {
        std::memset(&driver_, 0, sizeof driver_);
        pn_connection_driver_init(&driver_, nullptr, nullptr);
        pn_connection_set_container(driver_.connection, "test-client");
        pn_connection_set_hostname(driver_.connection, "hub.example");
        pn_connection_open(driver_.connection);
        session_ = pn_session(driver_.connection);
        pn_session_open(session_);
    }
    ~client() { pn_connection_driver_destroy(&driver_); }

    pn_link_t* sender(const std::string& address) {
        auto* l = pn_sender(session_, ("snd-" + address + std::to_string(n_++)).c_str());
        pn_terminus_set_address(pn_link_target(l), address.c_str());
        pn_link_open(l);
        return l;
    }
    pn_link_t* receiver(const std::string& address, int credit = 10) {
        auto* l = pn_receiver(session_, ("rcv-" + address + std::to_string(n_++)).c_str());
        pn_terminus_set_address(pn_link_source(l), address.c_str());
        pn_link_open(l);
        pn_link_flow(l, credit);
        return l;
    }
    pn_delivery_t* send(pn_link_t* l, pn_message_t* m) {
        auto tag = std::to_string(n_++);
        auto* d = pn_delivery(l, pn_dtag(tag.data(), tag.size()));
        pn_rwbytes_t buf{0, nullptr};
        auto size = pn_message_encode2(m, &buf);
        pn_link_send(l, buf.start, static_cast<std::size_t>(size));
        std::free(buf.start);
        pn_link_advance(l);
        return d;
    }

    // Bytes for the hub.
    std::string output() {
        std::string out;
        for (;;) {
            auto b = pn_connection_driver_write_buffer(&driver_);
            if (b.size == 0) break;
            out.append(b.start, b.size);
            pn_connection_driver_write_done(&driver_, b.size);
        }
        return out;
    }
    // Bytes from the hub; messages that arrived complete are decoded into `received`.
    void input(std::string_view bytes) {
        while (!bytes.empty()) {
            auto rb = pn_connection_driver_read_buffer(&driver_);
            if (rb.size == 0) break;
            auto k = std::min(rb.size, bytes.size());
            std::memcpy(rb.start, bytes.data(), k);
            pn_connection_driver_read_done(&driver_, k);
            bytes.remove_prefix(k);
        }
        while (auto* e = pn_connection_driver_next_event(&driver_)) {
            if (pn_event_type(e) != PN_DELIVERY) continue;
            auto* d = pn_event_delivery(e);
            auto* l = pn_delivery_link(d);
            if (!pn_link_is_receiver(l) || pn_delivery_partial(d) || !pn_delivery_readable(d))
                continue;
            std::string bytes_in(pn_delivery_pending(d), '\0');
            pn_link_recv(l, bytes_in.data(), bytes_in.size());
            pn_link_advance(l);
            auto m = make_message();
            pn_message_decode(m.get(), bytes_in.data(), bytes_in.size());
            received.push_back({l, d, std::move(m)});
        }
    }

    struct arrival {
        pn_link_t* link;
        pn_delivery_t* delivery;
        message_ptr message;
    };
    std::vector<arrival> received;
    std::size_t on(pn_link_t* l) const {
        return static_cast<std::size_t>(std::count_if(
            received.begin(), received.end(), [l](const arrival& a) { return a.link == l; }));
    }

  private:
    pn_connection_driver_t driver_;
    pn_session_t* session_ = nullptr;
    int n_ = 0;
};

bool remote_open(pn_link_t* l) {
    return pn_link_state(l) & PN_REMOTE_ACTIVE;
}
bool remote_closed(pn_link_t* l) {
    return pn_link_state(l) & PN_REMOTE_CLOSED;
}
std::string remote_condition(pn_link_t* l) {
    const char* n = pn_condition_get_name(pn_link_remote_condition(l));
    return n ? n : "";
}

class AmqpLinks : public ::testing::Test {
  protected:
    void SetUp() override {
        auto spec = registry::parse_device(json::object{}, "dev1");
        ASSERT_TRUE(spec);
        key_ = registry_.put_device(*spec, {})->auth.primary_key;
        root_ = std::filesystem::temp_directory_path() /
                ("amqp-links-" + std::to_string(::getpid()) + "-" + std::to_string(rand()));
        file_upload::upload_settings fs;
        fs.host_name = "hub.example";
        auto blobs = storage::open_file_blobs(root_);
        ASSERT_TRUE(blobs) << blobs.error().message();
        blobs_ = std::move(*blobs);
        files_ = std::make_unique<file_upload::file_upload_service>(engine_->kv(), *blobs_, fs);
        ASSERT_TRUE(files_->load());
        state_ = std::make_shared<detail::server_state>(
            services{authenticator_, policies_, hosts_, c2d_, "hub.example", engine_->events(),
                     groups_, auth::event_hub_name("hub.example"), now(), *files_},
            sessions_, server_settings{});
        // Two event hubs routing endpoints host.
        inbox_ = *engine_->log("hosted-inbox");
        mirror_ = *engine_->log("hosted-mirror");
        state_->svc.hosted_event_hub = [this](std::string_view name) -> storage::event_log* {
            if (iequals(name, "inbox")) return inbox_;
            if (iequals(name, "mirror")) return mirror_;
            return nullptr;
        };
        conn_ = std::make_shared<net::connection>(std::make_unique<memory_stream>(wire_),
                                                  io_.get_executor(), nullptr);
        auto handler = std::make_unique<detail::connection>(state_, *conn_);
        hub_ = handler.get();
        conn_->set_handler(std::move(handler));
        conn_->start();
        exchange();
    }
    void TearDown() override {
        hub_->closed();
        conn_->stream().close();
        conn_.reset();
        blocking_.stop();
        std::filesystem::remove_all(root_);
    }

    // Moves bytes both ways and runs the hub's handlers until `done` holds (ten seconds at most).
    bool exchange(const std::function<bool()>& done = [] { return true; }) {
        const auto deadline = std::chrono::steady_clock::now() + 10s;
        for (;;) {
            auto out = client_.output();
            if (!out.empty()) hub_->received(out);
            conn_->wake();
            io_.restart();
            io_.run_for(2ms);
            if (!wire_.empty()) {
                std::string in;
                std::swap(in, wire_);
                client_.input(in);
            }
            if (done()) return true;
            if (std::chrono::steady_clock::now() > deadline) return false;
        }
    }

    // A put-token on $cbs; the reply's status-code.
    int put_token(const std::string& audience, const std::string& token) {
        if (!cbs_out_) {
            cbs_out_ = client_.sender("$cbs");
            cbs_in_ = client_.receiver("$cbs");
        }
        auto m = make_message();
        pn_atom_t id;
        const std::string text = "req-" + std::to_string(++requests_);
        id.type = PN_STRING;
        id.u.as_bytes = pn_bytes(text.size(), text.data());
        pn_message_set_id(m.get(), id);
        pn_message_set_reply_to(m.get(), "cbs");
        auto* props = pn_message_properties(m.get());
        put_string_property(props, "operation", "put-token");
        put_string_property(props, "type", "servicebus.windows.net:sastoken");
        put_string_property(props, "name", audience);
        pn_data_put_string(pn_message_body(m.get()), pn_bytes(token.size(), token.data()));
        const auto before = client_.on(cbs_in_);
        client_.send(cbs_out_, m.get());
        if (!exchange([&] { return client_.on(cbs_in_) > before; })) return -1;
        auto status = application_property(client_.received.back().message.get(), "status-code");
        return status ? std::stoi(*status) : -1;
    }
    std::string device_token(const std::string& id, const std::string& key) {
        return auth::make_sas_token("hub.example/devices/" + id, key, unix_seconds(now()) + 3600);
    }
    std::string service_token() {
        const auto* p = policies_.find("service");
        return auth::make_sas_token("hub.example", p->primary_key, unix_seconds(now()) + 3600,
                                    "service");
    }
    // An Event Hubs token (the key's text signs) for `sb://hub.example/<entity>`.
    std::string event_hubs_token(const std::string& entity, const std::string& policy = "service") {
        const auto* p = policies_.find(policy);
        return auth::make_sas_token("sb://hub.example/" + entity, p->primary_key,
                                    unix_seconds(now()) + 3600, policy, auth::key_encoding::text);
    }
    std::string delivery_condition(pn_delivery_t* d) {
        const char* n = pn_condition_get_name(pn_disposition_condition(pn_delivery_remote(d)));
        return n ? n : "";
    }

    std::unique_ptr<storage::engine> engine_ = storage::open_memory({4, {}});
    registry::device_registry registry_{engine_->kv()};
    auth::policy_set policies_{auth::default_policies()};
    auth::host_names hosts_{{"hub.example"}};
    asio::io_context io_;
    runtime::blocking_pool blocking_{2};
    device_auth::device_authenticator authenticator_{registry_, policies_, hosts_};
    connections::connection_table connections_;
    telemetry::telemetry_service telemetry_{engine_->events()};
    telemetry::consumer_groups groups_{engine_->kv(), 20};
    twin::twin_service twins_{engine_->kv(), registry_, engine_->hub_events(), "hub.example"};
    methods::method_service methods_{connections_, io_.get_executor()};
    c2d::c2d_service c2d_{engine_->kv(), registry_, connections_};
    session::services sessions_{authenticator_, connections_, telemetry_,    twins_,
                                methods_,       c2d_,         engine_->kv(), blocking_};
    std::filesystem::path root_;
    std::unique_ptr<storage::blob_store> blobs_;
    std::unique_ptr<file_upload::file_upload_service> files_;
    std::shared_ptr<detail::server_state> state_;
    storage::event_log* inbox_ = nullptr;
    storage::event_log* mirror_ = nullptr;
    std::string wire_;
    std::shared_ptr<net::connection> conn_;
    detail::connection* hub_ = nullptr;
    client client_;
    pn_link_t* cbs_out_ = nullptr;
    pn_link_t* cbs_in_ = nullptr;
    int requests_ = 0;
    std::string key_;
};

// --- $cbs ---------------------------------------------------------------------------------------

TEST_F(AmqpLinks, PutTokenAnswersOkForAGoodTokenAnd401ForAWrongKey) {
    EXPECT_EQ(put_token("hub.example/devices/dev1", device_token("dev1", key_)), 200);
    EXPECT_EQ(put_token("hub.example/devices/dev1",
                        device_token("dev1", "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=")),
              401);
}

// --- device links -------------------------------------------------------------------------------

TEST_F(AmqpLinks, DeviceLinksNeedTheirIdentitysToken) {
    auto* l = client_.sender("/devices/dev1/messages/events");
    ASSERT_TRUE(exchange([&] { return remote_closed(l); }));
    EXPECT_EQ(remote_condition(l), "amqp:unauthorized-access");
}

TEST_F(AmqpLinks, ADeviceLinkOverTheHubsConnectRateIsRefusedAsThrottled) {
    session::connect_limiter limit(1, 1);
    sessions_.connects = &limit;
    ASSERT_TRUE(limit.try_acquire());  // none left for the next second
    ASSERT_EQ(put_token("hub.example/devices/dev1", device_token("dev1", key_)), 200);
    auto* l = client_.sender("/devices/dev1/messages/events");
    ASSERT_TRUE(exchange([&] { return remote_closed(l); }));
    EXPECT_EQ(remote_condition(l), "com.microsoft:device-container-throttled");
    EXPECT_FALSE(connections_.find("dev1", ""));
    sessions_.connects = nullptr;
}

TEST_F(AmqpLinks, TelemetryIsAcceptedOnceStoredAndTheDeviceShowsConnected) {
    ASSERT_EQ(put_token("hub.example/devices/dev1", device_token("dev1", key_)), 200);
    auto* l = client_.sender("/devices/dev1/messages/events");
    ASSERT_TRUE(exchange([&] { return remote_open(l) && pn_link_credit(l) > 0; }));
    EXPECT_TRUE(connections_.find("dev1", ""));
    auto m = make_message();
    put_string_property(pn_message_properties(m.get()), "k", "v");
    set_data_body(m.get(), "hello");
    auto* d = client_.send(l, m.get());
    ASSERT_TRUE(exchange([&] { return pn_delivery_remote_state(d) != 0; }));
    EXPECT_EQ(pn_delivery_remote_state(d), PN_ACCEPTED);
    auto events = engine_->events().read(telemetry_.partition_of("dev1"), 0, 10);
    ASSERT_EQ(events->size(), 1u);
    EXPECT_EQ(events->front().record.body, "hello");
    EXPECT_EQ(events->front().record.application_properties, (storage::property_list{{"k", "v"}}));

    pn_link_close(l);
    ASSERT_TRUE(exchange([&] { return !connections_.find("dev1", ""); }))
        << "the identity leaves with its last link";
}

TEST_F(AmqpLinks, TelemetryThatCannotBeStoredIsRejectedAndTheLinkGoesOn) {
    ASSERT_EQ(put_token("hub.example/devices/dev1", device_token("dev1", key_)), 200);
    auto* l = client_.sender("/devices/dev1/messages/events");
    ASSERT_TRUE(exchange([&] { return remote_open(l) && pn_link_credit(l) > 0; }));
    storage::faults_of(*engine_)->fail_appends(1);
    auto m = make_message();
    set_data_body(m.get(), "lost");
    auto* lost = client_.send(l, m.get());
    ASSERT_TRUE(exchange([&] { return pn_delivery_remote_state(lost) != 0; }));
    EXPECT_EQ(pn_delivery_remote_state(lost), PN_REJECTED);
    const char* cond = pn_condition_get_name(pn_disposition_condition(pn_delivery_remote(lost)));
    EXPECT_STREQ(cond, "amqp:internal-error");
    set_data_body(m.get(), "kept");
    auto* kept = client_.send(l, m.get());
    ASSERT_TRUE(exchange([&] { return pn_delivery_remote_state(kept) != 0; }));
    EXPECT_EQ(pn_delivery_remote_state(kept), PN_ACCEPTED);
    auto events = engine_->events().read(telemetry_.partition_of("dev1"), 0, 10);
    ASSERT_EQ(events->size(), 1u);
    EXPECT_EQ(events->front().record.body, "kept");
}

TEST_F(AmqpLinks, C2dIsDeliveredWithAGuidTagAndAcceptCompletesIt) {
    ASSERT_EQ(put_token("hub.example/devices/dev1", device_token("dev1", key_)), 200);
    c2d::message msg;
    msg.message_id = "m1";
    msg.body = "to the device";
    ASSERT_TRUE(c2d_.send("dev1", msg, now()));
    auto* r = client_.receiver("/devices/dev1/messages/devicebound");
    ASSERT_TRUE(exchange([&] { return client_.on(r) == 1; }));
    auto& got = client_.received.back();
    EXPECT_EQ(body_bytes(got.message.get()), "to the device");
    EXPECT_EQ(pn_delivery_tag(got.delivery).size, 16u) << "the C# SDK reads a GUID";
    pn_delivery_update(got.delivery, PN_ACCEPTED);
    pn_delivery_settle(got.delivery);
    ASSERT_TRUE(exchange([&] { return c2d_.depth("dev1") == 0; }));
}

TEST_F(AmqpLinks, TwinRequestsAreAnsweredInOrderWithTheirCorrelation) {
    ASSERT_EQ(put_token("hub.example/devices/dev1", device_token("dev1", key_)), 200);
    auto* out = client_.sender("/devices/dev1/twin");
    auto* in = client_.receiver("/devices/dev1/twin");
    ASSERT_TRUE(exchange([&] { return remote_open(out) && remote_open(in); }));
    auto request = [&](const char* op, const char* resource, std::string body, const char* cid) {
        auto m = make_message();
        auto* ann = pn_message_annotations(m.get());
        put_string_property(ann, "operation", op, true);
        if (resource) put_string_property(ann, "resource", resource, true);
        pn_atom_t id;
        id.type = PN_STRING;
        id.u.as_bytes = pn_bytes(std::strlen(cid), cid);
        pn_message_set_correlation_id(m.get(), id);
        set_data_body(m.get(), body);
        client_.send(out, m.get());
    };
    request("PATCH", "/properties/reported", R"({"temp":21})", "c1");
    request("POST", "/nowhere", "", "c2");
    request("GET", nullptr, "", "c3");
    ASSERT_TRUE(exchange([&] { return client_.on(in) == 3; }));
    std::vector<std::pair<std::string, std::string>> answers;  // correlation, status
    for (auto& a : client_.received)
        if (a.link == in)
            answers.emplace_back(id_text(pn_message_get_correlation_id(a.message.get())),
                                 annotation(a.message.get(), "status").value_or(""));
    EXPECT_EQ(answers, (std::vector<std::pair<std::string, std::string>>{
                           {"c1", "204"}, {"c2", "400"}, {"c3", "200"}}));
    auto twin = json::parse(*body_bytes(client_.received.back().message.get()));
    EXPECT_EQ(twin.at("reported").at("temp"), 21);
}

// --- service links ------------------------------------------------------------------------------

TEST_F(AmqpLinks, ServiceC2dNeedsServiceConnectAndEnqueues) {
    auto* refused = client_.sender("/messages/devicebound");
    ASSERT_TRUE(exchange([&] { return remote_closed(refused); }));
    EXPECT_EQ(remote_condition(refused), "amqp:unauthorized-access");

    ASSERT_EQ(put_token("hub.example", service_token()), 200);
    auto* l = client_.sender("/messages/devicebound");
    ASSERT_TRUE(exchange([&] { return remote_open(l) && pn_link_credit(l) > 0; }));
    auto m = make_message();
    pn_message_set_address(m.get(), "/devices/dev1/messages/devicebound");
    set_data_body(m.get(), "queued");
    auto* d = client_.send(l, m.get());
    ASSERT_TRUE(exchange([&] { return pn_delivery_remote_state(d) != 0; }));
    EXPECT_EQ(pn_delivery_remote_state(d), PN_ACCEPTED);
    EXPECT_EQ(c2d_.depth("dev1"), 1u);

    auto nowhere = make_message();
    pn_message_set_address(nowhere.get(), "/devices/nobody/messages/devicebound");
    set_data_body(nowhere.get(), "x");
    auto* d2 = client_.send(l, nowhere.get());
    ASSERT_TRUE(exchange([&] { return pn_delivery_remote_state(d2) != 0; }));
    EXPECT_EQ(pn_delivery_remote_state(d2), PN_REJECTED);
}

// --- Event Hubs links ---------------------------------------------------------------------------

TEST_F(AmqpLinks, PartitionReceiversNeedAnExistingConsumerGroupAndReadEvents) {
    ASSERT_EQ(put_token("hub.example", service_token()), 200);
    const auto hub = auth::event_hub_name("hub.example");
    auto* unknown = client_.receiver(hub + "/ConsumerGroups/nobody/Partitions/0");
    ASSERT_TRUE(exchange([&] { return remote_closed(unknown); }));
    EXPECT_EQ(remote_condition(unknown), "amqp:not-found");

    storage::event_record e;
    e.body = "stored";
    std::optional<result<void>> done;
    telemetry_.ingest({"dev1"}, e, [&](result<void> r) { done = r; });
    ASSERT_TRUE(done && *done);
    const int p = telemetry_.partition_of("dev1");
    auto* r = client_.receiver(hub + "/ConsumerGroups/$Default/Partitions/" + std::to_string(p));
    // No filter: from the end, so only what arrives after the attach.
    ASSERT_TRUE(exchange([&] { return remote_open(r); }));
    done.reset();
    e.body = "after attach";
    telemetry_.ingest({"dev1"}, e, [&](result<void> x) { done = x; });
    ASSERT_TRUE(exchange([&] { return client_.on(r) == 1; }));
    EXPECT_EQ(body_bytes(client_.received.back().message.get()), "after attach");
}

// --- sends to hosted event hubs -----------------------------------------------------------------

TEST_F(AmqpLinks, HostedEventHubSendersNeedATokenForTheirEntityAndAnEntityThatTakesSends) {
    auto* no_token = client_.sender("inbox");
    ASSERT_TRUE(exchange([&] { return remote_closed(no_token); }));
    EXPECT_EQ(remote_condition(no_token), "amqp:unauthorized-access");

    ASSERT_EQ(put_token("sb://hub.example/mirror", event_hubs_token("mirror")), 200);
    auto* other_entity = client_.sender("inbox");
    ASSERT_TRUE(exchange([&] { return remote_closed(other_entity); }));
    EXPECT_EQ(remote_condition(other_entity), "amqp:unauthorized-access")
        << "a token for mirror does not cover inbox";
    auto* mirror = client_.sender("amqps://hub.example/Mirror");
    ASSERT_TRUE(exchange([&] { return remote_open(mirror); }));
    EXPECT_FALSE(remote_closed(mirror));

    ASSERT_EQ(put_token("hub.example", service_token()), 200);
    for (const std::string& address :
         {auth::event_hub_name("hub.example"), std::string("nowhere"),
          std::string("inbox/Partitions/4"), std::string("inbox/Partitions/x")}) {
        auto* l = client_.sender(address);
        ASSERT_TRUE(exchange([&] { return remote_closed(l); })) << address;
        EXPECT_EQ(remote_condition(l), "amqp:not-found") << address;
    }
    auto* receiver = client_.receiver("inbox");
    ASSERT_TRUE(exchange([&] { return remote_closed(receiver); }));
    EXPECT_EQ(remote_condition(receiver), "amqp:not-found");
    // A token of the whole hub covers every hosted event hub.
    auto* inbox = client_.sender("inbox");
    ASSERT_TRUE(exchange([&] { return remote_open(inbox); }));
    EXPECT_FALSE(remote_closed(inbox));
    EXPECT_EQ(pn_link_remote_max_message_size(inbox), detail::event_hub_send_max_bytes);
}

TEST_F(AmqpLinks, EventsSentToAHostedEventHubAreAcceptedOnceStoredWithTheirProperties) {
    ASSERT_EQ(put_token("sb://hub.example/inbox", event_hubs_token("inbox")), 200);
    auto* l = client_.sender("inbox");
    ASSERT_TRUE(exchange([&] { return remote_open(l) && pn_link_credit(l) > 0; }));
    auto m = make_message();
    pn_atom_t id;
    id.type = PN_STRING;
    id.u.as_bytes = pn_bytes(2, "m1");
    pn_message_set_id(m.get(), id);
    pn_message_set_content_type(m.get(), "application/json");
    put_string_property(pn_message_properties(m.get()), "level", "high");
    auto* ann = pn_message_annotations(m.get());
    put_string_property(ann, "x-opt-partition-key", "dev-7", true);
    put_string_property(ann, "iothub-connection-device-id", "dev-7", true);
    put_string_property(ann, "x-opt-other", "dropped", true);
    set_data_body(m.get(), R"({"t":1})");
    auto* d = client_.send(l, m.get());
    ASSERT_TRUE(exchange([&] { return pn_delivery_remote_state(d) != 0; }));
    EXPECT_EQ(pn_delivery_remote_state(d), PN_ACCEPTED);

    const int p = storage::partition_for("dev-7", inbox_->partition_count());
    auto events = inbox_->read(p, 0, 10);
    ASSERT_TRUE(events);
    ASSERT_EQ(events->size(), 1u);
    const auto& r = events->front().record;
    EXPECT_EQ(r.body, R"({"t":1})");
    EXPECT_EQ(r.application_properties, (storage::property_list{{"level", "high"}}));
    auto sys = [&](const std::string& k) -> std::string {
        for (const auto& [name, v] : r.system_properties)
            if (name == k) return v;
        return "(absent)";
    };
    EXPECT_EQ(sys("message-id"), "m1");
    EXPECT_EQ(sys("content-type"), "application/json");
    EXPECT_EQ(sys("iothub-connection-device-id"), "dev-7");
    EXPECT_EQ(sys("x-opt-partition-key"), "dev-7");
    EXPECT_EQ(sys("x-opt-other"), "(absent)");
    EXPECT_EQ(engine_->events().info(0).next_sequence_number +
                  engine_->events().info(1).next_sequence_number +
                  engine_->events().info(2).next_sequence_number +
                  engine_->events().info(3).next_sequence_number,
              0u)
        << "nothing reaches the built-in stream";
}

TEST_F(AmqpLinks, HostedEventHubEventsGoToTheNamedPartitionElseInRotation) {
    ASSERT_EQ(put_token("sb://hub.example/inbox", event_hubs_token("inbox")), 200);
    auto* fixed = client_.sender("inbox/Partitions/2");
    auto* any = client_.sender("inbox");
    ASSERT_TRUE(exchange([&] {
        return remote_open(fixed) && remote_open(any) && pn_link_credit(fixed) > 0 &&
               pn_link_credit(any) > 0;
    }));
    auto m = make_message();
    std::vector<pn_delivery_t*> sent;
    for (int i = 0; i < 2; ++i) {
        set_data_body(m.get(), "fixed-" + std::to_string(i));
        put_string_property(pn_message_annotations(m.get()), "x-opt-partition-key", "ignored",
                            true);
        sent.push_back(client_.send(fixed, m.get()));
    }
    pn_message_clear(m.get());
    for (int i = 0; i < 4; ++i) {
        set_data_body(m.get(), "any-" + std::to_string(i));
        sent.push_back(client_.send(any, m.get()));
    }
    ASSERT_TRUE(exchange([&] {
        return std::all_of(sent.begin(), sent.end(),
                           [](pn_delivery_t* d) { return pn_delivery_remote_state(d) != 0; });
    }));
    for (auto* d : sent) EXPECT_EQ(pn_delivery_remote_state(d), PN_ACCEPTED);
    std::vector<std::string> bodies[4];
    for (int p = 0; p < 4; ++p)
        for (const auto& e : *inbox_->read(p, 0, 10)) bodies[p].push_back(e.record.body);
    EXPECT_EQ(bodies[2], (std::vector<std::string>{"fixed-0", "fixed-1", "any-2"}));
    EXPECT_EQ(bodies[0], (std::vector<std::string>{"any-0"}));
    EXPECT_EQ(bodies[1], (std::vector<std::string>{"any-1"}));
    EXPECT_EQ(bodies[3], (std::vector<std::string>{"any-3"}));
}

TEST_F(AmqpLinks, AHostedEventHubSendThatCannotBeStoredIsRejectedAndTheLinkGoesOn) {
    ASSERT_EQ(put_token("sb://hub.example/inbox", event_hubs_token("inbox")), 200);
    auto* l = client_.sender("inbox/Partitions/0");
    ASSERT_TRUE(exchange([&] { return remote_open(l) && pn_link_credit(l) > 0; }));
    storage::faults_of(*engine_)->fail_appends(1);
    auto m = make_message();
    set_data_body(m.get(), "lost");
    auto* lost = client_.send(l, m.get());
    ASSERT_TRUE(exchange([&] { return pn_delivery_remote_state(lost) != 0; }));
    EXPECT_EQ(pn_delivery_remote_state(lost), PN_REJECTED);
    EXPECT_EQ(delivery_condition(lost), "amqp:internal-error");
    set_data_body(m.get(), "kept");
    auto* kept = client_.send(l, m.get());
    ASSERT_TRUE(exchange([&] { return pn_delivery_remote_state(kept) != 0; }));
    EXPECT_EQ(pn_delivery_remote_state(kept), PN_ACCEPTED);
    auto events = inbox_->read(0, 0, 10);
    ASSERT_EQ(events->size(), 1u);
    EXPECT_EQ(events->front().record.body, "kept");
}

}  // namespace
}  // namespace iothub::amqp
