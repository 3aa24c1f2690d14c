#include "mqtt/session.hpp"

namespace iothub::mqtt {

session::session(session_handler& handler, session_limits limits, clock::time_point now)
    : handler_(handler),
      limits_(limits),
      decoder_(limits.max_packet_size),
      opened_(now),
      last_received_(now) {}

bool session::reading_paused() const {
    return state_ == state::authenticating || state_ == state::closed ||
           inbound_.size() >= limits_.max_unacknowledged;
}

void session::receive(std::string_view bytes, clock::time_point now) {
    if (state_ == state::closed) return;
    last_received_ = now;
    decoder_.lend(bytes);
    // A connection must open with CONNECT (0x10): anything else is refused from its first byte
    // instead of waiting for a packet length that may never arrive (an HTTP probe, say).
    if (state_ == state::awaiting_connect && decoder_.peek() && *decoder_.peek() != 0x10)
        return close("the first packet was not CONNECT");
    // Stop decoding while paused: the bytes wait in the decoder until accept() or acknowledge().
    while (!reading_paused()) {
        auto r = decoder_.next();
        if (std::holds_alternative<std::monostate>(r)) break;
        if (auto* e = std::get_if<decode_error>(&r)) {
            close("malformed packet: " + e->reason);
            return;
        }
        dispatch(std::move(std::get<packet>(r)));
    }
    decoder_.keep();  // `bytes` are the caller's only during this call
}

void session::dispatch(packet&& p) {
    if (state_ == state::awaiting_connect) {
        auto* c = std::get_if<connect_packet>(&p);
        if (!c) return close("the first packet was not CONNECT");
        if (c->protocol_name != "MQTT" || c->protocol_level != 4)
            return refuse(connack_code::unacceptable_protocol_version,
                          "protocol " + c->protocol_name + " level " +
                              std::to_string(c->protocol_level) +
                              " (only MQTT 3.1.1 is supported)");
        if (c->client_id.empty())
            return refuse(connack_code::identifier_rejected, "empty client identifier");
        keep_alive_ = c->keep_alive;
        state_ = state::authenticating;
        handler_.on_connect(*c);
        return;
    }
    std::visit(
        [&](auto& v) {
            using T = std::decay_t<decltype(v)>;
            if constexpr (std::is_same_v<T, publish_packet>) {
                if (v.qos > 1) return close("QoS 2 is not supported");
                if (v.qos == 1) inbound_.push_back({v.packet_id, false});
                handler_.on_publish(std::move(v));
            } else if constexpr (std::is_same_v<T, puback_packet>) {
                if (outbound_.erase(v.packet_id) == 0) return;  // duplicate or stale: harmless
                handler_.on_delivered(v.packet_id);
            } else if constexpr (std::is_same_v<T, subscribe_packet>) {
                suback_packet ack{v.packet_id, {}};
                for (auto& s : v.subscriptions) {
                    s.qos = std::min<std::uint8_t>(s.qos, 1);
                    ack.return_codes.push_back(handler_.on_subscribe(s));
                    if (state_ == state::closed) return;
                }
                encode(ack, out_);
            } else if constexpr (std::is_same_v<T, unsubscribe_packet>) {
                for (const auto& f : v.filters) handler_.on_unsubscribe(f);
                encode(unsuback_packet{v.packet_id}, out_);
            } else if constexpr (std::is_same_v<T, pingreq_packet>) {
                encode(pingresp_packet{}, out_);
            } else if constexpr (std::is_same_v<T, disconnect_packet>) {
                graceful_ = true;
                close("client disconnected");
            } else if constexpr (std::is_same_v<T, connect_packet>) {
                close("a second CONNECT");
            } else if constexpr (std::is_same_v<T, qos2_packet>) {
                close("QoS 2 is not supported");
            } else {
                close("a packet only a server sends");
            }
        },
        p);
}

void session::accept(bool session_present) {
    if (state_ != state::authenticating) return;
    state_ = state::connected;
    encode(connack_packet{session_present, connack_code::accepted}, out_);
    receive({}, last_received_);  // decode what the client pipelined behind its CONNECT
}

void session::refuse(connack_code code, std::string reason) {
    if (state_ == state::closed) return;
    encode(connack_packet{false, code}, out_);
    close("connection refused: " + reason);
}

void session::acknowledge(std::uint16_t packet_id) {
    if (state_ == state::closed) return;
    for (auto& a : inbound_) {
        if (a.packet_id == packet_id && !a.done) {
            a.done = true;
            break;
        }
    }
    const bool was_paused = reading_paused();
    flush_acks();
    if (was_paused && !reading_paused()) receive({}, last_received_);
}

void session::flush_acks() {
    while (!inbound_.empty() && inbound_.front().done) {
        encode(puback_packet{inbound_.front().packet_id}, out_);
        inbound_.pop_front();
    }
}

std::uint16_t session::publish(std::string_view topic, std::string_view payload, std::uint8_t qos,
                               bool dup) {
    if (state_ != state::connected) return 0;
    std::uint16_t id = 0;
    if (qos > 0) {
        do {
            id = next_packet_id_++;
            if (next_packet_id_ == 0) next_packet_id_ = 1;
        } while (id == 0 || outbound_.contains(id));
        outbound_.insert(id);
    }
    publish_packet p{std::string(topic),
                     std::string(payload),
                     static_cast<std::uint8_t>(qos > 0 ? 1 : 0),
                     false,
                     dup && qos > 0,
                     id};
    encode(p, out_);
    return id;
}

void session::close(std::string reason) {
    if (state_ == state::closed) return;
    state_ = state::closed;
    close_reason_ = std::move(reason);
}

clock::time_point session::deadline() const {
    if (state_ == state::awaiting_connect) return opened_ + limits_.connect_timeout;
    if (keep_alive_ == 0 || state_ != state::connected) return clock::time_point::max();
    auto ka = std::chrono::milliseconds(std::min(keep_alive_, limits_.max_keep_alive) * 1500);
    return last_received_ + ka;
}

void session::tick(clock::time_point now) {
    if (state_ == state::closed) return;
    if (now < deadline()) return;
    close(state_ == state::awaiting_connect ? "no CONNECT within the connect timeout"
                                            : "keep-alive expired");
}

}  // namespace iothub::mqtt
