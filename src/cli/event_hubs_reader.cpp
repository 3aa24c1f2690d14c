#include "cli/event_hubs_reader.hpp"

#include "amqp_client/support.hpp"
#include "auth/connection_string.hpp"
#include "auth/sas.hpp"
#include "cli/detail/amqp_session.hpp"
#include "common/crypto.hpp"
#include "common/time.hpp"

#include <proton/binary.hpp>
#include <proton/codec/encoder.hpp>
#include <proton/connection.hpp>
#include <proton/container.hpp>
#include <proton/delivery.hpp>
#include <proton/error_condition.hpp>
#include <proton/message.hpp>
#include <proton/message_id.hpp>
#include <proton/messaging_handler.hpp>
#include <proton/receiver.hpp>
#include <proton/receiver_options.hpp>
#include <proton/scalar.hpp>
#include <proton/sender.hpp>
#include <proton/source_options.hpp>
#include <proton/symbol.hpp>
#include <proton/target_options.hpp>
#include <proton/timestamp.hpp>
#include <proton/transport.hpp>
#include <proton/types.hpp>
#include <proton/work_queue.hpp>

#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>

namespace iothub::cli {
namespace {

// The selector filter's descriptor (Apache's registered code for a selector string).
constexpr std::uint64_t selector_descriptor = 0x468C00000004ull;
// Where this client asks `$management` to send its answers.
const std::string management_reply = "iothub-cli-management";

std::string id_text(const proton::message_id& id) {
    if (id.empty()) return {};
    if (id.type() == proton::STRING) return proton::get<std::string>(id);
    return proton::to_string(id);
}

}  // namespace

std::string selector_for(const eh_start& s) {
    switch (s.kind) {
        case eh_start::earliest:
            return "amqp.annotation.x-opt-offset > '-1'";
        case eh_start::sequence:
            return "amqp.annotation.x-opt-sequence-number >= '" + std::to_string(s.value) + "'";
        case eh_start::time:
            return "amqp.annotation.x-opt-enqueued-time > '" + std::to_string(s.value) + "'";
        case eh_start::latest:
            break;
    }
    return "amqp.annotation.x-opt-offset > '@latest'";
}

struct event_hubs_reader::impl : proton::messaging_handler {
    hub_access hub;
    eh_reader_options options;
    std::string entity;
    proton::container container{*this};
    std::thread loop;

    // Shared with callers' threads.
    mutable std::mutex mutex;
    std::condition_variable changed;
    bool ready = false;    // every partition receiver attached
    bool stopped = false;  // the event loop has returned
    std::string error;     // why the connection failed
    std::vector<int> reading;
    proton::work_queue* work = nullptr;

    // The event loop's own.
    proton::connection conn;
    proton::sender cbs_out, mgmt_out;
    proton::receiver cbs_in, mgmt_in;
    std::string token_request_id, read_request_id;
    bool token_sent = false, read_sent = false;
    std::map<proton::receiver, int> receivers;
    std::size_t opened = 0;

    impl(hub_access h, eh_reader_options o)
        : hub(std::move(h)),
          options(std::move(o)),
          entity(options.entity.empty() ? auth::event_hub_name(hub.hostname) : options.entity) {}

    std::string token() const {
        return auth::make_sas_token("sb://" + hub.hostname + "/" + entity, hub.key,
                                    unix_seconds(now()) + 3600, hub.policy,
                                    auth::key_encoding::text);
    }

    void fail(const std::string& why) {
        {
            std::lock_guard lock(mutex);
            if (error.empty()) error = why;
        }
        changed.notify_all();
        if (conn && conn.active()) conn.close();
    }

    void on_container_start(proton::container& c) override { detail::connect_amqps(c, hub, "eh"); }

    void on_connection_open(proton::connection& c) override {
        conn = c;
        {
            std::lock_guard lock(mutex);
            work = &c.work_queue();
        }
        cbs_in = c.open_receiver("$cbs");
        cbs_out = c.open_sender("$cbs");
    }

