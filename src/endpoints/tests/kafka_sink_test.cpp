// The Kafka sink against librdkafka's mock cluster (loopback only), read back with a real
// consumer: what a message becomes on the topic, per-device order, when cursors are written, a
// cluster that is down and comes back, an unreachable broker named in the error and a prompt close,
// and properties librdkafka does not know.
#include "endpoints/kafka_sink.hpp"

#include "storage/engine.hpp"

#include <gtest/gtest.h>

#include <array>
#include <chrono>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <map>
#include <optional>
#include <set>

// librdkafka starts its threads with C11 thrd_create, which ThreadSanitizer does not see: its
// threads crash inside the sanitizer's allocator. The sink is tested in the other builds.
#if defined(__SANITIZE_THREAD__)
#define SKIP_UNDER_TSAN() GTEST_SKIP() << "librdkafka's threads cannot run under ThreadSanitizer"
#else
#define SKIP_UNDER_TSAN() (void)0
#endif

namespace iothub::endpoints {
namespace {
using namespace std::chrono_literals;
using std::chrono::steady_clock;

constexpr std::string_view topic = "telemetry";
constexpr int partitions = 4;
constexpr std::string_view cursor_key = "routing/cursor/k/0";

void quiet(const rd_kafka_t*, int, const char*, const char*) {}

// The mock cluster needs a client handle to own it, so a producer that sends nothing.
class mock_cluster {
  public:
    explicit mock_cluster(int brokers) : brokers_(brokers) {
        rd_kafka_conf_t* conf = rd_kafka_conf_new();
        rd_kafka_conf_set_log_cb(conf, &quiet);
        char why[256];
        owner_ = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof why);
        if (!owner_) {
            rd_kafka_conf_destroy(conf);
            return;
        }
        cluster_ = rd_kafka_mock_cluster_new(owner_, brokers);
        if (cluster_)
            rd_kafka_mock_topic_create(cluster_, std::string(topic).c_str(), partitions, 1);
    }
    ~mock_cluster() {
        if (cluster_) rd_kafka_mock_cluster_destroy(cluster_);
        if (owner_) rd_kafka_destroy(owner_);
    }
    bool ok() const { return cluster_ != nullptr; }
    std::string bootstraps() const { return rd_kafka_mock_cluster_bootstraps(cluster_); }
    // Broker ids are 1..n.
    void set_up(bool up) {
        for (int id = 1; id <= brokers_; ++id)
            if (up)
                rd_kafka_mock_broker_set_up(cluster_, id);
            else
                rd_kafka_mock_broker_set_down(cluster_, id);
    }

