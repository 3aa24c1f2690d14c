// WebSocket framing (RFC 6455, server side) over another stream, in the readiness model of
// stream.hpp: a read decodes frames in place in the caller's buffer (unmasking the payload and
// closing the gaps the headers leave), so an idle WebSocket connection holds no buffer of its own;
// a write frames what it is given and keeps it only until the stream below has taken it.
#include "common/crypto.hpp"
#include "common/encoding.hpp"
#include "net/stream.hpp"

#include <array>
#include <cstring>

namespace iothub::net {
namespace {

enum opcode : std::uint8_t {
    continuation = 0x0,
    text = 0x1,
    binary = 0x2,
    close_frame = 0x8,
    ping = 0x9,
    pong = 0xA,
};

// One frame's header as a server sends it (never masked).
std::string frame_header(std::uint8_t op, std::uint64_t length) {
    std::string h;
    h.push_back(static_cast<char>(0x80 | op));
    if (length < 126) {
        h.push_back(static_cast<char>(length));
    } else if (length <= 0xFFFF) {
        h.push_back(static_cast<char>(126));
        h.push_back(static_cast<char>(length >> 8));
        h.push_back(static_cast<char>(length));
    } else {
        h.push_back(static_cast<char>(127));
        for (int i = 7; i >= 0; --i) h.push_back(static_cast<char>(length >> (8 * i)));
    }
    return h;
}

class websocket_stream final : public stream {
  public:
    websocket_stream(std::unique_ptr<stream> inner, std::string early, std::string_view kind)
        : inner_(std::move(inner)), early_(std::move(early)), kind_(kind) {}
    ~websocket_stream() override { close(); }

    io_result read_some(std::span<char> into) override {
        for (;;) {
            if (closed_) return {io_result::status::closed, 0, {}};
            if (failed_) return io_result::failure(failure_);
            std::size_t n = 0;
            if (!early_.empty()) {
                n = std::min(into.size(), early_.size());
                std::memcpy(into.data(), early_.data(), n);
                early_.erase(0, n);
                if (early_.empty()) std::string().swap(early_);
            } else {
                auto r = inner_->read_some(into);
                if (r.what != io_result::status::done) return r;
                n = r.bytes;
            }
            const std::size_t data = decode(into.first(n));
            if (failed_) {
                close();
                return io_result::failure(failure_);
            }
            if (data > 0) return io_result::done(data);
            // Only headers or control frames: the peer's close ends the stream, else read on.
        }
    }

    io_result write_some(std::span<const char> from) override {
        if (failed_) return io_result::failure(failure_);
        // Nothing follows a close frame (RFC 6455 5.5.1).
        if (closing_ || close_sent_) return io_result::failure("the WebSocket is closed");
        if (framed_ == 0) {
            // Control frames a read queued (a pong) go first.
            if (auto r = flush(); r.what != io_result::status::done) return r;
            if (from.empty()) return io_result::done(0);
            // A frame of at most 64 KiB per call: the caller offers the rest again.
            framed_ = std::min<std::size_t>(from.size(), 64 * 1024);
            out_ = frame_header(binary, framed_);
            out_.append(from.data(), framed_);
        }
        // After want_write the caller offers the same bytes again (they start with the frame's
        // payload, already framed here), as OpenSSL asks of its callers.
        if (auto r = flush(); r.what != io_result::status::done) return r;
        return io_result::done(std::exchange(framed_, 0));
    }

    bool has_buffered_input() const override {
        return !early_.empty() || inner_->has_buffered_input();
    }
    // Early bytes count as buffered input, which the connection reads without waiting.
    void async_wait(direction d, std::function<void(error_code)> ready) override {
        inner_->async_wait(d, std::move(ready));
    }
    void close() override {
        if (closing_) return;
        closing_ = true;
        // Best effort: the close frame (1000, or the echo of the peer's), then TLS's goodbye.
        if (!failed_) {
            if (!close_sent_) out_ += frame_header(close_frame, 2) + "\x03\xe8";
            (void)flush();
        }
        inner_->close();
    }
    std::optional<auth::client_certificate> client_certificate() override {
        return inner_->client_certificate();
    }
    std::string peer() const override { return inner_->peer(); }
    std::string_view kind() const override { return kind_; }

  private:
    // Decodes `bytes` in place: the data frames' payload, unmasked, is moved to the front; the
    // count is returned. Control frames are answered (ping) or end the stream (close).
    std::size_t decode(std::span<char> bytes) {
        std::size_t src = 0, dst = 0;
        while (src < bytes.size() && !failed_ && !closed_) {
            if (left_ > 0 && !control_) {
                const auto k =
                    static_cast<std::size_t>(std::min<std::uint64_t>(left_, bytes.size() - src));
                unmask(bytes.data() + src, k);
                if (dst != src) std::memmove(bytes.data() + dst, bytes.data() + src, k);
                dst += k;
                src += k;
                left_ -= k;
                continue;
            }
            if (left_ > 0) {  // a control frame's payload
                const auto k =
                    static_cast<std::size_t>(std::min<std::uint64_t>(left_, bytes.size() - src));
                unmask(bytes.data() + src, k);
                control_payload_.append(bytes.data() + src, k);
                src += k;
                left_ -= k;
                if (left_ == 0) finish_control();
                continue;
            }
            // A header, possibly split across reads.
            while (header_len_ < header_need() && src < bytes.size())
                header_[header_len_++] = static_cast<std::uint8_t>(bytes[src++]);
            // An unmasked frame is refused from its second byte, not after waiting for a mask.
            if (header_len_ >= 2 && !(header_[1] & 0x80)) {
                fail("an unmasked frame from the client");
                break;
            }
            if (header_len_ < header_need()) break;
            start_frame();
            header_len_ = 0;
            if (left_ == 0 && control_) finish_control();
        }
        return dst;
    }

