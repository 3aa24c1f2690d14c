#include "endpoints/eventhub_sink.hpp"

#include "amqp_client/support.hpp"
#include "auth/connection_string.hpp"
#include "auth/sas.hpp"
#include "common/crypto.hpp"
#include "common/encoding.hpp"
#include "common/time.hpp"

#include <proton/annotation_key.hpp>
#include <proton/binary.hpp>
#include <proton/connection.hpp>
#include <proton/connection_options.hpp>
#include <proton/container.hpp>
#include <proton/delivery.hpp>
#include <proton/error_condition.hpp>
#include <proton/message.hpp>
#include <proton/message_id.hpp>
#include <proton/messaging_handler.hpp>
#include <proton/receiver.hpp>
#include <proton/receiver_options.hpp>
#include <proton/sender.hpp>
#include <proton/ssl.hpp>
#include <proton/timestamp.hpp>
#include <proton/tracker.hpp>
#include <proton/transport.hpp>
#include <proton/work_queue.hpp>
#include <spdlog/spdlog.h>

#include <atomic>
#include <charconv>
#include <condition_variable>
#include <deque>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>

namespace iothub::endpoints {
namespace {

using steady = std::chrono::steady_clock;

// How long a clean close may take before the connection is cut.
constexpr auto close_grace = std::chrono::seconds(3);
// The connection's clock. Proton 0.37 cannot cancel a scheduled task, and one pending keeps the
// event loop running, so renewal is checked on a short tick that lapses when the connection ends.
constexpr std::int64_t tick_ms = 1000;
constexpr std::string_view device_id_property = "iothub-connection-device-id";

error invalid(const routing::endpoint& e, const std::string& what) {
    return error(errc::argument_invalid, "Event hub endpoint '" + e.name + "': " + what);
}

const std::string* find(const storage::event_record& e, std::string_view name) {
    if (const auto* v = storage::find_property(e.system_properties, name)) return v;
    return e.stamp ? storage::find_property(*e.stamp, name) : nullptr;
}

// A routed message as the event hub receives it (the module comment says what goes where).
proton::message to_message(const storage::event_record& e) {
    proton::message m;
    m.body(proton::binary(e.body));
    m.inferred(true);  // a data section, as the Event Hubs SDKs send bodies
    for (const auto& [k, v] : e.application_properties) m.properties().put(k, v);
    auto& annotations = m.message_annotations();
    auto system = [&](const storage::property_list& list) {
        for (const auto& [k, v] : list) {
            if (k == "message-id") {
                m.id(proton::message_id(v));
            } else if (k == "correlation-id") {
                m.correlation_id(proton::message_id(v));
            } else if (k == "content-type") {
                m.content_type(v);
            } else if (k == "content-encoding") {
                m.content_encoding(v);
            } else if (k == "iothub-enqueuedtime") {
                // Azure's routed events carry it as a timestamp.
                if (auto t = parse_iso8601(v))
                    annotations.put(proton::annotation_key(k), proton::timestamp(unix_millis(*t)));
                else
                    annotations.put(proton::annotation_key(k), v);
            } else if (k.starts_with("iothub-") || k.starts_with("dt-")) {
                annotations.put(proton::annotation_key(k), v);
            }
        }
    };
    system(e.system_properties);
    if (e.stamp) system(*e.stamp);
    if (const auto* device = find(e, device_id_property))
        annotations.put(proton::annotation_key("x-opt-partition-key"), *device);
    return m;
}

// One connection to the event hub, from dialling to its end; a broken one is replaced, never
// revived. Proton's event loop runs on `thread_`; the handlers (on_*) run there and nowhere else,
// and talk to callers' threads only through what `mutex_` guards.
class eventhub_connection final : public proton::messaging_handler {
  public:
    eventhub_connection(const eventhub_target& t, std::string trust_db,
                        const eventhub_sink_options& o)
        : target_(t),
          trust_db_(std::move(trust_db)),
          options_(o),
          reply_to_("cbs-" + random_uuid()) {}

    ~eventhub_connection() override { close(); }

    eventhub_connection(const eventhub_connection&) = delete;
    eventhub_connection& operator=(const eventhub_connection&) = delete;

