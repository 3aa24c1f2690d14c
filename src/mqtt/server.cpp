#include "mqtt/server.hpp"

#include "common/encoding.hpp"
#include "mqtt/topics.hpp"
#include "net/stream_listeners.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/json.hpp>
#include <spdlog/spdlog.h>

#include <atomic>
#include <deque>
#include <map>
#include <mutex>

namespace iothub::mqtt {
namespace asio = boost::asio;
namespace beast = boost::beast;
using net::as_tuple;
using net::error_code;
using net::tcp;
using net::transport;

namespace {

std::string session_key(const std::string& client_id) {
    return "mqtt/session/" + client_id;
}

// A device connection keeps up to this many C2D messages PUBLISHed and not yet PUBACKed. Several
// in flight are safe because each PUBACK names its packet id, which maps to exactly one lock
// token, so an acknowledgement can only complete the message it belongs to; and clients PUBACK in
// the order they received (MQTT-4.6.0-2), which is queue order, so the application sees and
// settles messages in the order they were sent. A message the device never acknowledges (the C
// SDK's ABANDONED sends nothing) holds only its own lock: it times out and comes back with DUP
// while the rest keep flowing. One at a time would cost a round trip per message.
constexpr std::size_t c2d_window = 16;

// `devices/{id}/messages/devicebound/{bag}`. The bag is never empty (`$.to` is always there):
// the C# SDK fails on an empty one, and the C SDK only recognises the `%24.` spelling of system
// names, which encode_property_bag produces.
std::string c2d_topic(const std::string& device_id, const c2d::message& m) {
    storage::property_list bag;
    auto add = [&](std::string_view name, const std::string& value) {
        if (!value.empty()) bag.emplace_back(name, value);
    };
    add("$.mid", m.message_id);
    // As the service's `to`: the device id percent-encoded (encodeURIComponent in the Node SDK).
    bag.emplace_back("$.to", "/devices/" + percent_encode(device_id) + "/messages/devicebound");
    add("$.cid", m.correlation_id);
    add("$.uid", m.user_id);
    add("$.ct", m.content_type);
    add("$.ce", m.content_encoding);
    bag.insert(bag.end(), m.properties.begin(), m.properties.end());
    return "devices/" + device_id + "/messages/devicebound/" + encode_property_bag(bag);
}

clock::time_point steady_from(sys_time t) {
    return clock::now() + std::chrono::duration_cast<clock::duration>(t - now());
}

class connection;

}  // namespace

struct server::impl : std::enable_shared_from_this<server::impl> {
    runtime::shard_set& shards;
    services svc;
    server_settings settings;
    std::unique_ptr<net::stream_listeners> listeners;

    mutable std::mutex mutex;
    std::map<connection*, std::weak_ptr<connection>> live;
    bool stopping = false;

    impl(runtime::shard_set& s, services v, server_settings st) : shards(s), svc(v), settings(st) {}

