#include "mqtt/codec.hpp"

namespace iothub::mqtt {
namespace {

enum type : std::uint8_t {
    t_connect = 1,
    t_connack = 2,
    t_publish = 3,
    t_puback = 4,
    t_pubrec = 5,
    t_pubrel = 6,
    t_pubcomp = 7,
    t_subscribe = 8,
    t_suback = 9,
    t_unsubscribe = 10,
    t_unsuback = 11,
    t_pingreq = 12,
    t_pingresp = 13,
    t_disconnect = 14,
};

// Reads fields from one packet body; any overrun marks the reader failed.
class reader {
  public:
    explicit reader(std::string_view body) : rest_(body) {}
    bool failed() const { return failed_; }
    bool done() const { return rest_.empty(); }
    std::size_t remaining() const { return rest_.size(); }

    std::uint8_t byte() {
        if (rest_.empty()) return fail(), 0;
        auto b = static_cast<std::uint8_t>(rest_.front());
        rest_.remove_prefix(1);
        return b;
    }
    std::uint16_t u16() {
        std::uint16_t hi = byte(), lo = byte();
        return static_cast<std::uint16_t>((hi << 8) | lo);
    }
    std::string_view binary() {
        std::uint16_t n = u16();
        if (failed_ || n > rest_.size()) return fail(), std::string_view{};
        auto out = rest_.substr(0, n);
        rest_.remove_prefix(n);
        return out;
    }
    std::string_view tail() {
        auto out = rest_;
        rest_ = {};
        return out;
    }