    // Dials, puts the token and attaches the sender, by `deadline`.
    result<void> open(steady::time_point deadline) {
        thread_ = std::thread([this] {
            std::string thrown;
            try {
                container_.run();
            } catch (const std::exception& e) {
                thrown = std::string("AMQP client error: ") + e.what();
            }
            std::lock_guard lock(mutex_);
            if (!broken_) failure_ = thrown.empty() ? "the connection closed." : thrown;
            loop_done_ = true;
            broken_ = true;
            work_ = nullptr;
            changed_.notify_all();
        });
        std::unique_lock lock(mutex_);
        if (!changed_.wait_until(lock, deadline, [&] { return ready_ || broken_; })) {
            broken_ = true;
            return error(errc::service_unavailable,
                         "no connection to " + target_.url() + " within " +
                             std::to_string(options_.timeout.count()) + " ms (" + stage_ + ").");
        }
        if (broken_) return error(failure_code_, failure_);
        return {};
    }

    // Sends `batch` in order and waits, by `deadline`, for the event hub's disposition of each.
    result<void> send(std::vector<proton::message> batch, steady::time_point deadline) {
        std::unique_lock lock(mutex_);
        if (broken_ || !work_) return error(failure_code_, failure_);
        const auto total = batch.size();
        outstanding_ = total;
        call_failure_.clear();
        auto job = [this, batch = std::move(batch)]() mutable {
            for (std::size_t i = 0; i < batch.size(); ++i)
                pending_.emplace_back(std::move(batch[i]), i);
            total_ = batch.size();
            flush();
        };
        if (!work_->add(std::move(job))) {
            broken_ = true;
            return error(errc::service_unavailable, "The connection to the event hub closed.");
        }
        if (!changed_.wait_until(lock, deadline, [&] { return outstanding_ == 0 || broken_; })) {
            // Whatever is still in flight must not land after the worker's retry of the same
            // messages: this connection is done.
            broken_ = true;
            return error(errc::service_unavailable,
                         "the event hub settled " + std::to_string(total - outstanding_) + " of " +
                             std::to_string(total) + " messages within " +
                             std::to_string(options_.timeout.count()) + " ms.");
        }
        if (!call_failure_.empty()) return error(errc::server_error, call_failure_);
        if (outstanding_ > 0) return error(failure_code_, failure_);
        return {};
    }

    bool broken() const {
        std::lock_guard lock(mutex_);
        return broken_;
    }

    // Closes cleanly when the peer answers in time, else cuts the connection; joins the loop.
    void close() {
        if (!thread_.joinable()) return;
        closing_ = true;
        {
            std::unique_lock lock(mutex_);
            if (work_)
                work_->add([this] {
                    if (conn_ && conn_.active()) conn_.close();
                });
            changed_.wait_for(lock, close_grace, [&] { return loop_done_ || !work_; });
        }
        // Cuts what did not close in time; the loop returns once the tick has lapsed.
        container_.stop();
        thread_.join();
    }

  private:
    // --- Proton's event loop ------------------------------------------------------------------

    void on_container_start(proton::container& c) override {
        proton::connection_options o;
        o.container_id("iothub-routing-" + random_uuid())
            .virtual_host(target_.host)
            .sasl_enabled(true)
            .sasl_allowed_mechs("ANONYMOUS");
        if (target_.tls)
            o.ssl_client_options(trust_db_.empty() ? proton::ssl_client_options()
                                                   : proton::ssl_client_options(trust_db_));
        set_stage("connecting");
        c.connect(target_.url(), o);
    }

    void on_connection_open(proton::connection& c) override {
        conn_ = c;
        {
            std::lock_guard lock(mutex_);
            work_ = &c.work_queue();
        }
        set_stage("waiting for the answer to the put-token");
        // Azure answers on the receiver whose name the request gives as reply-to.
        cbs_in_ = c.open_receiver("$cbs", proton::receiver_options().name(reply_to_));
        cbs_out_ = c.open_sender("$cbs");
        token_due_ = true;
        tick();
    }

    // Runs on the container's timer, outside the connection's context: what it does to the
    // connection goes through the connection's work queue, which also writes it out.
    void tick() {
        if (closing_ || broken()) return;
        if (token_sent_ && steady::now() - *token_sent_ >= options_.token_renewal)
            conn_.work_queue().add([this] {
                token_due_ = true;
                put_token();
            });
        container_.schedule(proton::duration(tick_ms), [this] { tick(); });
    }

    void on_sendable(proton::sender& s) override {
        if (s == cbs_out_)
            put_token();
        else if (s == sender_)
            flush();
    }