    void start(std::unique_ptr<transport> t, asio::any_io_executor ex);
    void forget(connection* c) {
        std::lock_guard lock(mutex);
        live.erase(c);
    }
};

namespace {

class connection final : public std::enable_shared_from_this<connection>,
                         public session_handler,
                         public connections::device_channel {
  public:
    connection(std::shared_ptr<server::impl> srv, std::unique_ptr<transport> t,
               asio::any_io_executor ex)
        : srv_(std::move(srv)),
          transport_(std::move(t)),
          ex_(ex),
          session_(*this, srv_->settings.limits, clock::now()),
          timer_(ex),
          resume_(ex) {}

    asio::awaitable<void> run() {
        auto self = shared_from_this();
        asio::co_spawn(ex_, timer_loop(self), asio::detached);
        std::array<char, 16 * 1024> buffer;
        while (!session_.closed()) {
            if (paused()) {
                resume_.expires_at(clock::time_point::max());
                co_await resume_.async_wait(as_tuple);
                continue;
            }
            reading_ = true;
            auto [ec, n] = co_await transport_->read_some(asio::buffer(buffer));
            reading_ = false;
            if (ec) {
                session_.close(ec == asio::error::eof ? "connection closed by the client"
                                                      : "connection lost: " + ec.message());
            } else {
                session_.receive(std::string_view(buffer.data(), n), clock::now());
            }
            pump();
        }
        pump();
    }

    // From any thread: ends the connection for `reason`.
    void kick(const std::string& reason) {
        asio::post(ex_, [self = shared_from_this(), reason] {
            self->session_.close(reason);
            self->pump();
        });
    }

    // device_channel (any thread) ------------------------------------------------------------

    bool wants_desired_updates() const override { return desired_qos_.load() >= 0; }
    bool accepts_methods() const override { return methods_qos_.load() >= 0; }

    void send_desired_update(std::string patch, std::uint64_t version) override {
        asio::post(ex_, [self = shared_from_this(), patch = std::move(patch), version] {
            auto qos = self->desired_qos_.load();
            if (qos < 0 || self->session_.closed()) return;
            self->session_.publish(
                "$iothub/twin/PATCH/properties/desired/?$version=" + std::to_string(version), patch,
                static_cast<std::uint8_t>(qos));
            self->pump();
        });
    }

    void send_method_request(std::string name, std::string rid, std::string payload) override {
        asio::post(ex_, [self = shared_from_this(), name = std::move(name), rid = std::move(rid),
                         payload = std::move(payload)] {
            auto qos = self->methods_qos_.load();
            if (qos < 0 || self->session_.closed()) return;
            // `$rid` last: the C and C# SDKs take everything after "?$rid=" as the id.
            self->session_.publish("$iothub/methods/POST/" + name + "/?$rid=" + rid, payload,
                                   static_cast<std::uint8_t>(qos));
            self->pump();
        });
    }

    void c2d_available() override {
        asio::post(ex_, [self = shared_from_this()] {
            self->pull_c2d();
            self->pump();
        });
    }

  private:
    // session_handler --------------------------------------------------------------------

    void on_connect(const connect_packet& c) override {
        auto user = parse_username(c.username.value_or(""));
        if (!user)
            return session_.refuse(
                connack_code::bad_username_or_password,
                "the username is not {host}/{deviceId}[/{moduleId}]/?api-version=...");
        const std::string expected =
            user->module_id.empty() ? user->device_id : user->device_id + "/" + user->module_id;
        if (c.client_id != expected)
            return session_.refuse(
                connack_code::identifier_rejected,
                "client id '" + c.client_id + "' does not match the username's '" + expected + "'");
        if (c.will) {
            auto t = classify_publish(c.will->topic, user->device_id, user->module_id);
            if (t.what != topic_info::kind::telemetry || c.will->qos > 1)
                return session_.refuse(
                    connack_code::not_authorized,
                    "a will message must go to the device's own telemetry topic");
            will_ = *c.will;
        }
        client_id_ = c.client_id;
        clean_session_ = c.clean_session;
        model_id_ = user->model_id;
        device_auth::device_credentials creds{user->device_id, user->module_id, c.password,
                                              transport_->client_certificate()};
        srv_->svc.blocking.post([self = shared_from_this(), creds = std::move(creds),
                                 clean = c.clean_session, key = session_key(c.client_id)] {
            auto& svc = self->srv_->svc;
            auto who = svc.authenticator.authenticate(creds, now());
            std::optional<std::string> record;
            if (who) {
                if (clean) {
                    (void)svc.sessions.remove(key);  // a clean session forgets the old one
                } else if (auto got = svc.sessions.get(key); got && *got) {
                    record = std::move((*got)->value);
                }
            }
            asio::post(self->ex_,
                       [self, who = std::move(who), record = std::move(record)]() mutable {
                           self->authenticated(std::move(who), std::move(record));
                       });
        });
    }

    void on_publish(publish_packet&& p) override {
        entry_->touch(now());
        auto t = classify_publish(p.topic, principal_->device_id, principal_->module_id);
        switch (t.what) {
            case topic_info::kind::telemetry: {
                auto event = telemetry_event(std::move(p.payload), parse_property_bag(t.bag));
                if (p.retain) event.application_properties.emplace_back("x-opt-retain", "true");
                if (auto ok = srv_->svc.telemetry.check(event); !ok)
                    return session_.close("telemetry refused: " + ok.error().message());
                // Collected until the read that brought them is decoded, then stored together.
                received_.push_back(std::move(event));
                if (p.qos == 1) received_ids_.push_back(p.packet_id);
                return;
            }
            case topic_info::kind::other_identity:
                return session_.close("published to another identity's topic '" + p.topic + "'");
            case topic_info::kind::twin_get:
                return twin_request(std::move(t), {});
            case topic_info::kind::twin_patch_reported:
                return twin_request(std::move(t), std::move(p.payload));
            case topic_info::kind::method_response:
                // A late or unknown answer is dropped, as Azure does; the device cannot tell.
                if (!srv_->svc.methods.respond(principal_->device_id, principal_->module_id, t.rid,
                                               t.status, p.payload))
                    spdlog::debug("{} {}: method answer for unknown request '{}' dropped",
                                  transport_->kind(), transport_->peer(), t.rid);
                return;
            case topic_info::kind::unknown:
                return session_.close("published to an unknown topic '" + p.topic + "'");
        }
    }

    std::uint8_t on_subscribe(const subscription& s) override {
        if (classify_filter(s.filter, principal_->device_id, principal_->module_id) ==
            filter_kind::unknown)
            return suback_failure;
        subscriptions_[s.filter] = s.qos;
        subscriptions_changed_ = true;
        subscriptions_updated();
        // After the SUBACK this call is about to produce: some clients want it first.
        if (c2d_qos_ >= 0) c2d_available();
        return s.qos;
    }

    void on_unsubscribe(const std::string& filter) override {
        subscriptions_changed_ |= subscriptions_.erase(filter) > 0;
        subscriptions_updated();
    }

    // Publishes what the device side of the twin and methods needs at the QoS granted for it
    // (-1: not subscribed), and wakes method calls waiting for this device to be reachable.
    void subscriptions_updated() {
        int twin = -1, desired = -1, methods = -1, c2d = -1;
        for (const auto& [f, q] : subscriptions_) {
            switch (classify_filter(f, principal_->device_id, principal_->module_id)) {
                case filter_kind::twin_responses:
                    twin = q;
                    break;
                case filter_kind::twin_desired:
                    desired = q;
                    break;
                case filter_kind::methods:
                    methods = q;
                    break;
                case filter_kind::c2d:
                    c2d = q;
                    break;
                default:
                    break;
            }
        }
        twin_qos_ = twin;
        c2d_qos_ = c2d;
        desired_qos_.store(desired);
        const bool methods_before = methods_qos_.exchange(methods) >= 0;
        if (methods >= 0 && !methods_before)
            srv_->svc.methods.device_ready(principal_->device_id, principal_->module_id);
    }

    // Twin requests of one connection run one at a time, in arrival order, so two reported
    // patches in a row apply in that order.
    void twin_request(topic_info t, std::optional<std::string> patch) {
        twin_queue_.push_back({std::move(t), std::move(patch)});
        if (twin_queue_.size() == 1) run_twin_request();
    }

    void run_twin_request() {
        if (twin_queue_.empty() || session_.closed()) return;
        srv_->svc.blocking.post([self = shared_from_this(), req = twin_queue_.front(),
                                 who = *principal_] {
            auto& twins = self->srv_->svc.twins;
            auto answer = req.patch
                              ? twin::answer_reported_patch(twins, who.device_id, who.module_id,
                                                            *req.patch, req.topic.version)
                              : twin::answer_get(twins, who.device_id, who.module_id);
            // The status travels in the topic (C and C# read it there); failures also carry
            // `errorCode` in the body, which is what Node's twin client looks for.
            std::string topic =
                "$iothub/twin/res/" + std::to_string(answer.status) + "/?$rid=" + req.topic.rid;
            if (answer.version) topic += "&$version=" + std::to_string(*answer.version);
            std::string body = std::move(answer.body);
            asio::post(self->ex_, [self, topic = std::move(topic), body = std::move(body)] {
                self->twin_queue_.pop_front();
                if (self->twin_qos_ >= 0)
                    self->session_.publish(topic, body, static_cast<std::uint8_t>(self->twin_qos_));
                self->run_twin_request();
                self->pump();
            });
        });
    }

    void on_delivered(std::uint16_t packet_id) override {
        auto it = c2d_inflight_.find(packet_id);
        if (it == c2d_inflight_.end()) return;  // a twin or method PUBLISH
        complete_c2d(std::move(it->second));
        c2d_inflight_.erase(it);
        pull_c2d();
    }

    // Takes C2D messages while the device is subscribed and the window has room. Locking a
    // message is a memory operation, so this runs on the shard.
    void pull_c2d() {
        if (c2d_qos_ < 0 || !principal_ || session_.closed() ||
            session_.current() != session::state::connected)
            return;
        auto& c2d = srv_->svc.c2d;
        while (c2d_inflight_.size() < c2d_window && session_.can_publish()) {
            auto d = c2d.receive(principal_->device_id, now());
            if (!d) return;
            auto id =
                session_.publish(c2d_topic(principal_->device_id, *d->content), d->content->body,
                                 static_cast<std::uint8_t>(c2d_qos_), d->delivery_count > 1);
            if (c2d_qos_ == 0)
                complete_c2d(std::move(d->lock_token));  // at most once: written is delivered
            else
                c2d_inflight_.emplace(id, std::move(d->lock_token));
        }
    }

    void complete_c2d(std::string lock_token) {
        srv_->svc.blocking.post([self = shared_from_this(), device = principal_->device_id,
                                 token = std::move(lock_token)] {
            // Lock lost: it timed out and the message went out again, which that copy settles.
            if (auto r = self->srv_->svc.c2d.complete(device, token, now()); !r)
                spdlog::debug("mqtt: C2D completion for {} not applied: {}", device,
                              r.error().message());
        });
    }

    // ----------------------------------------------------------------------------------------

    void authenticated(result<device_auth::device_principal> who,
                       std::optional<std::string> record) {
        if (session_.closed()) return pump();
        if (!who) {
            auto code = who.error().code() == errc::device_disabled
                            ? connack_code::server_unavailable
                            : connack_code::not_authorized;
            spdlog::info("{} {}: connection refused: {}", transport_->kind(), transport_->peer(),
                         who.error().message());
            session_.refuse(code, who.error().message());
            return pump();
        }
        principal_ = std::move(*who);
        stamp_ = telemetry::telemetry_service::stamp_for(*principal_);
        entry_ = srv_->svc.connections.attach(
            principal_->device_id, principal_->module_id,
            [weak = weak_from_this()](const std::string& reason) {
                if (auto self = weak.lock()) self->kick(reason);
            },
            now(), weak_from_this());
        if (record) restore(*record);
        subscriptions_updated();
        if (!model_id_.empty())
            srv_->svc.blocking.post([self = shared_from_this()] {
                auto& p = *self->principal_;
                if (auto r = self->srv_->svc.twins.set_model_id(p.device_id, p.module_id,
                                                                self->model_id_);
                    !r)
                    spdlog::warn("mqtt: cannot record the model id of {}: {}", p.key(),
                                 r.error().message());
            });
        session_.accept(record.has_value());
        pull_c2d();  // a restored session's C2D subscription delivers at once
        spdlog::debug("{} {}: {} connected{}", transport_->kind(), transport_->peer(),
                      principal_->key(), record ? " (session restored)" : "");
        timer_.cancel();  // deadlines changed: keep-alive and token expiry now apply
        pump();
    }

    // Appends what one read brought as one batch; its QoS 1 packets are acknowledged together
    // once it is durable.
    void store_received() {
        if (received_.empty()) return;
        std::size_t bytes = 0;
        for (const auto& e : received_) bytes += storage::event_size(e);
        unstored_bytes_ += bytes;
        srv_->svc.telemetry.ingest(
            *principal_, stamp_, std::move(received_),
            [weak = weak_from_this(), ex = ex_, bytes,
             ids = std::move(received_ids_)](result<void> r) mutable {
                asio::post(ex, [weak, ids = std::move(ids), bytes, r = std::move(r)] {
                    if (auto self = weak.lock()) self->stored(ids, bytes, r);
                });
            });
        received_.clear();
        received_ids_.clear();
    }

    void stored(const std::vector<std::uint16_t>& ids, std::size_t bytes, const result<void>& r) {
        unstored_bytes_ -= bytes;
        if (!r) {
            spdlog::error("{} {}: telemetry not stored: {}", transport_->kind(), transport_->peer(),
                          r.error().message());
            session_.close("the hub could not store the message: " + r.error().message());
        } else {
            for (auto id : ids) session_.acknowledge(id);
        }
        pump();
    }

    void restore(const std::string& record) {
        boost::system::error_code ec;
        auto v = boost::json::parse(record, ec);
        if (ec || !v.is_array()) return;
        for (const auto& s : v.get_array()) {
            const auto* o = s.if_object();
            if (!o || !o->contains("f") || !o->at("f").is_string()) continue;
            std::string filter(o->at("f").get_string());
            if (classify_filter(filter, principal_->device_id, principal_->module_id) !=
                filter_kind::unknown)
                subscriptions_[filter] =
                    static_cast<std::uint8_t>(o->contains("q") ? o->at("q").to_number<int>() : 0);
        }
    }

    void persist_subscriptions() {
        subscriptions_changed_ = false;
        if (clean_session_) return;  // a clean session ends with the connection
        boost::json::array a;
        for (const auto& [f, q] : subscriptions_)
            a.push_back(boost::json::object{{"f", f}, {"q", q}});
        srv_->svc.blocking.post([self = shared_from_this(), key = session_key(client_id_),
                                 value = boost::json::serialize(a)] {
            if (auto r = self->srv_->svc.sessions.put(key, value); !r)
                spdlog::warn("mqtt: cannot record the session of {}: {}", key, r.error().message());
        });
    }

    // Reading waits while the session says so (authenticating, QoS 1 window full) and while too
    // much of this connection's telemetry awaits storage: QoS 0 has no acknowledgement to hold a
    // fast publisher back, so TCP flow control does it.
    bool paused() const {
        return session_.reading_paused() || unstored_bytes_ > max_unstored_bytes;
    }

    // Moves what the session produced to the wire; ends the connection once the session has
    // closed and everything is written.
    void pump() {
        // Telemetry can be decoded by any path into the session (a read, accept() decoding what
        // was pipelined behind CONNECT, acknowledge() resuming a paused read): store it here.
        if (principal_) store_received();
        if (subscriptions_changed_ && principal_) persist_subscriptions();
        auto& produced = session_.output();
        if (!produced.empty()) {
            out_.append(produced);
            produced.clear();
        }
        if (!paused()) resume_.cancel();
        if (writing_ || finished_) return;
        if (!out_.empty()) {
            writing_ = true;
            asio::co_spawn(ex_, write_loop(shared_from_this()), asio::detached);
        } else if (session_.closed()) {
            finish();
        }
    }

    // `self` keeps the connection alive for as long as the coroutine runs.
    asio::awaitable<void> write_loop([[maybe_unused]] std::shared_ptr<connection> self) {
        while (!out_.empty() && !finished_) {
            sending_.clear();
            std::swap(out_, sending_);
            auto ec = co_await transport_->write(asio::buffer(sending_));
            if (ec) {
                session_.close("connection lost while writing: " + ec.message());
                out_.clear();
                break;
            }
        }
        writing_ = false;
        if (session_.closed()) finish();
    }

    asio::awaitable<void> timer_loop([[maybe_unused]] std::shared_ptr<connection> self) {
        while (!session_.closed()) {
            auto due = session_.deadline();
            if (principal_ && principal_->expires)
                due = std::min(due, steady_from(*principal_->expires));
            timer_.expires_at(due);
            co_await timer_.async_wait(as_tuple);
            if (session_.closed()) break;
            session_.tick(clock::now());
            if (principal_ && principal_->expires && now() >= *principal_->expires)
                session_.close("the SAS token expired");
            pump();
        }
    }

    void finish() {
        if (finished_) return;
        finished_ = true;
        timer_.cancel();
        resume_.cancel();
        if (entry_) srv_->svc.connections.detach(entry_, now());
        if (!c2d_inflight_.empty()) {
            // The messages this connection holds count as abandoned. Only its own locks: a newer
            // connection of the same device may already hold others, which release_all would
            // take from it.
            std::vector<std::string> tokens;
            for (auto& [id, token] : c2d_inflight_) tokens.push_back(std::move(token));
            c2d_inflight_.clear();
            srv_->svc.blocking.post([self = shared_from_this(), device = principal_->device_id,
                                     tokens = std::move(tokens)] {
                for (const auto& token : tokens)
                    (void)self->srv_->svc.c2d.abandon(device, token, now());
            });
        }
        if (principal_ && will_ && !session_.graceful()) {
            // The will goes out as telemetry when a device vanishes without DISCONNECT.
            auto t = classify_publish(will_->topic, principal_->device_id, principal_->module_id);
            auto event = telemetry_event(will_->payload, parse_property_bag(t.bag));
            event.application_properties.emplace_back("iothub-MessageType", "Will");
            srv_->svc.telemetry.ingest(*principal_, std::move(event), [](result<void>) {});
        }
        spdlog::debug("{} {}: {} closed: {}", transport_->kind(), transport_->peer(),
                      principal_ ? principal_->key() : std::string("(not connected)"),
                      session_.close_reason());
        if (reading_) {
            transport_->abort();  // a read is pending; nothing more will be sent
        } else {
            asio::co_spawn(ex_, close_politely(shared_from_this()), asio::detached);
        }
        srv_->forget(this);
    }

    asio::awaitable<void> close_politely(std::shared_ptr<connection> self) {
        asio::steady_timer guard(ex_, std::chrono::seconds(2));
        guard.async_wait([self](error_code ec) {
            if (!ec) self->transport_->abort();
        });
        co_await transport_->shutdown();
        guard.cancel();
    }

    std::shared_ptr<server::impl> srv_;
    std::unique_ptr<transport> transport_;
    asio::any_io_executor ex_;
    session session_;
    asio::steady_timer timer_;
    asio::steady_timer resume_;
    std::string out_, sending_;
    bool writing_ = false, reading_ = false, finished_ = false;
    std::optional<device_auth::device_principal> principal_;
    std::shared_ptr<connections::connection_table::entry> entry_;
    std::optional<will_message> will_;
    std::string client_id_;
    bool clean_session_ = true;
    std::map<std::string, std::uint8_t> subscriptions_;
    bool subscriptions_changed_ = false;
    std::string model_id_;
    // QoS granted per device-side twin and method filter, -1 when not subscribed. The atomics are
    // read by other threads through device_channel.
    int twin_qos_ = -1;
    int c2d_qos_ = -1;
    std::map<std::uint16_t, std::string> c2d_inflight_;  // packet id -> lock token, QoS 1
    std::atomic<int> desired_qos_{-1};
    std::atomic<int> methods_qos_{-1};
    struct twin_op {
        topic_info topic;
        std::optional<std::string> patch;  // empty for GET
    };
    std::deque<twin_op> twin_queue_;
    std::shared_ptr<const storage::property_list> stamp_;          // who sent it, for every message
    std::vector<storage::event_record> received_;                  // telemetry of the current read
    std::vector<std::uint16_t> received_ids_;                      // its QoS 1 packet ids, in order
    std::size_t unstored_bytes_ = 0;                               // appended, not yet durable
    static constexpr std::size_t max_unstored_bytes = 512 * 1024;  // two maximum-size messages
};

}  // namespace

void server::impl::start(std::unique_ptr<transport> t, asio::any_io_executor ex) {
    auto c = std::make_shared<connection>(shared_from_this(), std::move(t), ex);
    {
        std::lock_guard lock(mutex);
        if (stopping) return;
        live.emplace(c.get(), c);
    }
    asio::co_spawn(
        ex, [c]() -> asio::awaitable<void> { co_await c->run(); }, asio::detached);
}

server::server(runtime::shard_set& shards, services svc, server_settings settings)
    : impl_(std::make_shared<impl>(shards, svc, settings)) {
    impl_->listeners = std::make_unique<net::stream_listeners>(
        shards, "mqtt", settings.tls_handshake_timeout,
        [weak = std::weak_ptr<impl>(impl_)](std::unique_ptr<transport> t,
                                            asio::any_io_executor ex) {
            if (auto self = weak.lock()) self->start(std::move(t), ex);
        });
}

server::~server() {
    begin_stop();
}

result<std::uint16_t> server::listen_tls(const std::string& address, std::uint16_t port,
                                         std::shared_ptr<asio::ssl::context> tls) {
    return impl_->listeners->listen(address, port, std::move(tls));
}

result<std::uint16_t> server::listen_plain(const std::string& address, std::uint16_t port) {
    return impl_->listeners->listen(address, port, nullptr);
}

void server::accept_websocket(beast::ssl_stream<beast::tcp_stream> stream,
                              beast::http::request<beast::http::string_body> request,
                              std::string subprotocol) {
    impl_->listeners->accept_websocket(std::move(stream), std::move(request),
                                       std::move(subprotocol));
}

void server::begin_stop() {
    std::vector<std::shared_ptr<connection>> conns;
    {
        std::lock_guard lock(impl_->mutex);
        if (impl_->stopping) return;
        impl_->stopping = true;
        for (auto& [raw, weak] : impl_->live)
            if (auto c = weak.lock()) conns.push_back(std::move(c));
    }
    impl_->listeners->close();
    for (auto& c : conns) c->kick("the hub is shutting down");
}

std::size_t server::active_connections() const {
    std::lock_guard lock(impl_->mutex);
    return impl_->live.size();
}

}  // namespace iothub::mqtt
