#include "endpoints/kafka_sink.hpp"

#include "endpoints/properties.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <librdkafka/rdkafka.h>
#include <string_view>

namespace iothub::endpoints {

namespace {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

// librdkafka times messages out from a timer that runs about once a second, so its own report
// (with its reason) can come up to that long after message.timeout.ms.
constexpr milliseconds report_grace{1500};
constexpr milliseconds close_timeout{2000};
constexpr std::string_view device_id_property = "iothub-connection-device-id";

int to_ms(milliseconds d) {
    return static_cast<int>(std::max<milliseconds::rep>(d.count(), 0));
}

milliseconds remaining(steady_clock::time_point deadline) {
    return std::chrono::duration_cast<milliseconds>(deadline - steady_clock::now());
}

// Failures the cluster may get over by itself: the worker's retry is likely to succeed.
bool transient(rd_kafka_resp_err_t err) {
    switch (err) {
        case RD_KAFKA_RESP_ERR__MSG_TIMED_OUT:
        case RD_KAFKA_RESP_ERR__TIMED_OUT:
        case RD_KAFKA_RESP_ERR__TIMED_OUT_QUEUE:
        case RD_KAFKA_RESP_ERR__TRANSPORT:
        case RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN:
        case RD_KAFKA_RESP_ERR__RESOLVE:
        case RD_KAFKA_RESP_ERR__QUEUE_FULL:
        case RD_KAFKA_RESP_ERR__PURGE_QUEUE:
        case RD_KAFKA_RESP_ERR__PURGE_INFLIGHT:
        case RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE:
        case RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION:
        case RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT:
        case RD_KAFKA_RESP_ERR_BROKER_NOT_AVAILABLE:
        case RD_KAFKA_RESP_ERR_NETWORK_EXCEPTION:
        case RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS:
        case RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND:
            return true;
        default:
            return false;
    }
}

struct conf_deleter {
    void operator()(rd_kafka_conf_t* c) const { rd_kafka_conf_destroy(c); }
};
using conf_ptr = std::unique_ptr<rd_kafka_conf_t, conf_deleter>;

}  // namespace

// librdkafka's callbacks, with access to the sink they report to (the conf's opaque).
struct kafka_callbacks {
    // Runs on librdkafka's threads: must not call into librdkafka beyond reading the handle.
    static void log(const rd_kafka_t* rk, int level, const char* facility, const char* text) {
        spdlog::debug("kafka {}: {} {}: {}", rk ? rd_kafka_name(rk) : "-", level, facility, text);
    }

    // Served by rd_kafka_poll/flush, so on the worker's thread, inside deliver.
    static void error(rd_kafka_t*, int err, const char* reason, void* opaque) {
        auto* self = static_cast<kafka_sink*>(opaque);
        spdlog::debug("kafka endpoint '{}': {} ({})", self->name_, reason,
                      rd_kafka_err2name(static_cast<rd_kafka_resp_err_t>(err)));
        // "n/n brokers are down" follows the failure that says why; keep the why.
        if (err != RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN || self->broker_error_.empty())
            self->broker_error_ = reason;
    }