    void put_token() {
        if (!token_due_ || !cbs_out_ || cbs_out_.credit() <= 0) return;
        token_due_ = false;
        token_sent_ = steady::now();
        token_id_ = random_uuid();
        const auto expiry = unix_seconds(now()) + options_.token_lifetime.count();
        cbs_out_.send(amqp_client::put_token_request(token_id_, target_.audience(),
                                                     eventhub_token(target_, expiry), reply_to_));
    }

    void on_message(proton::delivery& d, proton::message& m) override {
        if (d.receiver() != cbs_in_) return;
        if (m.correlation_id() != proton::message_id(token_id_)) return;
        const auto status = amqp_client::status_of(m);
        // Azure answers 202, this hub 200.
        if (status < 200 || status > 299) {
            auto why = amqp_client::status_description(m);
            return fail("the event hub refused the token for " + target_.audience() +
                            " with key '" + target_.key_name + "' (" + std::to_string(status) +
                            (why.empty() ? std::string() : ": " + why) + ").",
                        errc::unauthorized);
        }
        if (sender_) return;  // a renewal
        set_stage("attaching the sender");
        sender_ = conn_.open_sender(target_.entity);
    }

    void on_sender_open(proton::sender& s) override {
        if (s != sender_) return;
        // A refused link is attached and at once detached with the reason; when both came
        // together, that is a refusal, not a connection that fails on first use.
        if (!s.error().empty()) return refused(s.error());
        std::lock_guard lock(mutex_);
        ready_ = true;
        changed_.notify_all();
    }

    void refused(const proton::error_condition& e) {
        fail("the event hub refused a sender on '" + target_.entity + "': " + describe(e),
             e.name() == "amqp:unauthorized-access" ? errc::unauthorized
                                                    : errc::service_unavailable);
    }

    void flush() {
        while (!pending_.empty() && sender_ && sender_.credit() > 0) {
            auto& [m, index] = pending_.front();
            unsettled_.emplace(sender_.send(m), index);
            pending_.pop_front();
        }
    }

    void settled(proton::tracker& t, const std::string& failure) {
        auto it = unsettled_.find(t);
        if (it == unsettled_.end()) return;
        const auto index = it->second;
        unsettled_.erase(it);
        std::lock_guard lock(mutex_);
        if (!failure.empty() && call_failure_.empty())
            call_failure_ = "message " + std::to_string(index + 1) + " of " +
                            std::to_string(total_) + " was " + failure;
        if (outstanding_ > 0) --outstanding_;
        changed_.notify_all();
    }

    void on_tracker_accept(proton::tracker& t) override { settled(t, {}); }
    void on_tracker_reject(proton::tracker& t) override {
        auto c = amqp_client::condition_of(t);
        settled(t, "rejected by the event hub" +
                       (c.name.empty()
                            ? std::string(".")
                            : " (" + c.name + (c.description.empty() ? "" : ": " + c.description) +
                                  ")."));
    }
    // Released and modified alike: the event hub did not take it.
    void on_tracker_release(proton::tracker& t) override {
        settled(t, "released by the event hub without being taken.");
    }
    void on_tracker_settle(proton::tracker& t) override {
        settled(t, "settled by the event hub without an outcome.");
    }

    void on_sender_error(proton::sender& s) override {
        if (s == sender_) return refused(s.error());
        fail("$cbs: " + describe(s.error()));
    }
    void on_receiver_error(proton::receiver& r) override { fail("$cbs: " + describe(r.error())); }
    void on_session_error(proton::session& s) override { fail(describe(s.error())); }
    void on_connection_error(proton::connection& c) override { fail(describe(c.error())); }
    void on_connection_close(proton::connection&) override {
        fail("the event hub closed the connection.");
    }
    void on_transport_error(proton::transport& t) override {
        fail("cannot reach " + target_.url() + ": " + describe(t.error()));
    }
    void on_transport_close(proton::transport&) override {
        fail("the connection to " + target_.url() + " closed.");
        std::lock_guard lock(mutex_);
        work_ = nullptr;  // the work queue goes with the connection
        changed_.notify_all();
    }
    void on_error(const proton::error_condition& e) override { fail(describe(e)); }

    static std::string describe(const proton::error_condition& e) {
        if (e.empty()) return "no reason given";
        return e.name() + (e.description().empty() ? "" : ": " + e.description());
    }

