// The NATS sink against a real nats-server on loopback, read back with libnats: subjects and their
// escaping, headers and bodies, core publish and JetStream (acknowledged, repeats dropped by
// message id), a subject no stream captures, a server that stops and comes back, and when cursors
// are written.
#include "endpoints/nats_sink.hpp"

#include "nats/nats.hpp"
#include "nats/tests/nats_server.hpp"
#include "storage/engine.hpp"

#include <gtest/gtest.h>

#include <array>
#include <chrono>
#include <optional>

namespace iothub::endpoints {
namespace {
using namespace std::chrono_literals;
using nats::nats_ptr;

constexpr std::string_view cursor_key = "routing/cursor/n/events/0";

storage::event_record telemetry(std::string device, std::string body) {
    storage::event_record e;
    e.body = std::move(body);
    e.application_properties = {{"temperature", "high"}, {"odd name: x", "two\r\nlines"}};
    e.system_properties = {{"message-id", "m-" + e.body},
                           {"content-type", "application/json"},
                           {"iothub-connection-device-id", std::move(device)}};
    return e;
}

routing::endpoint nats_endpoint(std::string url, std::string subject, bool jetstream) {
    routing::endpoint e;
    e.kind = routing::endpoint_kind::nats;
    e.name = "n";
    e.servers = {std::move(url)};
    e.subject = std::move(subject);
    e.jetstream = jetstream;
    return e;
}

storage::kv_write cursor(int at) {
    return {storage::kv_write::op::put, std::string(cursor_key), std::to_string(at)};
}

std::optional<std::string> stored_cursor(storage::kv_store& kv) {
    auto v = kv.get(cursor_key);
    if (!v || !*v) return std::nullopt;
    return (*v)->value;
}

std::string header(natsMsg* m, const char* name) {
    const char* v = nullptr;
    if (natsMsgHeader_Get(m, name, &v) != NATS_OK || !v) return "<none>";
    return v;
}

// A reader's own connection to the server.
struct reader {
    explicit reader(const std::string& url) {
        nats::connection_settings s;
        s.servers = {url};
        s.name = "test reader";
        auto c = nats::connect(s);
        EXPECT_TRUE(c) << c.error().message();
        if (c) nc = std::move(*c);
    }
    nats_ptr<natsSubscription> subscribe(const char* subject) {
        natsSubscription* sub = nullptr;
        EXPECT_EQ(natsConnection_SubscribeSync(&sub, nc.get(), subject), NATS_OK);
        EXPECT_EQ(natsConnection_Flush(nc.get()), NATS_OK);
        return nats_ptr<natsSubscription>(sub);
    }
    // A stream capturing `subject`, with a duplicate window.
    void stream(const char* name, const char* subject) {
        jsCtx* raw = nullptr;
        ASSERT_EQ(natsConnection_JetStream(&raw, nc.get(), nullptr), NATS_OK);
        js.reset(raw);
        jsStreamConfig cfg;
        jsStreamConfig_Init(&cfg);
        cfg.Name = name;
        std::array<const char*, 1> subjects = {subject};
        cfg.Subjects = subjects.data();
        cfg.SubjectsLen = 1;
        cfg.Duplicates = 120LL * 1000 * 1000 * 1000;  // 2 minutes, in nanoseconds
        jsStreamInfo* info = nullptr;
        jsErrCode code{};
        ASSERT_EQ(js_AddStream(&info, js.get(), &cfg, nullptr, &code), NATS_OK) << code;
        jsStreamInfo_Destroy(info);
    }
    std::uint64_t stored(const char* name) {
        jsStreamInfo* info = nullptr;
        jsErrCode code{};
        if (js_GetStreamInfo(&info, js.get(), name, nullptr, &code) != NATS_OK) return 0;
        auto n = info->State.Msgs;
        jsStreamInfo_Destroy(info);
        return n;
    }
    nats_ptr<natsMsg> stored_message(const char* name, std::uint64_t seq) {
        natsMsg* m = nullptr;
        EXPECT_EQ(js_GetMsg(&m, js.get(), name, seq, nullptr, nullptr), NATS_OK);
        return nats_ptr<natsMsg>(m);
    }
    nats_ptr<natsConnection> nc;
    nats_ptr<jsCtx> js;
};

nats_ptr<natsMsg> next(natsSubscription* sub) {
    natsMsg* m = nullptr;
    if (natsSubscription_NextMsg(&m, sub, 5000) != NATS_OK) return nullptr;
    return nats_ptr<natsMsg>(m);
}

TEST(NatsSink, SubjectsKeepEachValueOneToken) {
    EXPECT_EQ(nats_subject("telemetry.{deviceId}", "dev-1", "hub"), "telemetry.dev-1");
    EXPECT_EQ(nats_subject("{iothub}.t.{deviceId}.in", "a.b*c>d%e f", "my.hub"),
              "my%2Ehub.t.a%2Eb%2Ac%3Ed%25e%20f.in");
    EXPECT_EQ(nats_subject("t.{deviceId}", "", "hub"), "t.%00");
    EXPECT_EQ(nats_subject("fixed", "dev", "hub"), "fixed");
}

TEST(NatsSink, NoServersOutsideClusterModeIsRefused) {
    auto engine = storage::open_memory();
    auto e = nats_endpoint("", "t.{deviceId}", false);
    e.servers.clear();
    auto made = make_nats_sink(e, engine->kv(), {});
    ASSERT_FALSE(made);
    EXPECT_EQ(made.error().code(), errc::argument_invalid);
    EXPECT_NE(made.error().message().find("names no servers"), std::string::npos);

    nats_sink_options cluster;
    cluster.cluster = nats::connection_settings{};
    cluster.cluster->servers = {"nats://127.0.0.1:4222"};
    cluster.reserved_prefix = "iothub";
    e.subject = "iothub.bus.{deviceId}";
    auto reserved = make_nats_sink(e, engine->kv(), cluster);
    ASSERT_FALSE(reserved);
    EXPECT_NE(reserved.error().message().find("cluster uses"), std::string::npos);
    e.subject = "routed.{deviceId}";
    EXPECT_TRUE(make_nats_sink(e, engine->kv(), cluster));
}

TEST(NatsSink, CorePublishCarriesBodyHeadersAndSubject) {
    nats::testing::nats_server server;
    ASSERT_FALSE(server.url().empty()) << "nats-server did not start";
    reader r(server.url());
    auto sub = r.subscribe("telemetry.>");
    auto engine = storage::open_memory();
    nats_sink_options o;
    o.hub_name = "hub";
    auto sink =
        make_nats_sink(nats_endpoint(server.url(), "telemetry.{deviceId}", false), engine->kv(), o);
    ASSERT_TRUE(sink) << sink.error().message();

    std::vector<storage::event_record> batch = {telemetry("dev.1", "a"), telemetry("dev-2", "b"),
                                                telemetry("dev.1", "c")};
    const std::array<std::uint64_t, 3> seqs = {10, 11, 12};
    ASSERT_TRUE((*sink)->deliver(0, batch, seqs, cursor(13)));
    EXPECT_EQ(stored_cursor(engine->kv()), std::nullopt) << "written before flush";

    const std::array<std::pair<const char*, const char*>, 3> expected = {
        {{"telemetry.dev%2E1", "a"}, {"telemetry.dev-2", "b"}, {"telemetry.dev%2E1", "c"}}};
    for (std::size_t i = 0; i < expected.size(); ++i) {
        auto m = next(sub.get());
        ASSERT_TRUE(m) << "message " << i << " not received";
        EXPECT_STREQ(natsMsg_GetSubject(m.get()), expected[i].first);
        EXPECT_EQ(std::string(natsMsg_GetData(m.get()), natsMsg_GetDataLength(m.get())),
                  expected[i].second);
        EXPECT_EQ(header(m.get(), "temperature"), "high");
        EXPECT_EQ(header(m.get(), "odd%20name%3A%20x"), "two%0D%0Alines");
        EXPECT_EQ(header(m.get(), "iothub-content-type"), "application/json");
        EXPECT_EQ(header(m.get(), "iothub-message-id"), std::string("m-") + expected[i].second);
        EXPECT_EQ(header(m.get(), "iothub-connection-device-id"), i == 1 ? "dev-2" : "dev.1");
        EXPECT_EQ(header(m.get(), "Nats-Msg-Id"), "hub/n/events/0/" + std::to_string(seqs[i]));
    }
    ASSERT_TRUE((*sink)->flush(now(), false));
    EXPECT_EQ(stored_cursor(engine->kv()), "13");
}

TEST(NatsSink, JetStreamAcknowledgesAndDropsRepeats) {
    nats::testing::nats_server server;
    ASSERT_FALSE(server.url().empty()) << "nats-server did not start";
    reader r(server.url());
    r.stream("ROUTED", "routed.>");
    auto engine = storage::open_memory();
    nats_sink_options o;
    o.hub_name = "hub";
    auto sink = make_nats_sink(nats_endpoint(server.url(), "routed.{iothub}.{deviceId}", true),
                               engine->kv(), o);
    ASSERT_TRUE(sink) << sink.error().message();

    std::vector<storage::event_record> batch;
    std::vector<std::uint64_t> seqs;
    for (int i = 0; i < 50; ++i) {
        batch.push_back(telemetry("dev-" + std::to_string(i % 3), "m" + std::to_string(i)));
        seqs.push_back(100 + i);
    }
    ASSERT_TRUE((*sink)->deliver(0, batch, seqs, cursor(150)));
    EXPECT_EQ(r.stored("ROUTED"), 50u) << "acknowledged means stored";
    // The worker's retry after a failure it could not see through: the same ids again.
    ASSERT_TRUE((*sink)->deliver(0, batch, seqs, cursor(150)));
    EXPECT_EQ(r.stored("ROUTED"), 50u) << "a repeat was stored twice";
    auto first = r.stored_message("ROUTED", 1);
    ASSERT_TRUE(first);
    EXPECT_STREQ(natsMsg_GetSubject(first.get()), "routed.hub.dev-0");
    EXPECT_EQ(std::string(natsMsg_GetData(first.get()), natsMsg_GetDataLength(first.get())), "m0");
    EXPECT_EQ(header(first.get(), "Nats-Msg-Id"), "hub/n/events/0/100");
    ASSERT_TRUE((*sink)->flush(now(), false));
    EXPECT_EQ(stored_cursor(engine->kv()), "150");
}

TEST(NatsSink, JetStreamWithoutAStreamFailsAndHoldsNoCursor) {
    nats::testing::nats_server server;
    ASSERT_FALSE(server.url().empty()) << "nats-server did not start";
    auto engine = storage::open_memory();
    nats_sink_options o;
    o.hub_name = "hub";
    o.timeout = 3s;
    auto sink =
        make_nats_sink(nats_endpoint(server.url(), "nowhere.{deviceId}", true), engine->kv(), o);
    ASSERT_TRUE(sink);
    const std::array<std::uint64_t, 1> seqs = {1};
    auto r = (*sink)->deliver(0, {telemetry("d", "x")}, seqs, cursor(2));
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code(), errc::service_unavailable);
    EXPECT_NE(r.error().message().find("no JetStream stream captures subject 'nowhere.d'"),
              std::string::npos)
        << r.error().message();
    ASSERT_TRUE((*sink)->flush(now(), true));
    EXPECT_EQ(stored_cursor(engine->kv()), std::nullopt);
}

TEST(NatsSink, AServerThatStopsFailsDeliveryUntilItIsBack) {
    nats::testing::nats_server server;
    ASSERT_FALSE(server.url().empty()) << "nats-server did not start";
    {
        reader r(server.url());
        r.stream("ROUTED", "routed.>");
    }
    auto engine = storage::open_memory();
    nats_sink_options o;
    o.hub_name = "hub";
    o.timeout = 2s;
    auto sink =
        make_nats_sink(nats_endpoint(server.url(), "routed.{deviceId}", true), engine->kv(), o);
    ASSERT_TRUE(sink);
    const std::array<std::uint64_t, 1> one = {1}, two = {2};
    ASSERT_TRUE((*sink)->deliver(0, {telemetry("d", "1")}, one, cursor(2)));

    server.stop();
    auto down = (*sink)->deliver(0, {telemetry("d", "2")}, two, cursor(3));
    ASSERT_FALSE(down);
    EXPECT_EQ(down.error().code(), errc::service_unavailable) << down.error().message();

    ASSERT_TRUE(server.start());
    // The connection comes back by itself; the worker retries until it has.
    const auto deadline = std::chrono::steady_clock::now() + 20s;
    result<void> up = down;
    while (!up && std::chrono::steady_clock::now() < deadline) {
        up = (*sink)->deliver(0, {telemetry("d", "2")}, two, cursor(3));
        if (!up) std::this_thread::sleep_for(100ms);
    }
    ASSERT_TRUE(up) << up.error().message();
    reader r(server.url());
    r.stream("ROUTED", "routed.>");  // already there: the same configuration is accepted
    EXPECT_EQ(r.stored("ROUTED"), 2u);
    ASSERT_TRUE((*sink)->flush(now(), false));
    EXPECT_EQ(stored_cursor(engine->kv()), "3");
}

}  // namespace
}  // namespace iothub::endpoints
