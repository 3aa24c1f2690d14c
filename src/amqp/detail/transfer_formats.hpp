// The message-format of each incoming transfer, which Qpid Proton 0.37 reads off the wire but
// does not expose. The hub must know it: a batched message (format 0x80013700, the C SDK's only
// form of telemetry) carries several messages in one delivery, and a format the hub does not
// understand must be refused rather than stored as opaque bytes.
//
// This watches the bytes on their way into the connection driver (plain AMQP frames, after TLS or
// WebSocket framing is removed; SASL frames are skipped), keeps the name of every link the peer
// sends on (from its ATTACH), and remembers, per link name and delivery tag, the formats that are
// not 0. Only a transfer's first bytes are looked at, so payloads cost nothing. Deliveries with
// format 0 (almost all) leave nothing behind.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>

namespace iothub::amqp::detail {

inline constexpr std::uint32_t standard_message_format = 0;
// A batch: the body's data sections each hold a whole encoded message (protocol.md 3.4).
inline constexpr std::uint32_t batched_message_format = 0x80013700;

class transfer_formats {
  public:
    // Reads the incoming byte stream, in whatever pieces it arrives. Call it with each piece
    // before the driver processes that piece.
    void feed(std::string_view bytes);

    // The message-format the delivery tagged `tag` on the link named `link` arrived with (0 when
    // it declared none), forgetting it.
    std::uint32_t take(std::string_view link, std::string_view tag);

    // Links and formats held, for tests.
    std::size_t links() const { return names_.size(); }
    std::size_t remembered() const { return formats_.size(); }

  private:
    void start_body();
    void end_frame();
    void on_performative(std::string_view prefix);

    enum class state : std::uint8_t { header, prefix, skip };
    state state_ = state::header;
    std::string buf_;            // the frame header or performative prefix being collected
    std::size_t want_ = 8;       // bytes buf_ needs in the current state
    std::size_t skip_ = 0;       // bytes to pass over (extended header or payload)
    std::size_t body_ = 0;       // the current frame's body size
    std::uint16_t channel_ = 0;  // the current frame's channel
    bool extended_ = false;      // skip_ is the extended header; the body follows
    bool lost_ = false;          // the stream stopped looking like AMQP frames
    // (channel << 32 | handle) -> link name, for links the peer sends on.
    std::unordered_map<std::uint64_t, std::string> names_;
    // link name + '\0' + delivery tag -> a format other than 0.
    std::unordered_map<std::string, std::uint32_t> formats_;
};

}  // namespace iothub::amqp::detail
