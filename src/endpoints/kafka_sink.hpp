// The sink of a Kafka endpoint: owns one librdkafka producer for the endpoint's brokers and topic,
// and the cursors it holds until they may be written.
//
// Guarantees: at least once, in order per device. Every message is keyed by its device id, so
// Kafka's partitioner keeps one device's messages in one partition, and the producer is idempotent
// unless the endpoint's properties say otherwise, so librdkafka's own retries neither duplicate nor
// reorder. `deliver` returns only when every message of the call is acknowledged (or failed); a
// cursor is written by `flush` only after its messages were acknowledged, so a crash re-delivers at
// most what was delivered since the last flush, and a failed call is retried whole by the worker.
//
// What a message becomes: key = `iothub-connection-device-id`, value = the body, headers = every
// application property by its name and every system property as `iothub-<name>` (names already
// starting with `iothub-` as they are).
#pragma once

#include "routing/config.hpp"
#include "routing/sink.hpp"

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

struct rd_kafka_s;
struct rd_kafka_topic_s;

namespace iothub::endpoints {

using routing::endpoint;
using routing::endpoint_kind;
using routing::held_cursors;
using routing::sink;

// The endpoint's `kafka_properties` go to librdkafka as they are; an unknown property or a value
// librdkafka refuses gives errc::argument_invalid naming it. Defaults the properties may change:
// enable.idempotence=true, linger.ms=5, client.id=iothub-<endpoint>. Set by the sink whatever the
// properties say: bootstrap.servers (the endpoint's brokers) and message.timeout.ms (the delivery
// timeout, so that `deliver` returns within it plus a second and a half, the time librdkafka may
// take to report why).
result<std::unique_ptr<sink>> make_kafka_sink(
    const endpoint& e, storage::kv_store& kv,
    std::chrono::milliseconds delivery_timeout = std::chrono::seconds(30));

class kafka_sink final : public sink {
  public:
    ~kafka_sink() override;
    kafka_sink(const kafka_sink&) = delete;
    kafka_sink& operator=(const kafka_sink&) = delete;

    // Fails with errc::service_unavailable when the cluster could not be reached or did not answer
    // in time, errc::server_error when it refused the messages; either way with librdkafka's
    // words, and the cursor is not held.
    result<void> deliver(int partition, std::vector<storage::event_record> events,
                         std::span<const std::uint64_t>, storage::kv_write cursor) override;
    result<void> flush(sys_time now, bool final) override;

  private:
    friend result<std::unique_ptr<sink>> make_kafka_sink(const endpoint&, storage::kv_store&,
                                                         std::chrono::milliseconds);
    friend struct kafka_callbacks;

    kafka_sink(const endpoint& e, storage::kv_store& kv, std::chrono::milliseconds timeout);
    result<void> start();
    void stop();
    result<void> produce(const storage::event_record& e,
                         std::chrono::steady_clock::time_point deadline);
    std::string endpoint_text(std::string_view what) const;

    std::string name_;
    std::string brokers_;
    std::string topic_;
    std::map<std::string, std::string> properties_;
    storage::kv_store& kv_;
    std::chrono::milliseconds delivery_timeout_;
    rd_kafka_s* producer_ = nullptr;
    rd_kafka_topic_s* topic_handle_ = nullptr;
    held_cursors held_;

    // The call in progress. Messages carry its number: reports for an earlier call that gave up
    // waiting arrive later and must not count towards this one.
    std::uintptr_t call_ = 0;
    std::size_t pending_ = 0;
    int failure_code_ = 0;  // rd_kafka_resp_err_t of the first failure, 0 for none
    std::string failure_;
    std::string broker_error_;  // the latest the cluster reported during the call, for context
};

}  // namespace iothub::endpoints