    static void delivered(rd_kafka_t*, const rd_kafka_message_t* m, void* opaque) {
        auto* self = static_cast<kafka_sink*>(opaque);
        if (reinterpret_cast<std::uintptr_t>(m->_private) != self->call_ || self->pending_ == 0)
            return;
        --self->pending_;
        if (m->err && self->failure_code_ == 0) {
            self->failure_code_ = m->err;
            self->failure_ = rd_kafka_err2str(m->err);
        }
    }
};

result<std::unique_ptr<sink>> make_kafka_sink(const endpoint& e, storage::kv_store& kv,
                                              milliseconds delivery_timeout) {
    if (e.kind != endpoint_kind::kafka)
        return error(errc::argument_invalid, "Endpoint '" + e.name + "' is not a Kafka endpoint.");
    if (delivery_timeout < milliseconds(1))
        return error(errc::argument_invalid, "The Kafka delivery timeout must be positive.");
    std::unique_ptr<kafka_sink> s(new kafka_sink(e, kv, delivery_timeout));
    if (auto r = s->start(); !r) return r.error();
    return std::unique_ptr<sink>(std::move(s));
}

kafka_sink::kafka_sink(const endpoint& e, storage::kv_store& kv, milliseconds timeout)
    : name_(e.name),
      brokers_(e.brokers),
      topic_(e.topic),
      properties_(e.kafka_properties),
      kv_(kv),
      delivery_timeout_(timeout) {}

kafka_sink::~kafka_sink() {
    stop();
}

std::string kafka_sink::endpoint_text(std::string_view what) const {
    return "Kafka endpoint '" + name_ + "': " + std::string(what);
}

result<void> kafka_sink::start() {
    conf_ptr conf(rd_kafka_conf_new());
    // Before anything can log: librdkafka prints to stderr by default.
    rd_kafka_conf_set_log_cb(conf.get(), &kafka_callbacks::log);
    rd_kafka_conf_set_error_cb(conf.get(), &kafka_callbacks::error);
    rd_kafka_conf_set_dr_msg_cb(conf.get(), &kafka_callbacks::delivered);
    rd_kafka_conf_set_opaque(conf.get(), this);

    std::array<char, 512> why{};
    auto set = [&](const std::string& name, const std::string& value) -> result<void> {
        switch (
            rd_kafka_conf_set(conf.get(), name.c_str(), value.c_str(), why.data(), why.size())) {
            case RD_KAFKA_CONF_OK:
                return {};
            case RD_KAFKA_CONF_UNKNOWN:
                return error(errc::argument_invalid,
                             endpoint_text("unknown Kafka property '" + name + "'."));
            default:
                return error(
                    errc::argument_invalid,
                    endpoint_text("property '" + name + "': " + std::string(why.data()) + "."));
        }
    };
    const std::array<std::pair<std::string, std::string>, 3> defaults = {{
        {"enable.idempotence", "true"},
        {"linger.ms", "5"},
        {"client.id", "iothub-" + name_},
    }};
    for (const auto& [k, v] : defaults)
        if (auto r = set(k, v); !r) return r;
    for (const auto& [k, v] : properties_)
        if (auto r = set(k, v); !r) return r;
    // Last, so that no property can send messages elsewhere or make deliver wait longer.
    if (auto r = set("bootstrap.servers", brokers_); !r) return r;
    if (auto r = set("message.timeout.ms", std::to_string(to_ms(delivery_timeout_))); !r) return r;

    rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf.get(), why.data(), why.size());
    if (!rk) return error(errc::argument_invalid, endpoint_text(why.data()));
    (void)conf.release();  // rd_kafka_new took it
    rd_kafka_topic_t* topic = rd_kafka_topic_new(rk, topic_.c_str(), nullptr);
    if (!topic) {
        auto err = rd_kafka_last_error();
        rd_kafka_destroy(rk);
        return error(
            errc::argument_invalid,
            endpoint_text("topic '" + topic_ + "': " + std::string(rd_kafka_err2str(err)) + "."));
    }
    producer_ = rk;
    topic_handle_ = topic;
    return {};
}