    void set_stage(std::string s) {
        std::lock_guard lock(mutex_);
        stage_ = std::move(s);
    }

    // The first failure is the one reported; the connection ends with it.
    void fail(const std::string& why, errc code = errc::service_unavailable) {
        {
            std::lock_guard lock(mutex_);
            if (!broken_) {
                failure_ = why;
                failure_code_ = code;
            }
            broken_ = true;
            changed_.notify_all();
        }
        if (conn_ && conn_.active()) conn_.close();
    }

    const eventhub_target target_;
    const std::string trust_db_;
    const eventhub_sink_options options_;
    const std::string reply_to_;

    // Shared with callers' threads.
    mutable std::mutex mutex_;
    std::condition_variable changed_;
    bool ready_ = false;      // the sender is attached
    bool broken_ = false;     // failed or closed: replaced on the next delivery
    bool loop_done_ = false;  // run() returned
    std::string failure_;
    errc failure_code_ = errc::service_unavailable;
    std::string stage_ = "starting";
    proton::work_queue* work_ = nullptr;
    std::size_t outstanding_ = 0;  // messages of the call in progress without a disposition
    std::size_t total_ = 0;
    std::string call_failure_;

    // The event loop's own.
    proton::container container_{*this};
    std::thread thread_;
    proton::connection conn_;
    proton::sender cbs_out_, sender_;
    proton::receiver cbs_in_;
    std::string token_id_;
    bool token_due_ = false;
    std::optional<steady::time_point> token_sent_;  // renewed by tick() when due
    std::atomic<bool> closing_{false};
    std::deque<std::pair<proton::message, std::size_t>> pending_;
    std::map<proton::tracker, std::size_t> unsettled_;
};

class eventhub_sink final : public routing::sink {
  public:
    eventhub_sink(const routing::endpoint& e, eventhub_target t, storage::kv_store& kv,
                  eventhub_sink_options o, std::string trust_db, std::filesystem::path bundle)
        : name_(e.name),
          target_(std::move(t)),
          kv_(kv),
          options_(std::move(o)),
          trust_db_(std::move(trust_db)),
          bundle_(std::move(bundle)) {}

    ~eventhub_sink() override {
        connection_.reset();
        std::error_code ec;
        if (!bundle_.empty()) std::filesystem::remove(bundle_, ec);
    }

    result<void> deliver(int, std::vector<storage::event_record> events,
                         std::span<const std::uint64_t>, storage::kv_write cursor) override {
        if (events.empty()) {
            held_.hold(std::move(cursor));
            return {};
        }
        try {
            auto r = send(events);
            if (!r)
                return error(r.error().code(), "Delivery to event hub '" + target_.entity +
                                                   "' at " + target_.url() +
                                                   " failed: " + r.error().message());
        } catch (const std::exception& ex) {
            connection_.reset();
            return error(errc::server_error,
                         "Delivery to event hub '" + target_.entity + "' failed: " + ex.what());
        }
        held_.hold(std::move(cursor));
        return {};
    }

    result<void> flush(sys_time, bool) override { return held_.write(kv_); }

  private:
    result<void> send(const std::vector<storage::event_record>& events) {
        const auto deadline = steady::now() + options_.timeout;
        if (connection_ && connection_->broken()) connection_.reset();
        if (!connection_) {
            spdlog::debug("routing endpoint '{}': connecting to {}", name_, target_.url());
            auto c = std::make_unique<eventhub_connection>(target_, trust_db_, options_);
            if (auto r = c->open(deadline); !r) return r;
            connection_ = std::move(c);
        }
        std::vector<proton::message> batch;
        batch.reserve(events.size());
        for (const auto& e : events) batch.push_back(to_message(e));
        auto r = connection_->send(std::move(batch), deadline);
        if (!r && connection_->broken()) connection_.reset();
        return r;
    }

