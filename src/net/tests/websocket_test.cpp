#include "net/stream.hpp"
#include "net_test_support.hpp"

#include <gtest/gtest.h>

#include <array>
#include <memory>
#include <string>
#include <vector>

namespace iothub::net {
namespace {
using namespace std::chrono_literals;
using testing::loopback_pair;
using testing::pattern;
using testing::reader;
using testing::run_until;
using testing::writer;

// A frame as a client sends it: masked.
std::string client_frame(std::uint8_t op, const std::string& payload, bool fin = true,
                         std::uint8_t first_bits = 0, bool masked = true) {
    std::string f;
    f.push_back(static_cast<char>((fin ? 0x80 : 0) | first_bits | op));
    const std::uint8_t mask_bit = masked ? 0x80 : 0;
    const auto n = payload.size();
    if (n < 126) {
        f.push_back(static_cast<char>(mask_bit | n));
    } else if (n <= 0xFFFF) {
        f.push_back(static_cast<char>(mask_bit | 126));
        f.push_back(static_cast<char>(n >> 8));
        f.push_back(static_cast<char>(n));
    } else {
        f.push_back(static_cast<char>(mask_bit | 127));
        for (int i = 7; i >= 0; --i) f.push_back(static_cast<char>(std::uint64_t{n} >> (8 * i)));
    }
    const std::array<std::uint8_t, 4> mask{0x37, 0xfa, 0x21, 0x3d};
    if (!masked) return f + payload;
    for (auto b : mask) f.push_back(static_cast<char>(b));
    for (std::size_t i = 0; i < n; ++i) f.push_back(static_cast<char>(payload[i] ^ mask[i % 4]));
    return f;
}

struct frame {
    std::uint8_t first;
    std::string payload;
};

// Splits what the server sent into frames; the server never masks.
std::vector<frame> server_frames(const std::string& bytes, std::string* error) {
    std::vector<frame> out;
    std::size_t at = 0;
    while (at < bytes.size()) {
        if (bytes.size() - at < 2) return *error = "truncated header", out;
        const auto first = static_cast<std::uint8_t>(bytes[at]);
        const auto second = static_cast<std::uint8_t>(bytes[at + 1]);
        if (second & 0x80) return *error = "a masked frame from the server", out;
        std::uint64_t n = second & 0x7F;
        at += 2;
        if (n == 126) {
            n = (std::uint64_t{static_cast<std::uint8_t>(bytes[at])} << 8) |
                static_cast<std::uint8_t>(bytes[at + 1]);
            at += 2;
        } else if (n == 127) {
            n = 0;
            for (int i = 0; i < 8; ++i) n = (n << 8) | static_cast<std::uint8_t>(bytes[at + i]);
            at += 8;
        }
        if (bytes.size() - at < n) return *error = "truncated payload", out;
        out.push_back({first, bytes.substr(at, n)});
        at += n;
    }
    return out;
}

class WebSocket : public ::testing::Test {
  protected:
    void open(std::string early = {}) {
        auto [server, client] = loopback_pair(io_);
        server_ =
            make_websocket_stream(make_tcp_stream(std::move(server), "tcp"), early, "mqtt-ws");
        client_ = make_tcp_stream(std::move(client), "raw");
    }
    void send_raw(const std::string& bytes) {
        writer w(*client_, bytes);
        w.start();
        ASSERT_TRUE(run_until(io_, [&] { return w.finished(); }));
        ASSERT_FALSE(w.failed()) << w.failure();
    }
    // Reads what the server sent until `n` bytes arrived.
    std::string receive_raw(std::size_t n) {
        reader r(*client_, n);
        r.start();
        EXPECT_TRUE(run_until(io_, [&] { return r.finished(); }));
        return r.received;
    }