void kafka_sink::stop() {
    if (!producer_) return;
    // Every deliver waited for its messages already; this only bounds the case where it gave up.
    (void)rd_kafka_flush(producer_, to_ms(close_timeout));
    (void)rd_kafka_purge(producer_, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_topic_destroy(topic_handle_);
    rd_kafka_destroy(producer_);
    topic_handle_ = nullptr;
    producer_ = nullptr;
}

result<void> kafka_sink::produce(const storage::event_record& e,
                                 steady_clock::time_point deadline) {
    const std::string* device = storage::find_property(e.system_properties, device_id_property);
    if (!device && e.stamp) device = storage::find_property(*e.stamp, device_id_property);

    rd_kafka_headers_t* headers =
        rd_kafka_headers_new(e.application_properties.size() + e.system_properties.size() +
                             (e.stamp ? e.stamp->size() : 0));
    for (const auto& [k, v] : e.application_properties)
        rd_kafka_header_add(headers, k.data(), static_cast<ssize_t>(k.size()), v.data(),
                            static_cast<ssize_t>(v.size()));
    auto add_system = [&](const storage::property_list& l) {
        for (const auto& [k, v] : l) {
            const auto name = system_header(k);
            rd_kafka_header_add(headers, name.data(), static_cast<ssize_t>(name.size()), v.data(),
                                static_cast<ssize_t>(v.size()));
        }
    };
    add_system(e.system_properties);
    if (e.stamp) add_system(*e.stamp);

    while (true) {
        // No key without a device id: the partitioner then spreads such messages at random.
        auto err = rd_kafka_producev(
            producer_, RD_KAFKA_V_RKT(topic_handle_), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_KEY(device ? device->data() : nullptr, device ? device->size() : 0),
            RD_KAFKA_V_VALUE(const_cast<char*>(e.body.data()), e.body.size()),
            RD_KAFKA_V_HEADERS(headers), RD_KAFKA_V_OPAQUE(reinterpret_cast<void*>(call_)),
            RD_KAFKA_V_END);
        if (!err) return {};  // the message owns the headers now
        // A full queue drains as the cluster acknowledges; anything else will not get better.
        if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL && remaining(deadline) > milliseconds(0)) {
            rd_kafka_poll(producer_, 100);
            continue;
        }
        rd_kafka_headers_destroy(headers);
        failure_code_ = err;
        return error(transient(err) ? errc::service_unavailable : errc::server_error,
                     rd_kafka_err2str(err));
    }
}

result<void> kafka_sink::deliver(int, std::vector<storage::event_record> events,
                                 std::span<const std::uint64_t>, storage::kv_write cursor) {
    if (events.empty()) {
        held_.hold(std::move(cursor));
        return {};
    }
    if (producer_) {
        std::array<char, 512> why{};
        if (rd_kafka_fatal_error(producer_, why.data(), why.size())) {
            // A fatal producer (e.g. enable.gapless.guarantee after a gap) accepts nothing more.
            spdlog::debug("kafka endpoint '{}': replacing the producer after a fatal error: {}",
                          name_, why.data());
            stop();
        }
    }
    if (!producer_)
        if (auto r = start(); !r) return r;

    ++call_;
    pending_ = 0;
    failure_code_ = 0;
    failure_.clear();
    broker_error_.clear();
    const auto deadline = steady_clock::now() + delivery_timeout_ + report_grace;

    for (const auto& e : events) {
        if (auto r = produce(e, deadline); !r) {
            failure_ = r.error().message();
            break;
        }
        ++pending_;
    }
    // Flushing (rather than polling) also sends at once what linger.ms would hold back.
    while (pending_ > 0) {
        auto left = remaining(deadline);
        if (left <= milliseconds(0)) break;
        (void)rd_kafka_flush(producer_, to_ms(left));
    }
    if (pending_ > 0) {
        // Given up: whatever is still queued must not go out after the worker's retry of the same
        // messages, or one device's messages could arrive out of order.
        // The timeout is the reason, not the purge that the reports served now would name.
        if (failure_.empty()) {
            failure_code_ = RD_KAFKA_RESP_ERR__MSG_TIMED_OUT;
            failure_ =
                "no acknowledgement within " + std::to_string(delivery_timeout_.count()) + " ms";
        }
        (void)rd_kafka_purge(producer_, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        (void)rd_kafka_poll(producer_, 0);
    }
    if (!failure_.empty()) {
        std::string text = "delivery to topic '" + topic_ + "' failed: " + failure_;
        if (!broker_error_.empty()) text += " (" + broker_error_ + ")";
        text += ".";
        return error(transient(static_cast<rd_kafka_resp_err_t>(failure_code_))
                         ? errc::service_unavailable
                         : errc::server_error,
                     endpoint_text(text));
    }
    held_.hold(std::move(cursor));
    return {};
}

result<void> kafka_sink::flush(sys_time, bool) {
    return held_.write(kv_);
}

}  // namespace iothub::endpoints