    void on_sendable(proton::sender& s) override {
        if (s == cbs_out && !token_sent) {
            token_sent = true;
            token_request_id = random_uuid();
            s.send(amqp_client::put_token_request(token_request_id,
                                                  "sb://" + hub.hostname + "/" + entity, token()));
        } else if (s == mgmt_out && !read_sent) {
            read_sent = true;
            read_request_id = random_uuid();
            proton::message m;
            m.id(read_request_id);
            m.reply_to(management_reply);
            m.properties().put("operation", "READ");
            m.properties().put("name", entity);
            m.properties().put("type", "com.microsoft:eventhub");
            m.properties().put("security_token", token());
            m.body(std::vector<proton::value>{});
            s.send(m);
        }
    }

    static std::int64_t status_of(const proton::message& m) {
        auto status = m.properties().get("status-code");
        return status.empty() ? 0 : proton::coerce<std::int64_t>(status);
    }

    std::string refusal(const proton::message& m, const std::string& what) {
        auto why = m.properties().get("status-description");
        return what + " (" + std::to_string(status_of(m)) +
               (why.empty() ? std::string() : ": " + proton::to_string(why)) + ").";
    }

    void on_message(proton::delivery& d, proton::message& m) override {
        auto r = d.receiver();
        if (auto it = receivers.find(r); it != receivers.end()) return deliver(it->second, m);
        if (r == cbs_in) {
            if (m.correlation_id() != proton::message_id(token_request_id)) return;
            auto code = status_of(m);
            if (code < 200 || code > 299)
                return fail(refusal(m, "The hub refused the Event Hubs token"));
            mgmt_in = conn.open_receiver("$management",
                                         proton::receiver_options().target(
                                             proton::target_options().address(management_reply)));
            mgmt_out = conn.open_sender("$management");
        } else if (r == mgmt_in) {
            if (m.correlation_id() != proton::message_id(read_request_id)) return;
            auto code = status_of(m);
            if (code < 200 || code > 299)
                return fail(refusal(m, "The hub refused to describe its event hub"));
            std::vector<int> ids;
            try {
                std::map<std::string, proton::value> info;
                proton::get(m.body(), info);
                std::vector<std::string> names;
                proton::get(info.at("partition_ids"), names);
                for (const auto& n : names) ids.push_back(std::stoi(n));
            } catch (const std::exception& e) {
                return fail(std::string("The hub's description of its event hub is unreadable: ") +
                            e.what());
            }
            attach(ids);
        }
    }

    void attach(const std::vector<int>& available) {
        std::vector<int> chosen = options.partitions.empty() ? available : options.partitions;
        if (chosen.empty()) return fail("The event hub has no partitions.");
        {
            std::lock_guard lock(mutex);
            reading = chosen;
        }
        proton::value filter;
        {
            proton::codec::encoder enc(filter);
            enc << proton::codec::start::described() << selector_descriptor
                << selector_for(options.start) << proton::codec::finish();
        }
        proton::source::filter_map filters;
        filters.put(proton::symbol("apache.org:selector-filter:string"), filter);
        for (int p : chosen) {
            auto address = entity + "/ConsumerGroups/" + options.consumer_group + "/Partitions/" +
                           std::to_string(p);
            auto r =
                conn.open_receiver(address, proton::receiver_options()
                                                .credit_window(options.credit)
                                                .source(proton::source_options().filters(filters)));
            receivers.emplace(r, p);
        }
    }