    boost::asio::io_context io_;
    std::unique_ptr<stream> server_, client_;
};

TEST_F(WebSocket, TheAcceptKeyIsRfc6455s) {
    EXPECT_EQ(websocket_accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

TEST_F(WebSocket, FramesSplitAnywhereBecomeOneByteStreamAndPingsAreAnswered) {
    const std::string big = pattern(70000, 3);  // the eight-byte length form
    const std::string mid = pattern(300, 4);    // the two-byte form
    const std::string bytes = client_frame(0x2, "hello ", false) + client_frame(0x9, "p1") +
                              client_frame(0x0, mid, false) + client_frame(0x0, big) +
                              client_frame(0x1, "text too");
    // The first bytes were read before the hand-over; the rest come over the socket and are read
    // three bytes at a time, so headers and masks split across reads.
    open(bytes.substr(0, 5));
    send_raw(bytes.substr(5));
    const std::string want = "hello " + mid + big + "text too";
    reader r(*server_, want.size(), 3);
    r.start();
    ASSERT_TRUE(run_until(io_, [&] { return r.finished(); }));
    ASSERT_FALSE(r.ending()) << r.ending()->error;
    EXPECT_EQ(r.received, want);
    EXPECT_EQ(receive_raw(4), std::string("\x8a\x02p1", 4)) << "the pong echoes the ping";
}

TEST_F(WebSocket, WritesAreUnmaskedBinaryFrames) {
    open();
    const std::string data = pattern(70000, 5);
    writer w(*server_, data);
    w.start();
    reader r(*client_, data.size() + 4 + 10);  // two frames: 64 KiB, then the rest
    r.start();
    ASSERT_TRUE(run_until(io_, [&] { return w.finished() && r.finished(); }));
    ASSERT_FALSE(w.failed()) << w.failure();
    std::string error;
    auto frames = server_frames(r.received, &error);
    ASSERT_TRUE(error.empty()) << error;
    std::string joined;
    for (const auto& f : frames) {
        EXPECT_EQ(f.first, 0x82) << "FIN and binary";
        joined += f.payload;
    }
    EXPECT_EQ(joined, data);
}

TEST_F(WebSocket, ThePeersCloseIsEchoedAndEndsTheStream) {
    open();
    send_raw(client_frame(0x2, "last") + client_frame(0x8, "\x03\xe9"));
    reader r(*server_);
    r.start();
    ASSERT_TRUE(run_until(io_, [&] { return r.finished(); }));
    EXPECT_EQ(r.received, "last");
    ASSERT_TRUE(r.ending());
    EXPECT_EQ(r.ending()->what, io_result::status::closed);
    EXPECT_EQ(receive_raw(4), std::string("\x88\x02\x03\xe9", 4));
    EXPECT_EQ(server_->write_some(std::string_view("late")).what, io_result::status::failed)
        << "nothing follows a close frame";
}

TEST_F(WebSocket, ProtocolViolationsFailTheStream) {
    const std::vector<std::pair<std::string, std::string>> cases{
        {"unmasked", client_frame(0x2, "x", true, 0, false)},
        {"reserved bits", client_frame(0x2, "x", true, 0x40)},
        {"long control frame", client_frame(0x9, std::string(126, 'p'))},
        {"fragmented control frame", client_frame(0x9, "p", false)},
        {"unknown opcode", client_frame(0x3, "x")},
        {"continuation first", client_frame(0x0, "x")},
    };
    for (const auto& [what, bytes] : cases) {
        open();
        send_raw(bytes);
        reader r(*server_);
        r.start();
        ASSERT_TRUE(run_until(io_, [&] { return r.finished(); })) << what;
        ASSERT_TRUE(r.ending()) << what;
        EXPECT_EQ(r.ending()->what, io_result::status::failed) << what;
        EXPECT_NE(r.ending()->error.find("WebSocket"), std::string::npos) << r.ending()->error;
    }
}

TEST_F(WebSocket, CloseSaysGoodbyeWithNormalClosure) {
    open();
    server_->close();
    EXPECT_EQ(receive_raw(4), std::string("\x88\x02\x03\xe8", 4));
}

}  // namespace
}  // namespace iothub::net
