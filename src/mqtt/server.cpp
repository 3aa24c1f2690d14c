#include "mqtt/server.hpp"

#include "common/encoding.hpp"
#include "dps/errors.hpp"
#include "mqtt/topics.hpp"

#include <boost/json.hpp>
#include <spdlog/spdlog.h>

#include <map>

namespace iothub::mqtt {
namespace asio = boost::asio;

namespace {

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

// One MQTT connection: the MQTT session (packets, keep-alive, QoS 1 ordering) below, the device
// session (everything a device sees) above, and the mapping between Azure's topics and the
// session's calls in between.
class handler final : public net::protocol_handler,
                      public session_handler,
                      public core::device_port {
  public:
    handler(core::services& svc, std::shared_ptr<const server_settings> settings,
            net::connection_io& io)
        : svc_(svc),
          keep_settings_(std::move(settings)),
          settings_(*keep_settings_),
          io_(io),
          mqtt_(*this, settings_.limits, clock::now()),
          budget_(std::make_shared<core::telemetry_budget>(settings_.max_unstored_bytes)) {
        budget_->on_freed = [h = io.handle()] {
            if (auto c = h.lock()) c->wake();
        };
    }

    // net::protocol_handler ------------------------------------------------------------------
    void received(std::string_view bytes) override { mqtt_.receive(bytes, clock::now()); }
    void stream_ended(const std::string& reason) override { mqtt_.close(reason); }
    void stop(const std::string& reason) override { mqtt_.close(reason); }
    void take_output(std::string& out) override {
        auto& produced = mqtt_.output();
        if (produced.empty()) return;
        if (out.empty()) {
            out.swap(produced);  // no copy; the connection decides what capacity to keep
        } else {
            out.append(produced);
        }
        produced.clear();
    }
    // QoS 0 has no acknowledgement to hold a fast publisher back, so while too much of this
    // connection's telemetry awaits storage, TCP flow control does it.
    bool wants_read() const override {
        return !mqtt_.closed() && !mqtt_.reading_paused() && !budget_->spent();
    }
    bool finished() const override { return mqtt_.closed(); }
    clock::time_point deadline() const override {
        auto due = mqtt_.deadline();
        if (device_ && device_->is_open())
            if (auto e = device_->expiry()) due = std::min(due, steady_from(*e));
        return due;
    }
    void on_deadline() override {
        mqtt_.tick(clock::now());
        if (device_) device_->tick(now());
    }
    void closed() override {
        if (!device_) return;
        if (device_->is_open() && will_ && !mqtt_.graceful()) {
            // The will goes out as telemetry when a device vanishes without DISCONNECT.
            auto t = classify_publish(will_->topic, device_->principal().device_id,
                                      device_->principal().module_id);
            auto event = telemetry_event(will_->payload, parse_property_bag(t.bag));
            event.application_properties.emplace_back("iothub-MessageType", "Will");
            if (auto r = device_->admit(std::move(event), 0); !r)
                spdlog::warn("mqtt: the will of {} was not stored: {}", device_->principal().key(),
                             r.error().message());
        }
        spdlog::debug("{} {}: {} closed: {}", io_.stream().kind(), io_.stream().peer(),
                      device_->is_open() ? device_->principal().key() : "(not connected)",
                      mqtt_.close_reason());
        device_->close(mqtt_.close_reason());
    }

    // session_handler (the MQTT session) -------------------------------------------------------
    void on_connect(const connect_packet& c) override {
        if (auto dps = parse_dps_username(c.username.value_or(""))) return dps_connect(c, *dps);
        auto user = parse_username(c.username.value_or(""));
        if (!user)
            return mqtt_.refuse(
                connack_code::bad_username_or_password,
                "the username is not {host}/{deviceId}[/{moduleId}]/?api-version=...");
        const std::string expected =
            user->module_id.empty() ? user->device_id : user->device_id + "/" + user->module_id;
        if (c.client_id != expected)
            return mqtt_.refuse(
                connack_code::identifier_rejected,
                "client id '" + c.client_id + "' does not match the username's '" + expected + "'");
        if (c.will) {
            auto t = classify_publish(c.will->topic, user->device_id, user->module_id);
            if (t.what != topic_info::kind::telemetry || c.will->qos > 1)
                return mqtt_.refuse(connack_code::not_authorized,
                                    "a will message must go to the device's own telemetry topic");
            will_ = std::make_unique<will_message>(*c.will);
        }
        clean_ = c.clean_session;
        device_ = std::make_shared<core::device_session>(svc_, io_.executor(), *this, budget_);
        core::device_session::options o;
        o.model_id = user->model_id;
        o.record_key = "mqtt/session/" + c.client_id;
        o.clean = c.clean_session;
        device_->open(device_auth::device_credentials{user->device_id, user->module_id, c.password,
                                                      io_.stream().client_certificate()},
                      std::move(o));
    }

    void on_publish(publish_packet&& p) override {
        if (dps_) return dps_publish(std::move(p));
        const auto& who = device_->principal();
        auto t = classify_publish(p.topic, who.device_id, who.module_id);
        switch (t.what) {
            case topic_info::kind::telemetry: {
                auto event = telemetry_event(std::move(p.payload), parse_property_bag(t.bag));
                if (p.retain) event.application_properties.emplace_back("x-opt-retain", "true");
                if (auto ok = device_->admit(std::move(event), p.qos == 1 ? p.packet_id : 0); !ok)
                    return mqtt_.close("telemetry refused: " + ok.error().message());
                return;
            }
            case topic_info::kind::other_identity:
                return mqtt_.close("published to another identity's topic '" + p.topic + "'");
            case topic_info::kind::twin_get:
                return twin(core::twin_request::verb::get, std::move(t), {});
            case topic_info::kind::twin_patch_reported:
                return twin(core::twin_request::verb::patch_reported, std::move(t),
                            std::move(p.payload));
            case topic_info::kind::method_response:
                // A late or unknown answer is dropped, as Azure does; the device cannot tell.
                if (!device_->method_response(t.rid, t.status, p.payload))
                    spdlog::debug("{} {}: method answer for unknown request '{}' dropped",
                                  io_.stream().kind(), io_.stream().peer(), t.rid);
                return;
            case topic_info::kind::unknown:
                return mqtt_.close("published to an unknown topic '" + p.topic + "'");
        }
    }

    std::uint8_t on_subscribe(const subscription& s) override {
        if (dps_) {
            // The provisioning service's one filter, at most QoS 1 (as Azure grants).
            if (s.filter != dps_response_filter) return suback_failure;
            dps_qos_ = std::min<int>(s.qos, 1);
            return static_cast<std::uint8_t>(dps_qos_);
        }
        const auto& who = device_->principal();
        if (classify_filter(s.filter, who.device_id, who.module_id) == filter_kind::unknown)
            return suback_failure;
        subscriptions_[s.filter] = s.qos;
        subscriptions_updated(true);
        return s.qos;
    }

    void on_unsubscribe(const std::string& filter) override {
        if (subscriptions_.erase(filter) > 0) subscriptions_updated(true);
    }

    void on_delivered(std::uint16_t packet_id) override {
        auto it = c2d_inflight_.find(packet_id);
        if (it == c2d_inflight_.end()) return;  // a twin or method PUBLISH
        device_->settle_c2d(it->second, core::c2d_outcome::complete);
        c2d_inflight_.erase(it);
        device_->c2d_room_freed();
    }

    // core::device_port (the device session) ------------------------------------------------
    void opened(const result<opening>& r) override {
        if (mqtt_.closed()) return;
        if (!r) {
            // Azure answers a disabled device, and a connect over the hub's rate, with 3; so does
            // the hub when its storage cannot answer (cluster mode without a NATS quorum).
            const auto e = r.error().code();
            auto code = e == errc::device_disabled || e == errc::throttled ||
                                e == errc::service_unavailable || e == errc::server_error ||
                                e == errc::gateway_timeout
                            ? connack_code::server_unavailable
                            : connack_code::not_authorized;
            // A storm over the connect rate refuses thousands a second: one line each would bury
            // the log, so those are debug; the session layer logs a line a second with the count.
            spdlog::log(e == errc::throttled ? spdlog::level::debug : spdlog::level::info,
                        "{} {}: connection refused: {}", io_.stream().kind(), io_.stream().peer(),
                        r.error().message());
            mqtt_.refuse(code, r.error().message());
            return io_.wake();
        }
        if (r->record) restore(*r->record);
        subscriptions_updated(false);
        mqtt_.accept(r->record.has_value());
        spdlog::debug("{} {}: {} connected{}", io_.stream().kind(), io_.stream().peer(),
                      device_->principal().key(), r->record ? " (session restored)" : "");
        io_.wake();
    }

    void telemetry_stored(std::span<const std::uint64_t> tickets, const result<void>& r) override {
        if (!r) {
            mqtt_.close("the hub could not store the message: " + r.error().message());
        } else {
            for (auto t : tickets)  // QoS 1 packet ids; QoS 0 messages have none
                if (t) mqtt_.acknowledge(static_cast<std::uint16_t>(t));
        }
        io_.wake();
    }

    void twin_answered(std::uint64_t ticket, const twin::device_answer& answer) override {
        auto rid = twin_rids_.extract(ticket);
        if (rid.empty() || twin_qos_ < 0) return io_.wake();
        // The status travels in the topic (C and C# read it there); failures also carry
        // `errorCode` in the body, which is what Node's twin client looks for.
        std::string topic =
            "$iothub/twin/res/" + std::to_string(answer.status) + "/?$rid=" + rid.mapped();
        if (answer.version) topic += "&$version=" + std::to_string(*answer.version);
        mqtt_.publish(topic, answer.body, static_cast<std::uint8_t>(twin_qos_));
        io_.wake();
    }

    bool c2d_room() const override {
        return c2d_qos_ >= 0 && mqtt_.current() == session::state::connected &&
               c2d_inflight_.size() < settings_.c2d_window && mqtt_.can_publish();
    }

    void c2d_deliver(const c2d::delivery& d) override {
        const auto& device_id = device_->principal().device_id;
        auto id = mqtt_.publish(c2d_topic(device_id, *d.content), d.content->body,
                                static_cast<std::uint8_t>(c2d_qos_), d.delivery_count > 1);
        if (c2d_qos_ == 0)  // at most once: written is delivered
            device_->settle_c2d(d.lock_token, core::c2d_outcome::complete);
        else
            c2d_inflight_.emplace(id, d.lock_token);
        io_.wake();
    }

    void desired_update(const std::string& patch, std::uint64_t version) override {
        if (desired_qos_ < 0) return;
        mqtt_.publish("$iothub/twin/PATCH/properties/desired/?$version=" + std::to_string(version),
                      patch, static_cast<std::uint8_t>(desired_qos_));
        io_.wake();
    }

    void method_request(const std::string& name, const std::string& rid,
                        const std::string& payload) override {
        if (methods_qos_ < 0) return;
        // `$rid` last: the C and C# SDKs take everything after "?$rid=" as the id.
        mqtt_.publish("$iothub/methods/POST/" + name + "/?$rid=" + rid, payload,
                      static_cast<std::uint8_t>(methods_qos_));
        io_.wake();
    }

    void ended(const std::string& reason) override {
        mqtt_.close(reason);
        io_.wake();
    }

  private:
    // A provisioning client: no device session; its SAS is checked with each request it sends.
    void dps_connect(const connect_packet& c, const dps_username& user) {
        if (!svc_.provisioning)
            return mqtt_.refuse(connack_code::not_authorized,
                                "this hub does not serve the provisioning service");
        if (c.client_id != user.registration_id)
            return mqtt_.refuse(connack_code::identifier_rejected,
                                "client id '" + c.client_id +
                                    "' does not match the registration id '" +
                                    user.registration_id + "'");
        dps_ = std::make_unique<dps::registration_request>(
            dps::registration_request{user.id_scope,
                                      user.registration_id,
                                      c.password.value_or(""),
                                      io_.stream().client_certificate(),
                                      {}});
        spdlog::debug("{} {}: provisioning client {} connected", io_.stream().kind(),
                      io_.stream().peer(), user.registration_id);
        mqtt_.accept(false);
    }

    void dps_publish(publish_packet&& p) {
        auto t = classify_dps_publish(p.topic);
        if (t.what == dps_publish::kind::unknown)
            return mqtt_.close("published to an unknown topic '" + p.topic + "'");
        if (p.qos == 1) mqtt_.acknowledge(p.packet_id);
        auto request = *dps_;
        request.payload = dps::registration_payload(p.payload);
        auto* provisioning = svc_.provisioning;
        svc_.blocking.run(
            [provisioning, request = std::move(request), t]() {
                return t.what == dps_publish::kind::register_device
                           ? provisioning->register_device(request, now())
                           : provisioning->operation_status(request, t.operation_id, now());
            },
            io_.executor(),
            [this, h = io_.handle(), rid = t.rid](result<boost::json::object> r) {
                auto c = h.lock();
                if (!c || mqtt_.closed() || dps_qos_ < 0) return;
                // The status travels in the topic: 202 while assigning (poll after retry-after
                // seconds), 200 with the outcome, or the failure's own.
                int status = 200;
                std::string body;
                if (!r) {
                    status = r.error().descriptor().http_status;
                    body = boost::json::serialize(dps::error_body(r.error()));
                } else {
                    if (r->at("status") == "assigning") status = 202;
                    body = boost::json::serialize(*r);
                }
                std::string topic =
                    "$dps/registrations/res/" + std::to_string(status) + "/?$rid=" + rid;
                if (status == 202)
                    topic += "&retry-after=" + std::to_string(dps::poll_after_seconds);
                mqtt_.publish(topic, body, static_cast<std::uint8_t>(dps_qos_));
                io_.wake();
            });
    }

    void twin(core::twin_request::verb verb, topic_info t, std::string patch) {
        const auto ticket = next_ticket_++;
        twin_rids_.emplace(ticket, std::move(t.rid));
        device_->twin({verb, std::move(patch), t.version, ticket});
    }

    // What the device listens to follows its subscriptions, at the QoS granted for each (-1: not
    // subscribed); a persistent session records them.
    void subscriptions_updated(bool changed) {
        int twin = -1, desired = -1, methods = -1, c2d = -1;
        const auto& who = device_->principal();
        for (const auto& [f, q] : subscriptions_) {
            switch (classify_filter(f, who.device_id, who.module_id)) {
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
        desired_qos_ = desired;
        methods_qos_ = methods;
        c2d_qos_ = c2d;
        device_->listen_desired(desired >= 0);
        device_->listen_methods(methods >= 0);
        device_->listen_c2d(c2d >= 0);
        if (changed && !clean_) {
            boost::json::array a;
            for (const auto& [f, q] : subscriptions_)
                a.push_back(boost::json::object{{"f", f}, {"q", q}});
            device_->save_record(boost::json::serialize(a));
        }
    }

    void restore(const std::string& record) {
        boost::system::error_code ec;
        auto v = boost::json::parse(record, ec);
        if (ec || !v.is_array()) return;
        const auto& who = device_->principal();
        for (const auto& s : v.get_array()) {
            const auto* o = s.if_object();
            if (!o || !o->contains("f") || !o->at("f").is_string()) continue;
            std::string filter(o->at("f").get_string());
            const auto* q = o->if_contains("q");
            if (classify_filter(filter, who.device_id, who.module_id) != filter_kind::unknown)
                subscriptions_[filter] =
                    static_cast<std::uint8_t>(q && q->is_int64() && q->as_int64() == 1 ? 1 : 0);
        }
    }

    core::services& svc_;
    std::shared_ptr<const server_settings> keep_settings_;  // a connection may outlive the server
    const server_settings& settings_;
    net::connection_io& io_;
    mqtt::session mqtt_;
    std::shared_ptr<core::telemetry_budget> budget_;
    std::shared_ptr<core::device_session> device_;
    // Held apart: few devices have a will, and only provisioning clients a registration, so a
    // connection does not carry their room inline.
    std::unique_ptr<will_message> will_;
    bool clean_ = true;
    // A provisioning client's registration (its scope, id and SAS), and the QoS of its one
    // subscription (-1: none yet).
    std::unique_ptr<dps::registration_request> dps_;
    int dps_qos_ = -1;
    std::map<std::string, std::uint8_t> subscriptions_;
    int twin_qos_ = -1, desired_qos_ = -1, methods_qos_ = -1, c2d_qos_ = -1;
    std::map<std::uint16_t, std::string> c2d_inflight_;  // packet id -> lock token, QoS 1
    std::map<std::uint64_t, std::string> twin_rids_;     // twin request ticket -> $rid
    std::uint64_t next_ticket_ = 1;
};

}  // namespace

server::server(runtime::shard_set& shards, core::services& svc, server_settings settings)
    : net::device_server(
          shards, "mqtt", settings.tls_handshake_timeout,
          [&svc, shared = std::make_shared<const server_settings>(std::move(settings))](
              net::connection_io& io) { return std::make_unique<handler>(svc, shared, io); }) {}

}  // namespace iothub::mqtt