    void deliver(int partition, const proton::message& m) {
        eh_event e;
        e.partition = partition;
        std::map<proton::symbol, proton::value> annotations;
        try {
            proton::get(m.message_annotations().value(), annotations);
        } catch (const std::exception&) {
        }
        for (const auto& [k, v] : annotations) {
            if (k == "x-opt-sequence-number") {
                e.sequence_number = proton::coerce<std::int64_t>(v);
            } else if (k == "x-opt-offset") {
                e.offset = amqp_client::text_of(v);
            } else if (k == "x-opt-enqueued-time") {
                if (v.type() == proton::TIMESTAMP)
                    e.enqueued_ms = proton::get<proton::timestamp>(v).milliseconds();
            } else if (k.rfind("x-opt-", 0) != 0) {
                e.system_properties.emplace_back(k, amqp_client::text_of(v));
            }
        }
        auto add = [&](const char* name, std::string value) {
            if (!value.empty()) e.system_properties.emplace_back(name, std::move(value));
        };
        add("message-id", id_text(m.id()));
        add("correlation-id", id_text(m.correlation_id()));
        add("user-id", m.user());
        add("to", m.to());
        add("content-type", m.content_type());
        add("content-encoding", m.content_encoding());
        if (m.expiry_time().milliseconds() > 0)
            add("absolute-expiry-time", format_iso8601(sys_time(std::chrono::milliseconds(
                                            m.expiry_time().milliseconds()))));
        std::map<std::string, proton::scalar> props;
        try {
            proton::get(m.properties().value(), props);
        } catch (const std::exception&) {
        }
        for (const auto& [k, v] : props)
            e.properties.emplace_back(
                k, v.type() == proton::STRING ? proton::get<std::string>(v) : proton::to_string(v));
        e.body = amqp_client::text_of(m.body());
        if (options.on_event) options.on_event(e);
    }

    void on_receiver_open(proton::receiver& r) override {
        if (!receivers.count(r)) return;
        // A refused link is attached and at once detached with the reason.
        if (!r.error().empty()) return fail(r.error().what());
        if (++opened < receivers.size()) return;
        {
            std::lock_guard lock(mutex);
            ready = true;
        }
        changed.notify_all();
    }
    void on_receiver_error(proton::receiver& r) override { fail(r.error().what()); }
    void on_sender_error(proton::sender& s) override { fail(s.error().what()); }

    void on_transport_error(proton::transport& t) override { fail(t.error().what()); }
    void on_transport_close(proton::transport&) override {
        std::lock_guard lock(mutex);
        work = nullptr;  // the work queue goes with the connection
    }
    void on_error(const proton::error_condition& e) override { fail(e.what()); }

    void on_container_stop(proton::container&) override {
        {
            std::lock_guard lock(mutex);
            work = nullptr;
        }
        fail("The connection to the hub closed.");
    }
};

event_hubs_reader::event_hubs_reader(std::unique_ptr<impl> i) : impl_(std::move(i)) {}

result<std::unique_ptr<event_hubs_reader>> event_hubs_reader::open(
    const hub_access& hub, eh_reader_options options, std::chrono::milliseconds timeout) {
    auto i = std::make_unique<impl>(hub, std::move(options));
    auto* raw = i.get();
    raw->loop = std::thread([raw] {
        try {
            raw->container.run();
        } catch (const std::exception& e) {
            raw->fail(e.what());
        }
        {
            std::lock_guard lock(raw->mutex);
            raw->stopped = true;
            raw->work = nullptr;
        }
        raw->changed.notify_all();
    });
    std::unique_ptr<event_hubs_reader> reader(new event_hubs_reader(std::move(i)));
    std::unique_lock lock(raw->mutex);
    const std::string where = hub.connect_host + ":" + std::to_string(hub.amqp_port);
    if (!raw->changed.wait_for(lock, timeout,
                               [&] { return raw->ready || !raw->error.empty() || raw->stopped; }))
        return error(errc::service_unavailable, "The hub's Event Hubs-compatible endpoint at " +
                                                    where + " did not answer in time.");
    if (!raw->ready)
        return error(errc::service_unavailable,
                     "Reading events from the hub at " + where +
                         " failed: " + (raw->error.empty() ? "closed" : raw->error));
    return reader;
}

event_hubs_reader::~event_hubs_reader() {
    auto& i = *impl_;
    {
        std::unique_lock lock(i.mutex);
        if (i.work)
            i.work->add([&i] {
                if (i.conn && i.conn.active()) i.conn.close();
            });
        i.changed.wait_for(lock, std::chrono::seconds(3), [&] { return i.stopped; });
    }
    i.container.stop();
    if (i.loop.joinable()) i.loop.join();
}

std::vector<int> event_hubs_reader::partitions() const {
    std::lock_guard lock(impl_->mutex);
    return impl_->reading;
}

std::string event_hubs_reader::failure() const {
    std::lock_guard lock(impl_->mutex);
    return impl_->error;
}

}  // namespace iothub::cli
