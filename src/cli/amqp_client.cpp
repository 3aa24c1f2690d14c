#include "cli/amqp_client.hpp"

#include "amqp_client/support.hpp"
#include "auth/sas.hpp"
#include "cli/detail/amqp_session.hpp"
#include "common/crypto.hpp"
#include "common/encoding.hpp"
#include "common/time.hpp"

#include <proton/binary.hpp>
#include <proton/condition.h>
#include <proton/connection.hpp>
#include <proton/container.hpp>
#include <proton/delivery.h>
#include <proton/delivery.hpp>
#include <proton/disposition.h>
#include <proton/error_condition.hpp>
#include <proton/message.hpp>
#include <proton/message_id.hpp>
#include <proton/messaging_handler.hpp>
#include <proton/receiver.hpp>
#include <proton/receiver_options.hpp>
#include <proton/scalar.hpp>
#include <proton/sender.hpp>
#include <proton/timestamp.hpp>
#include <proton/tracker.hpp>
#include <proton/transport.hpp>
#include <proton/work_queue.hpp>

#include <condition_variable>
#include <deque>
#include <future>
#include <map>
#include <mutex>
#include <thread>

namespace iothub::cli {
namespace {

// The condition of a send that failed with its connection, not by the hub's decision.
const std::string connection_failed = "amqp:connection:failed";

}  // namespace

struct amqp_service_client::impl : proton::messaging_handler {
    hub_access hub;
    proton::container container{*this};
    std::thread loop;

    // Shared with callers' threads.
    mutable std::mutex mutex;
    std::condition_variable changed;
    bool ready = false;    // authenticated, C2D sender attached
    bool stopped = false;  // the event loop has returned
    std::string error;     // why the connection failed
    proton::work_queue* work = nullptr;

    // The event loop's own.
    proton::connection conn;
    proton::sender cbs_out, c2d_out;
    proton::receiver cbs_in, feedback_in;
    std::string token_request_id;
    bool token_sent = false;
    std::deque<std::pair<proton::message, send_callback>> pending;
    std::map<proton::tracker, send_callback> unsettled;
    std::function<bool(const std::string&)> on_feedback;

    explicit impl(hub_access h) : hub(std::move(h)) {}

    void fail(const std::string& why) {
        {
            std::lock_guard lock(mutex);
            if (error.empty()) error = why;
        }
        changed.notify_all();
        const send_outcome lost{false, connection_failed, why};
        for (auto& [m, done] : pending) done(lost);
        pending.clear();
        for (auto& [t, done] : unsettled) done(lost);
        unsettled.clear();
        if (conn && conn.active()) conn.close();
    }

    void on_container_start(proton::container& c) override { detail::connect_amqps(c, hub, "c2d"); }

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
            s.send(amqp_client::put_token_request(
                token_request_id, hub.hostname,
                auth::make_sas_token(hub.hostname, hub.key, unix_seconds(now()) + 3600,
                                     hub.policy)));
        } else if (s == c2d_out) {
            flush();
        }
    }

    void flush() {
        while (!pending.empty() && c2d_out && c2d_out.credit() > 0) {
            auto [m, done] = std::move(pending.front());
            pending.pop_front();
            unsettled.emplace(c2d_out.send(m), std::move(done));
        }
    }

    void on_message(proton::delivery& d, proton::message& m) override {
        if (d.receiver() == cbs_in) {
            if (m.correlation_id() != proton::message_id(token_request_id)) return;
            const auto code = amqp_client::status_of(m);
            if (code != 200) {
                auto why = amqp_client::status_description(m);
                fail("The hub refused the service token (" + std::to_string(code) +
                     (why.empty() ? std::string() : ": " + why) + ").");
                return;
            }
            c2d_out = conn.open_sender("/messages/devicebound");
        } else if (d.receiver() == feedback_in) {
            const bool more = on_feedback ? on_feedback(amqp_client::text_of(m.body())) : false;
            // Accepted when this returns (auto-accept); credit only for what is still wanted.
            if (more) feedback_in.add_credit(1);
        }
    }

    void on_sender_open(proton::sender& s) override {
        if (s != c2d_out) return;
        // A refused link is attached and at once detached with the reason; when both came in
        // together, that is a failure to open, not a connection that fails on first use.
        if (!s.error().empty()) return fail(s.error().what());
        {
            std::lock_guard lock(mutex);
            ready = true;
        }
        changed.notify_all();
    }

    void on_receiver_open(proton::receiver& r) override {
        if (r == feedback_in) r.add_credit(1);
    }

    void settle(proton::tracker& t, send_outcome o) {
        auto it = unsettled.find(t);
        if (it == unsettled.end()) return;
        auto done = std::move(it->second);
        unsettled.erase(it);
        done(o);
    }
    void on_tracker_accept(proton::tracker& t) override { settle(t, {true, {}, {}}); }
    void on_tracker_reject(proton::tracker& t) override {
        send_outcome o{false, "amqp:rejected", {}};
        if (auto c = amqp_client::condition_of(t); !c.name.empty()) {
            o.condition = std::move(c.name);
            o.description = std::move(c.description);
        }
        settle(t, std::move(o));
    }
    void on_tracker_release(proton::tracker& t) override {
        settle(t, {false, "released", "The hub released the message without taking it."});
    }
    void on_tracker_settle(proton::tracker& t) override {
        settle(t, {false, "settled", "The hub settled the message without an outcome."});
    }

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