    std::string name_;
    eventhub_target target_;
    storage::kv_store& kv_;
    eventhub_sink_options options_;
    std::string trust_db_;
    std::filesystem::path bundle_;  // a file this sink wrote, removed with it
    std::unique_ptr<eventhub_connection> connection_;
    routing::held_cursors held_;
};

// The extra CAs as one file Proton can load besides the system's: the file itself when there is
// one, else a bundle of them all written to a private temporary file.
result<std::pair<std::string, std::filesystem::path>> trust_db_for(
    const routing::endpoint& e, const std::vector<std::filesystem::path>& files) {
    std::string pem;
    for (const auto& f : files) {
        std::ifstream in(f, std::ios::binary);
        std::stringstream text;
        if (in) text << in.rdbuf();
        if (!in || text.str().find("-----BEGIN CERTIFICATE-----") == std::string::npos)
            return invalid(e, "cannot read CA certificates from " + f.string() + ".");
        pem += text.str();
        if (!pem.ends_with('\n')) pem += '\n';
    }
    if (files.empty()) return std::pair{std::string(), std::filesystem::path()};
    if (files.size() == 1) return std::pair{files.front().string(), std::filesystem::path()};
    std::error_code ec;
    auto path = std::filesystem::temp_directory_path(ec) / ("iothub-ca-" + random_uuid() + ".pem");
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << pem;
    out.close();
    if (ec || !out)
        return error(errc::server_error, "Event hub endpoint '" + e.name +
                                             "': cannot write the CA bundle " + path.string() +
                                             ".");
    return std::pair{path.string(), path};
}

}  // namespace

std::string eventhub_target::url() const {
    return std::string(tls ? "amqps://" : "amqp://") + host + ":" + std::to_string(port);
}

std::string eventhub_target::audience() const {
    return "sb://" + host + "/" + entity;
}

result<eventhub_target> parse_eventhub_target(const routing::endpoint& e) {
    auto cs = auth::connection_string::parse(e.connection_string);
    if (!cs) return invalid(e, cs.error().message());
    auto field = [&cs](std::string_view key) { return cs->get_ignoring_case(key).value_or(""); };
    eventhub_target t;
    const auto endpoint_text = field("Endpoint");
    std::string_view endpoint = endpoint_text;
    if (!iequals(endpoint.substr(0, 5), "sb://"))
        return invalid(e, "the connection string needs Endpoint=sb://<host>/.");
    endpoint.remove_prefix(5);
    endpoint = endpoint.substr(0, endpoint.find('/'));
    std::string_view port;
    if (endpoint.starts_with('[')) {  // an IPv6 address
        auto close = endpoint.find(']');
        if (close == std::string_view::npos) return invalid(e, "the Endpoint's host is not valid.");
        t.host = std::string(endpoint.substr(0, close + 1));
        port = endpoint.substr(close + 1);
    } else {
        auto colon = endpoint.find(':');
        t.host = std::string(endpoint.substr(0, colon));
        if (colon != std::string_view::npos) port = endpoint.substr(colon);
    }
    if (t.host.empty()) return invalid(e, "the connection string's Endpoint has no host.");
    t.tls = !iequals(field("UseDevelopmentEmulator"), "true");
    t.port = t.tls ? 5671 : 5672;
    if (!port.empty()) {
        port.remove_prefix(1);  // ':'
        unsigned n = 0;
        auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), n);
        if (ec != std::errc{} || end != port.data() + port.size() || n == 0 || n > 65535)
            return invalid(e, "the Endpoint's port is not valid.");
        t.port = static_cast<std::uint16_t>(n);
    }
    t.key_name = field("SharedAccessKeyName");
    t.key = field("SharedAccessKey");
    if (t.key_name.empty() || t.key.empty())
        return invalid(e, "the connection string needs SharedAccessKeyName and SharedAccessKey.");
    t.entity = field("EntityPath");
    if (t.entity.empty()) t.entity = e.entity_path;
    if (t.entity.empty())
        return invalid(e,
                       "no event hub named: give EntityPath in the connection string or "
                       "entityPath.");
    return t;
}

std::string eventhub_token(const eventhub_target& t, std::int64_t expiry) {
    return auth::make_sas_token(t.audience(), t.key, expiry, t.key_name, auth::key_encoding::text);
}

result<std::unique_ptr<routing::sink>> make_eventhub_sink(const routing::endpoint& e,
                                                          storage::kv_store& kv,
                                                          eventhub_sink_options o) {
    auto t = parse_eventhub_target(e);
    if (!t) return t.error();
    auto trust = trust_db_for(e, o.extra_ca_files);
    if (!trust) return trust.error();
    return std::unique_ptr<routing::sink>(std::make_unique<eventhub_sink>(
        e, std::move(*t), kv, std::move(o), std::move(trust->first), std::move(trust->second)));
}

}  // namespace iothub::endpoints