  private:
    void fail() { failed_ = true; }
    std::string_view rest_;
    bool failed_ = false;
};

void put_u16(std::string& out, std::uint16_t v) {
    out += static_cast<char>(v >> 8);
    out += static_cast<char>(v & 0xff);
}

void put_string(std::string& out, std::string_view s) {
    put_u16(out, static_cast<std::uint16_t>(s.size()));
    out.append(s);
}

void put_header(std::string& out, std::uint8_t first, std::size_t remaining) {
    out += static_cast<char>(first);
    do {
        auto digit = static_cast<std::uint8_t>(remaining % 128);
        remaining /= 128;
        if (remaining > 0) digit |= 0x80;
        out += static_cast<char>(digit);
    } while (remaining > 0);
}

using decoded = std::variant<std::monostate, packet, decode_error>;

decoded error(std::string reason) {
    return decode_error{std::move(reason)};
}

decoded decode_connect(std::uint8_t flags, std::string_view body) {
    if (flags != 0) return error("CONNECT fixed-header flags must be 0");
    reader r(body);
    connect_packet c;
    c.protocol_name = std::string(r.binary());
    c.protocol_level = r.byte();
    std::uint8_t cf = r.byte();
    c.keep_alive = r.u16();
    if (r.failed()) return error("truncated CONNECT variable header");
    if (c.protocol_name != "MQTT" && c.protocol_name != "MQIsdp")
        return error("unknown protocol name '" + c.protocol_name + "'");
    if (cf & 0x01) return error("CONNECT reserved flag is set");
    c.clean_session = cf & 0x02;
    const bool will = cf & 0x04;
    const std::uint8_t will_qos = (cf >> 3) & 0x03;
    const bool will_retain = cf & 0x20;
    const bool has_password = cf & 0x40;
    const bool has_username = cf & 0x80;
    if (!will && (will_qos != 0 || will_retain)) return error("will QoS/retain set without a will");
    if (will_qos == 3) return error("will QoS 3 is invalid");
    if (has_password && !has_username && c.protocol_level == 4)
        return error("password without username");
    c.client_id = std::string(r.binary());
    if (will) {
        will_message w;
        w.topic = std::string(r.binary());
        w.payload = std::string(r.binary());
        w.qos = will_qos;
        w.retain = will_retain;
        c.will = std::move(w);
    }
    if (has_username) c.username = std::string(r.binary());
    if (has_password) c.password = std::string(r.binary());
    if (r.failed()) return error("truncated CONNECT payload");
    if (!r.done()) return error("extra bytes after the CONNECT payload");
    if (!valid_mqtt_utf8(c.client_id) || (c.username && !valid_mqtt_utf8(*c.username)) ||
        (c.will && !valid_mqtt_utf8(c.will->topic)))
        return error("CONNECT contains a string that is not valid UTF-8");
    return packet{std::move(c)};
}

decoded decode_publish(std::uint8_t flags, std::string_view body) {
    publish_packet p;
    p.dup = flags & 0x08;
    p.qos = (flags >> 1) & 0x03;
    p.retain = flags & 0x01;
    if (p.qos == 3) return error("PUBLISH QoS 3 is invalid");
    if (p.qos == 0 && p.dup) return error("PUBLISH DUP set on QoS 0");
    reader r(body);
    p.topic = std::string(r.binary());
    if (p.qos > 0) p.packet_id = r.u16();
    if (r.failed()) return error("truncated PUBLISH");
    if (p.qos > 0 && p.packet_id == 0) return error("PUBLISH packet identifier 0");
    if (p.topic.empty()) return error("PUBLISH with an empty topic");
    if (!valid_mqtt_utf8(p.topic)) return error("PUBLISH topic is not valid UTF-8");
    p.payload = std::string(r.tail());
    return packet{std::move(p)};
}

decoded decode_id_only(std::uint8_t type, std::uint8_t flags, std::string_view body) {
    const std::uint8_t want = type == t_pubrel ? 0x02 : 0x00;
    if (flags != want) return error("invalid fixed-header flags");
    reader r(body);
    auto id = r.u16();
    if (r.failed() || !r.done()) return error("malformed acknowledgement");
    switch (type) {
        case t_puback:
            return packet{puback_packet{id}};
        case t_unsuback:
            return packet{unsuback_packet{id}};
        default:
            return packet{qos2_packet{type, id}};
    }
}

decoded decode_subscribe(std::uint8_t flags, std::string_view body) {
    if (flags != 0x02) return error("SUBSCRIBE fixed-header flags must be 0010");
    reader r(body);
    subscribe_packet s;
    s.packet_id = r.u16();
    if (r.failed() || s.packet_id == 0) return error("SUBSCRIBE without a packet identifier");
    while (!r.done()) {
        subscription sub;
        sub.filter = std::string(r.binary());
        std::uint8_t options = r.byte();
        if (r.failed()) return error("truncated SUBSCRIBE");
        if (options & 0xfc) return error("SUBSCRIBE reserved bits set");
        sub.qos = options & 0x03;
        if (sub.qos == 3) return error("SUBSCRIBE QoS 3 is invalid");
        if (sub.filter.empty() || !valid_mqtt_utf8(sub.filter))
            return error("SUBSCRIBE topic filter is empty or not valid UTF-8");
        s.subscriptions.push_back(std::move(sub));
    }
    if (s.subscriptions.empty()) return error("SUBSCRIBE without topic filters");
    return packet{std::move(s)};
}

decoded decode_unsubscribe(std::uint8_t flags, std::string_view body) {
    if (flags != 0x02) return error("UNSUBSCRIBE fixed-header flags must be 0010");
    reader r(body);
    unsubscribe_packet u;
    u.packet_id = r.u16();
    if (r.failed() || u.packet_id == 0) return error("UNSUBSCRIBE without a packet identifier");
    while (!r.done()) {
        auto f = r.binary();
        if (r.failed()) return error("truncated UNSUBSCRIBE");
        if (f.empty() || !valid_mqtt_utf8(f)) return error("UNSUBSCRIBE filter empty or not UTF-8");
        u.filters.emplace_back(f);
    }
    if (u.filters.empty()) return error("UNSUBSCRIBE without topic filters");
    return packet{std::move(u)};
}

decoded decode_connack(std::uint8_t flags, std::string_view body) {
    reader r(body);
    auto ack = r.byte();
    auto code = r.byte();
    if (flags != 0 || r.failed() || !r.done() || (ack & 0xfe) || code > 5)
        return error("malformed CONNACK");
    return packet{connack_packet{(ack & 1) != 0, static_cast<connack_code>(code)}};
}

decoded decode_suback(std::uint8_t flags, std::string_view body) {
    reader r(body);
    suback_packet s;
    s.packet_id = r.u16();
    while (!r.failed() && !r.done()) s.return_codes.push_back(r.byte());
    if (flags != 0 || r.failed()) return error("malformed SUBACK");
    return packet{std::move(s)};
}

decoded decode_body(std::uint8_t first, std::string_view body) {
    const std::uint8_t type = first >> 4, flags = first & 0x0f;
    switch (type) {
        case t_connect:
            return decode_connect(flags, body);
        case t_connack:
            return decode_connack(flags, body);
        case t_publish:
            return decode_publish(flags, body);
        case t_puback:
        case t_pubrec:
        case t_pubrel:
        case t_pubcomp:
        case t_unsuback:
            return decode_id_only(type, flags, body);
        case t_subscribe:
            return decode_subscribe(flags, body);
        case t_suback:
            return decode_suback(flags, body);
        case t_unsubscribe:
            return decode_unsubscribe(flags, body);
        case t_pingreq:
        case t_pingresp:
        case t_disconnect:
            if (flags != 0 || !body.empty()) return error("malformed PINGREQ/PINGRESP/DISCONNECT");
            if (type == t_pingreq) return packet{pingreq_packet{}};
            if (type == t_pingresp) return packet{pingresp_packet{}};
            return packet{disconnect_packet{}};
        default:
            return error("unknown packet type " + std::to_string(type));
    }
}

}  // namespace

bool valid_mqtt_utf8(std::string_view s) {
    std::size_t i = 0;
    while (i < s.size()) {
        auto c = static_cast<unsigned char>(s[i]);
        if (c == 0) return false;
        if (c < 0x80) {
            ++i;
            continue;
        }
        int len;
        std::uint32_t cp;
        if ((c & 0xe0) == 0xc0) {
            len = 2;
            cp = c & 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            len = 3;
            cp = c & 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            len = 4;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (i + static_cast<std::size_t>(len) > s.size()) return false;
        for (int k = 1; k < len; ++k) {
            auto cc = static_cast<unsigned char>(s[i + static_cast<std::size_t>(k)]);
            if ((cc & 0xc0) != 0x80) return false;
            cp = (cp << 6) | (cc & 0x3f);
        }
        // Overlong forms, surrogates and values beyond Unicode are ill-formed.
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
            (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
            return false;
        i += static_cast<std::size_t>(len);
    }
    return true;
}

void decoder::feed(std::string_view bytes) {
    if (bytes.empty()) return;
    keep();
    if (consumed_ > 0) {
        buffer_.erase(0, consumed_);
        consumed_ = 0;
    }
    buffer_.append(bytes);
}

void decoder::lend(std::string_view bytes) {
    if (bytes.empty()) return;
    keep();
    if (consumed_ == buffer_.size()) {
        borrowed_ = bytes;
        return;
    }
    feed(bytes);
}

void decoder::keep() {
    if (!borrowed_.data()) return;
    buffer_.assign(borrowed_);
    consumed_ = 0;
    borrowed_ = {};
}

std::variant<std::monostate, packet, decode_error> decoder::next() {
    const std::string_view in = pending();
    std::size_t remaining = 0, multiplier = 1, pos = 1;
    bool whole = in.size() >= 2;
    while (whole) {
        if (pos >= in.size()) {
            whole = false;
            break;
        }
        auto digit = static_cast<std::uint8_t>(in[pos++]);
        remaining += (digit & 0x7f) * multiplier;
        if (!(digit & 0x80)) break;
        multiplier *= 128;
        if (pos > 4) return decode_error{"remaining length longer than four bytes"};
    }
    if (whole && remaining > max_packet_size_)
        return decode_error{"packet of " + std::to_string(remaining) +
                            " bytes exceeds the limit of " + std::to_string(max_packet_size_)};
    if (!whole || in.size() < pos + remaining) {
        // Out of whole packets: the tail is kept, and a drained buffer is given back.
        keep();
        if (consumed_ == buffer_.size()) {
            std::string().swap(buffer_);
            consumed_ = 0;
        }
        return std::monostate{};
    }
    const auto first = static_cast<std::uint8_t>(in[0]);
    const auto body = in.substr(pos, remaining);
    if (borrowed_.data()) {
        // The rest is copied now: a caller may let its bytes go once it has a packet.
        borrowed_.remove_prefix(pos + remaining);
        if (borrowed_.empty())
            borrowed_ = {};
        else
            keep();
    } else {
        consumed_ += pos + remaining;
    }
    return decode_body(first, body);
}

void encode(const packet& p, std::string& out) {
    std::visit(
        [&](const auto& v) {
            using T = std::decay_t<decltype(v)>;
            if constexpr (std::is_same_v<T, connect_packet>) {
                std::size_t n = 2 + v.protocol_name.size() + 4 + 2 + v.client_id.size();
                std::uint8_t flags = v.clean_session ? 0x02 : 0;
                if (v.will) {
                    flags |= 0x04 | static_cast<std::uint8_t>(v.will->qos << 3) |
                             (v.will->retain ? 0x20 : 0);
                    n += 4 + v.will->topic.size() + v.will->payload.size();
                }
                if (v.username) {
                    flags |= 0x80;
                    n += 2 + v.username->size();
                }
                if (v.password) {
                    flags |= 0x40;
                    n += 2 + v.password->size();
                }
                put_header(out, t_connect << 4, n);
                put_string(out, v.protocol_name);
                out += static_cast<char>(v.protocol_level);
                out += static_cast<char>(flags);
                put_u16(out, v.keep_alive);
                put_string(out, v.client_id);
                if (v.will) {
                    put_string(out, v.will->topic);
                    put_string(out, v.will->payload);
                }
                if (v.username) put_string(out, *v.username);
                if (v.password) put_string(out, *v.password);
            } else if constexpr (std::is_same_v<T, connack_packet>) {
                put_header(out, t_connack << 4, 2);
                out += static_cast<char>(v.session_present ? 1 : 0);
                out += static_cast<char>(v.code);
            } else if constexpr (std::is_same_v<T, publish_packet>) {
                std::uint8_t first = static_cast<std::uint8_t>(t_publish << 4) |
                                     static_cast<std::uint8_t>(v.qos << 1) | (v.retain ? 1 : 0) |
                                     (v.dup ? 0x08 : 0);
                put_header(out, first, 2 + v.topic.size() + (v.qos ? 2 : 0) + v.payload.size());
                put_string(out, v.topic);
                if (v.qos) put_u16(out, v.packet_id);
                out.append(v.payload);
            } else if constexpr (std::is_same_v<T, puback_packet>) {
                put_header(out, t_puback << 4, 2);
                put_u16(out, v.packet_id);
            } else if constexpr (std::is_same_v<T, subscribe_packet>) {
                std::size_t n = 2;
                for (const auto& s : v.subscriptions) n += 3 + s.filter.size();
                put_header(out, (t_subscribe << 4) | 0x02, n);
                put_u16(out, v.packet_id);
                for (const auto& s : v.subscriptions) {
                    put_string(out, s.filter);
                    out += static_cast<char>(s.qos);
                }
            } else if constexpr (std::is_same_v<T, suback_packet>) {
                put_header(out, t_suback << 4, 2 + v.return_codes.size());
                put_u16(out, v.packet_id);
                for (auto c : v.return_codes) out += static_cast<char>(c);
            } else if constexpr (std::is_same_v<T, unsubscribe_packet>) {
                std::size_t n = 2;
                for (const auto& f : v.filters) n += 2 + f.size();
                put_header(out, (t_unsubscribe << 4) | 0x02, n);
                put_u16(out, v.packet_id);
                for (const auto& f : v.filters) put_string(out, f);
            } else if constexpr (std::is_same_v<T, unsuback_packet>) {
                put_header(out, t_unsuback << 4, 2);
                put_u16(out, v.packet_id);
            } else if constexpr (std::is_same_v<T, pingreq_packet>) {
                put_header(out, t_pingreq << 4, 0);
            } else if constexpr (std::is_same_v<T, pingresp_packet>) {
                put_header(out, t_pingresp << 4, 0);
            } else if constexpr (std::is_same_v<T, disconnect_packet>) {
                put_header(out, t_disconnect << 4, 0);
            } else if constexpr (std::is_same_v<T, qos2_packet>) {
                put_header(
                    out, static_cast<std::uint8_t>(v.type << 4) | (v.type == t_pubrel ? 2 : 0), 2);
                put_u16(out, v.packet_id);
            }
        },
        p);
}

std::string encode(const packet& p) {
    std::string out;
    encode(p, out);
    return out;
}

}  // namespace iothub::mqtt