amqp_service_client::amqp_service_client(std::unique_ptr<impl> i) : impl_(std::move(i)) {}

result<std::unique_ptr<amqp_service_client>> amqp_service_client::open(
    const hub_access& hub, std::chrono::milliseconds timeout) {
    auto i = std::make_unique<impl>(hub);
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
    std::unique_ptr<amqp_service_client> client(new amqp_service_client(std::move(i)));
    std::unique_lock lock(raw->mutex);
    const std::string where = hub.connect_host + ":" + std::to_string(hub.amqp_port);
    if (!raw->changed.wait_for(lock, timeout,
                               [&] { return raw->ready || !raw->error.empty() || raw->stopped; }))
        return error(errc::service_unavailable,
                     "The hub's AMQP endpoint at " + where + " did not answer in time.");
    if (!raw->ready)
        return error(errc::service_unavailable, "AMQP with the hub at " + where + " failed: " +
                                                    (raw->error.empty() ? "closed" : raw->error));
    return client;
}

amqp_service_client::~amqp_service_client() {
    auto& i = *impl_;
    {
        std::unique_lock lock(i.mutex);
        if (i.work)
            i.work->add([&i] {
                if (i.conn && i.conn.active()) i.conn.close();
            });
        // A clean close lets the hub release what this connection held; a hub that does not
        // answer the close is cut off.
        i.changed.wait_for(lock, std::chrono::seconds(3), [&] { return i.stopped; });
    }
    i.container.stop();
    if (i.loop.joinable()) i.loop.join();
}

void amqp_service_client::send_async(c2d_message c, send_callback done) {
    proton::message m;
    m.to("/devices/" + percent_encode(c.device_id) + "/messages/devicebound");
    if (!c.message_id.empty()) m.id(c.message_id);
    if (!c.correlation_id.empty()) m.correlation_id(c.correlation_id);
    if (!c.content_type.empty()) m.content_type(c.content_type);
    if (c.expiry_ms) m.expiry_time(proton::timestamp(c.expiry_ms));
    if (!c.ack.empty()) m.properties().put("iothub-ack", c.ack);
    for (const auto& [k, v] : c.properties) m.properties().put(k, v);
    // A data section, as the SDKs send bodies, not an AMQP value.
    m.body(proton::binary(c.body));
    m.inferred(true);

    auto& i = *impl_;
    std::unique_lock lock(i.mutex);
    auto job = [&i, m = std::move(m), done]() mutable {
        i.pending.emplace_back(std::move(m), std::move(done));
        i.flush();
    };
    if (!i.work || !i.work->add(std::move(job))) {
        auto why = i.error.empty() ? std::string("The connection to the hub is closed.") : i.error;
        lock.unlock();
        done({false, connection_failed, why});
    }
}

result<send_outcome> amqp_service_client::send(c2d_message m, std::chrono::milliseconds timeout) {
    auto answer = std::make_shared<std::promise<send_outcome>>();
    auto settled = answer->get_future();
    send_async(std::move(m), [answer](const send_outcome& o) { answer->set_value(o); });
    if (settled.wait_for(timeout) != std::future_status::ready)
        return error(errc::service_unavailable, "The hub did not settle the message in time.");
    return settled.get();
}

void amqp_service_client::receive_feedback(std::function<bool(const std::string&)> on_batch) {
    auto& i = *impl_;
    std::lock_guard lock(i.mutex);
    if (!i.work) return;
    i.work->add([&i, on_batch = std::move(on_batch)]() mutable {
        i.on_feedback = std::move(on_batch);
        // No credit window: credit is granted one message at a time (on_receiver_open).
        i.feedback_in = i.conn.open_receiver("/messages/serviceBound/feedback",
                                             proton::receiver_options().credit_window(0));
    });
}

std::string amqp_service_client::failure() const {
    std::lock_guard lock(impl_->mutex);
    return impl_->error;
}

std::string describe_rejection(const send_outcome& o) {
    if (o.condition == connection_failed) return o.description;
    std::string name = o.condition == "amqp:not-found" ? "DeviceNotFound"
                       : o.condition == "amqp:resource-limit-exceeded"
                           ? "DeviceMaximumQueueDepthExceeded"
                           : o.condition;
    return name + ": " + (o.description.empty() ? "no details" : o.description) +
           (name != o.condition ? " (" + o.condition + ")" : "");
}

}  // namespace iothub::cli