  private:
    int brokers_;
    rd_kafka_t* owner_ = nullptr;
    rd_kafka_mock_cluster_t* cluster_ = nullptr;
};

struct consumed {
    int partition = -1;
    std::string key;
    std::string value;
    std::map<std::string, std::string> headers;
    std::size_t header_count = 0;
};

// Reads the topic from the beginning until `expected` messages came (and a little longer, so that
// duplicates would show), or the deadline passed.
std::vector<consumed> consume(const std::string& brokers, std::size_t expected) {
    std::vector<consumed> out;
    rd_kafka_conf_t* conf = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(conf, &quiet);
    char why[256];
    for (auto [k, v] : {std::pair{"bootstrap.servers", brokers.c_str()},
                        {"group.id", "kafka-sink-test"},
                        {"enable.auto.commit", "false"}})
        EXPECT_EQ(rd_kafka_conf_set(conf, k, v, why, sizeof why), RD_KAFKA_CONF_OK) << why;
    rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, why, sizeof why);
    if (!rk) {
        ADD_FAILURE() << why;
        rd_kafka_conf_destroy(conf);
        return out;
    }
    rd_kafka_poll_set_consumer(rk);
    rd_kafka_topic_partition_list_t* assignment = rd_kafka_topic_partition_list_new(partitions);
    for (int p = 0; p < partitions; ++p)
        rd_kafka_topic_partition_list_add(assignment, std::string(topic).c_str(), p)->offset =
            RD_KAFKA_OFFSET_BEGINNING;
    EXPECT_EQ(rd_kafka_assign(rk, assignment), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_topic_partition_list_destroy(assignment);

    auto deadline = steady_clock::now() + 10s;
    std::optional<steady_clock::time_point> linger;
    while (steady_clock::now() < deadline && (!linger || steady_clock::now() < *linger)) {
        rd_kafka_message_t* m = rd_kafka_consumer_poll(rk, 100);
        if (!m) continue;
        if (!m->err) {
            consumed c;
            c.partition = m->partition;
            if (m->key) c.key.assign(static_cast<const char*>(m->key), m->key_len);
            if (m->payload) c.value.assign(static_cast<const char*>(m->payload), m->len);
            rd_kafka_headers_t* headers = nullptr;
            if (!rd_kafka_message_headers(m, &headers)) {
                const char* name;
                const void* value;
                std::size_t size;
                for (std::size_t i = 0; !rd_kafka_header_get_all(headers, i, &name, &value, &size);
                     ++i) {
                    c.headers[name].assign(static_cast<const char*>(value), size);
                    ++c.header_count;
                }
            }
            out.push_back(std::move(c));
            if (out.size() == expected) linger = steady_clock::now() + 500ms;
        }
        rd_kafka_message_destroy(m);
    }
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return out;
}

storage::event_record message(const std::string& device, int n) {
    storage::event_record e;
    e.body = "{\"n\":" + std::to_string(n) + "}";
    e.application_properties = {{"n", std::to_string(n)}, {"level", n % 2 ? "high" : "low"}};
    e.system_properties = {{"message-id", "msg-" + std::to_string(n)},
                           {"content-type", "application/json"},
                           {"content-encoding", "utf-8"},
                           {"iothub-message-source", "Telemetry"}};
    // One device's connection properties come as a stamp, as an event read from the log before
    // folding would carry them.
    storage::property_list who = {{"iothub-connection-device-id", device},
                                  {"iothub-connection-auth-method", "{\"scope\":\"device\"}"}};
    if (device == "charlie")
        e.stamp = std::make_shared<const storage::property_list>(std::move(who));
    else
        e.system_properties.insert(e.system_properties.end(), who.begin(), who.end());
    return e;
}

storage::kv_write cursor(std::string value) {
    storage::kv_write w;
    w.key = cursor_key;
    w.value = std::move(value);
    return w;
}

std::optional<std::string> stored_cursor(storage::kv_store& kv) {
    auto v = kv.get(cursor_key);
    EXPECT_TRUE(v) << v.error().message();
    if (!v || !*v) return std::nullopt;
    return (*v)->value;
}

endpoint kafka_endpoint(std::string brokers, std::map<std::string, std::string> properties = {}) {
    endpoint e;
    e.kind = endpoint_kind::kafka;
    e.name = "k";
    e.brokers = std::move(brokers);
    e.topic = topic;
    e.kafka_properties = std::move(properties);
    return e;
}

TEST(kafka_sink, delivers_keyed_messages_with_headers_in_order_per_device) {
    SKIP_UNDER_TSAN();
    mock_cluster cluster(3);
    ASSERT_TRUE(cluster.ok());
    auto engine = storage::open_memory();
    auto made = make_kafka_sink(kafka_endpoint(cluster.bootstraps()), engine->kv(), 5s);
    ASSERT_TRUE(made) << made.error().message();
    auto& sink = **made;

    const std::array<std::string, 3> devices = {"alpha", "bravo", "charlie"};
    std::vector<storage::event_record> first, second;
    for (int n = 0; n < 20; ++n) (n < 12 ? first : second).push_back(message(devices[n % 3], n));

    auto r = sink.deliver(0, first, cursor("12"));
    ASSERT_TRUE(r) << r.error().message();
    EXPECT_EQ(stored_cursor(engine->kv()), std::nullopt) << "written before flush";
    r = sink.deliver(0, second, cursor("20"));
    ASSERT_TRUE(r) << r.error().message();
    EXPECT_EQ(stored_cursor(engine->kv()), std::nullopt) << "written before flush";
    ASSERT_TRUE(sink.flush(iothub::now(), false));
    EXPECT_EQ(stored_cursor(engine->kv()), "20");

    // Nothing selected from this stretch of the source: only the cursor moves.
    ASSERT_TRUE(sink.deliver(0, {}, cursor("25")));
    EXPECT_EQ(stored_cursor(engine->kv()), "20");
    ASSERT_TRUE(sink.flush(iothub::now(), true));
    EXPECT_EQ(stored_cursor(engine->kv()), "25");

    auto got = consume(cluster.bootstraps(), 20);
    ASSERT_EQ(got.size(), 20u);
    std::map<std::string, std::vector<int>> order;
    std::map<std::string, std::set<int>> partitions_of;
    for (const auto& c : got) {
        ASSERT_TRUE(c.headers.contains("n")) << c.value;
        const int n = std::stoi(c.headers.at("n"));
        const std::string device = devices[n % 3];
        SCOPED_TRACE("message " + std::to_string(n));
        EXPECT_EQ(c.key, device);
        EXPECT_EQ(c.value, "{\"n\":" + std::to_string(n) + "}");
        EXPECT_EQ(c.headers.at("level"), n % 2 ? "high" : "low");
        EXPECT_EQ(c.headers.at("iothub-message-id"), "msg-" + std::to_string(n));
        EXPECT_EQ(c.headers.at("iothub-content-type"), "application/json");
        EXPECT_EQ(c.headers.at("iothub-content-encoding"), "utf-8");
        EXPECT_EQ(c.headers.at("iothub-message-source"), "Telemetry");
        EXPECT_EQ(c.headers.at("iothub-connection-device-id"), device);
        EXPECT_EQ(c.headers.at("iothub-connection-auth-method"), "{\"scope\":\"device\"}");
        EXPECT_EQ(c.header_count, 8u);
        order[device].push_back(n);
        partitions_of[device].insert(c.partition);
    }
    ASSERT_EQ(order.size(), 3u);
    for (const auto& device : devices) {
        std::vector<int> expected;
        for (int n = 0; n < 20; ++n)
            if (devices[n % 3] == device) expected.push_back(n);
        EXPECT_EQ(order[device], expected) << device;
        EXPECT_EQ(partitions_of[device].size(), 1u) << device;
    }
}

TEST(kafka_sink, fails_while_the_cluster_is_down_and_delivers_on_retry) {
    SKIP_UNDER_TSAN();
    mock_cluster cluster(3);
    ASSERT_TRUE(cluster.ok());
    cluster.set_up(false);
    auto engine = storage::open_memory();
    // A short reconnect backoff, passed through as a property, so the retry finds the brokers
    // back at once rather than after librdkafka's default of up to 10 s.
    auto made = make_kafka_sink(
        kafka_endpoint(cluster.bootstraps(),
                       {{"reconnect.backoff.ms", "50"}, {"reconnect.backoff.max.ms", "200"}}),
        engine->kv(), 1500ms);
    ASSERT_TRUE(made) << made.error().message();
    auto& sink = **made;

    std::vector<storage::event_record> events;
    for (int n = 0; n < 3; ++n) events.push_back(message("delta", n));

    auto start = steady_clock::now();
    auto r = sink.deliver(1, events, cursor("3"));
    auto took = steady_clock::now() - start;
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code(), errc::service_unavailable);
    EXPECT_TRUE(r.error().message().starts_with(
        "Kafka endpoint 'k': delivery to topic 'telemetry' failed: "))
        << r.error().message();
    EXPECT_NE(r.error().message().find("Message timed out"), std::string::npos)
        << r.error().message();
    EXPECT_GE(took, 1400ms);
    EXPECT_LT(took, 4s);
    ASSERT_TRUE(sink.flush(iothub::now(), true));
    EXPECT_EQ(stored_cursor(engine->kv()), std::nullopt);

