// MQTT 3.1.1 packets and their byte encoding, with no I/O: bytes go into a decoder and packets
// come out; packets go into encode() and bytes come out. Anything malformed is a decode error
// naming the rule it broke, after which the connection must be closed (MQTT 3.1.1 section 4.8).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace iothub::mqtt {

struct will_message {
    std::string topic;
    std::string payload;
    std::uint8_t qos = 0;
    bool retain = false;
};

struct connect_packet {
    std::string protocol_name;  // "MQTT" for 3.1.1
    std::uint8_t protocol_level = 4;
    bool clean_session = true;
    std::uint16_t keep_alive = 0;  // seconds; 0 = no keep-alive
    std::string client_id;
    std::optional<std::string> username;
    std::optional<std::string> password;  // binary data in MQTT; a SAS token for Azure
    std::optional<will_message> will;
};

enum class connack_code : std::uint8_t {
    accepted = 0,
    unacceptable_protocol_version = 1,
    identifier_rejected = 2,
    server_unavailable = 3,
    bad_username_or_password = 4,
    not_authorized = 5,
};

struct connack_packet {
    bool session_present = false;
    connack_code code = connack_code::accepted;
};

struct publish_packet {
    std::string topic;
    std::string payload;
    std::uint8_t qos = 0;
    bool retain = false;
    bool dup = false;
    std::uint16_t packet_id = 0;  // QoS 1 and 2 only
};

struct puback_packet {
    std::uint16_t packet_id = 0;
};

struct subscription {
    std::string filter;
    std::uint8_t qos = 0;
};

struct subscribe_packet {
    std::uint16_t packet_id = 0;
    std::vector<subscription> subscriptions;
};

inline constexpr std::uint8_t suback_failure = 0x80;

struct suback_packet {
    std::uint16_t packet_id = 0;
    std::vector<std::uint8_t> return_codes;  // granted QoS, or suback_failure
};

struct unsubscribe_packet {
    std::uint16_t packet_id = 0;
    std::vector<std::string> filters;
};

struct unsuback_packet {
    std::uint16_t packet_id = 0;
};

struct pingreq_packet {};
struct pingresp_packet {};
struct disconnect_packet {};

// What a server receives. QoS 2 flow packets (PUBREC/PUBREL/PUBCOMP) are decoded so the server can
// refuse them explicitly; IoT Hub supports QoS 0 and 1 only.
struct qos2_packet {
    std::uint8_t type = 0;
    std::uint16_t packet_id = 0;
};

using packet = std::variant<connect_packet, connack_packet, publish_packet, puback_packet,
                            subscribe_packet, suback_packet, unsubscribe_packet, unsuback_packet,
                            pingreq_packet, pingresp_packet, disconnect_packet, qos2_packet>;

struct decode_error {
    std::string reason;
};

// Incremental decoder. feed() appends bytes; next() returns the next complete packet, nothing if
// more bytes are needed, or an error. The remaining-length of a packet is checked against
// `max_packet_size` as soon as its fixed header is complete, before its body is buffered.
// Splits a byte stream into packets. Bytes lent while nothing is buffered are decoded where they
// lie: a read holding one whole packet (the usual case below saturation) is never copied, and
// only what follows the first packet of a read, or an incomplete tail, is kept. A connection
// between packets holds no buffer at all.
class decoder {
  public:
    explicit decoder(std::size_t max_packet_size) : max_packet_size_(max_packet_size) {}

    // Copies `bytes`.
    void feed(std::string_view bytes);
    // Decodes `bytes` in place: they must stay valid until the next call of next() or keep().
    void lend(std::string_view bytes);
    std::variant<std::monostate, packet, decode_error> next();
    // Copies what was fed and not decoded yet, for a caller that stops calling next() before it
    // runs out (a paused session).
    void keep();
    std::size_t buffered() const { return pending().size(); }
    // The first byte not yet decoded, if any.
    std::optional<std::uint8_t> peek() const {
        auto in = pending();
        if (in.empty()) return std::nullopt;
        return static_cast<std::uint8_t>(in.front());
    }

  private:
    std::string_view pending() const {
        return borrowed_.data() ? borrowed_ : std::string_view(buffer_).substr(consumed_);
    }

    std::string buffer_;         // what is kept: used only when borrowed_ is empty
    std::size_t consumed_ = 0;   // of buffer_
    std::string_view borrowed_;  // the caller's bytes, not yet decoded
    std::size_t max_packet_size_;
};

// Appends the encoding of `p` to `out`.
void encode(const packet& p, std::string& out);
std::string encode(const packet& p);

// MQTT strings are well-formed UTF-8 without U+0000 (MQTT-1.5.3-1, -2).
bool valid_mqtt_utf8(std::string_view s);

}  // namespace iothub::mqtt