    // How many header bytes are needed, from what is known of the header so far.
    std::size_t header_need() const {
        if (header_len_ < 2) return 2;
        const auto len7 = header_[1] & 0x7F;
        return 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + 4;  // clients always mask
    }

    void start_frame() {
        const bool fin = header_[0] & 0x80;
        const auto op = static_cast<std::uint8_t>(header_[0] & 0x0F);
        if (header_[0] & 0x70)
            return fail("a frame with reserved bits set (no extension is agreed)");
        std::uint64_t length = header_[1] & 0x7F;
        std::size_t at = 2;
        if (length == 126) {
            length = (std::uint64_t{header_[2]} << 8) | header_[3];
            at = 4;
        } else if (length == 127) {
            length = 0;
            for (int i = 0; i < 8; ++i) length = (length << 8) | header_[2 + i];
            at = 10;
            if (length >> 63) return fail("a frame length with the top bit set");
        }
        std::memcpy(mask_.data(), header_.data() + at, 4);
        mask_at_ = 0;
        left_ = length;
        control_ = op >= close_frame;
        if (control_) {
            if (!fin || length > 125) return fail("a fragmented or oversized control frame");
            if (op != close_frame && op != ping && op != pong)
                return fail("an unknown control opcode");
            control_op_ = op;
            control_payload_.clear();
            return;
        }
        if (op != continuation && op != binary && op != text) return fail("an unknown data opcode");
        // Messages are a byte stream to the protocol above: fragments simply follow each other.
        if (op == continuation && !in_message_) return fail("a continuation outside a message");
        if (op != continuation && in_message_) return fail("a new message inside a fragmented one");
        in_message_ = !fin;
    }

    void finish_control() {
        control_ = false;
        if (control_op_ == ping) {
            // Answered before anything else this side sends next.
            // Whole frames may follow a pending one: the pong goes right after it.
            out_ += frame_header(pong, control_payload_.size()) + control_payload_;
            (void)flush();
        } else if (control_op_ == close_frame) {
            closed_ = true;
            // Echo the status code, as RFC 6455 5.5.1 asks, then end.
            std::string code = control_payload_.size() >= 2 ? control_payload_.substr(0, 2) : "";
            if (!closing_) {
                out_ += frame_header(close_frame, code.size()) + code;
                close_sent_ = true;
                (void)flush();
            }
        }
        std::string().swap(control_payload_);
    }

    void unmask(char* p, std::size_t n) {
        for (std::size_t i = 0; i < n; ++i) {
            p[i] = static_cast<char>(p[i] ^ mask_[mask_at_]);
            mask_at_ = (mask_at_ + 1) & 3;
        }
    }

    // Hands what is pending to the stream below; done once all of it is taken.
    io_result flush() {
        while (!out_.empty()) {
            auto r = inner_->write_some(out_);
            if (r.what != io_result::status::done) {
                if (r.what == io_result::status::failed) fail(r.error);
                if (r.what == io_result::status::closed) fail("the stream closed");
                return r;
            }
            out_.erase(0, r.bytes);
        }
        std::string().swap(out_);  // nothing kept while idle
        return io_result::done();
    }

    void fail(std::string why) {
        if (failed_) return;
        failed_ = true;
        failure_ = "WebSocket: " + std::move(why);
    }

    std::unique_ptr<stream> inner_;
    std::string early_;  // plaintext read before the hand-over, decoded first
    std::string_view kind_;
    // Reading.
    std::array<std::uint8_t, 14> header_{};
    std::size_t header_len_ = 0;
    std::uint64_t left_ = 0;  // payload bytes of the current frame still to come
    std::array<std::uint8_t, 4> mask_{};
    unsigned mask_at_ = 0;
    bool control_ = false;
    std::uint8_t control_op_ = 0;
    std::string control_payload_;
    bool in_message_ = false;
    // Writing: the frame being written, and how many of the caller's bytes it carries (0: none,
    // so control frames may be queued).
    std::string out_;
    std::size_t framed_ = 0;
    bool closed_ = false;   // the peer's close frame arrived
    bool closing_ = false;  // close() ran
    bool close_sent_ = false;
    bool failed_ = false;
    std::string failure_;
};

}  // namespace

std::string websocket_accept_key(std::string_view key) {
    std::string joined(key);
    joined += "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    return base64_encode(sha1(joined));
}

std::unique_ptr<stream> make_websocket_stream(std::unique_ptr<stream> inner, std::string early,
                                              std::string_view kind) {
    return std::make_unique<websocket_stream>(std::move(inner), std::move(early),
                                              intern_kind(kind));
}

}  // namespace iothub::net