    cluster.set_up(true);
    r = sink.deliver(1, events, cursor("3"));
    ASSERT_TRUE(r) << r.error().message();
    ASSERT_TRUE(sink.flush(iothub::now(), true));
    EXPECT_EQ(stored_cursor(engine->kv()), "3");

    auto got = consume(cluster.bootstraps(), 3);
    ASSERT_EQ(got.size(), 3u);
    for (int n = 0; n < 3; ++n) {
        EXPECT_EQ(got[n].key, "delta");
        EXPECT_EQ(got[n].value, "{\"n\":" + std::to_string(n) + "}");
    }
}

TEST(kafka_sink, names_an_unreachable_broker_and_closes_promptly) {
    SKIP_UNDER_TSAN();
    auto engine = storage::open_memory();
    auto made = make_kafka_sink(kafka_endpoint("127.0.0.1:1"), engine->kv(), 1000ms);
    ASSERT_TRUE(made) << made.error().message();

    auto start = steady_clock::now();
    auto r = (*made)->deliver(0, {message("echo", 0)}, cursor("1"));
    EXPECT_LT(steady_clock::now() - start, 3500ms);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code(), errc::service_unavailable);
    EXPECT_NE(r.error().message().find("127.0.0.1:1"), std::string::npos) << r.error().message();
    EXPECT_NE(r.error().message().find("Connection refused"), std::string::npos)
        << r.error().message();
    ASSERT_TRUE((*made)->flush(iothub::now(), true));
    EXPECT_EQ(stored_cursor(engine->kv()), std::nullopt);

    start = steady_clock::now();
    made->reset();
    EXPECT_LT(steady_clock::now() - start, 3s);
}

TEST(kafka_sink, refuses_unknown_properties_and_invalid_values) {
    SKIP_UNDER_TSAN();
    auto engine = storage::open_memory();
    auto made = make_kafka_sink(
        kafka_endpoint("127.0.0.1:9092", {{"linger.ms", "1"}, {"compresion.type", "lz4"}}),
        engine->kv());
    ASSERT_FALSE(made);
    EXPECT_EQ(made.error().code(), errc::argument_invalid);
    EXPECT_EQ(made.error().message(),
              "Kafka endpoint 'k': unknown Kafka property 'compresion.type'.");

    made = make_kafka_sink(kafka_endpoint("127.0.0.1:9092", {{"linger.ms", "soon"}}), engine->kv());
    ASSERT_FALSE(made);
    EXPECT_EQ(made.error().code(), errc::argument_invalid);
    EXPECT_TRUE(made.error().message().starts_with("Kafka endpoint 'k': property 'linger.ms': "))
        << made.error().message();
}

}  // namespace
}  // namespace iothub::endpoints
