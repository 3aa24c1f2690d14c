// libFuzzer target: the WebSocket framing a client's bytes go through after the upgrade. The
// input is split into reads (the first byte picks the size) that the stream below hands out one
// at a time from buffers that die after each read; whatever the framing writes back is checked
// to be whole unmasked frames.
#include "net/stream.hpp"

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace iothub::net {
// The harness links websocket.cpp alone: the log name is used as given.
std::string_view intern_kind(std::string_view kind) {
    return kind;
}
}  // namespace iothub::net

namespace {
using namespace iothub::net;

class memory_stream final : public stream {
  public:
    memory_stream(std::vector<std::string> reads, std::string& written)
        : reads_(std::move(reads)), written_(written) {}
    io_result read_some(std::span<char> into) override {
        if (next_ == reads_.size()) return {io_result::status::closed, 0, {}};
        auto& r = reads_[next_];
        const auto n = std::min(into.size(), r.size() - at_);
        std::memcpy(into.data(), r.data() + at_, n);
        at_ += n;
        if (at_ == r.size()) {
            std::string().swap(r);  // gone, as a reused read buffer would be
            ++next_;
            at_ = 0;
        }
        return io_result::done(n);
    }
    io_result write_some(std::span<const char> from) override {
        // Every other write would block, so pending output is retried.
        if (++writes_ % 2) return io_result::wait(direction::write);
        written_.append(from.data(), from.size());
        return io_result::done(from.size());
    }
    void async_wait(direction, std::function<void(error_code)>) override {}
    void close() override {}
    std::string peer() const override { return "fuzz"; }
    std::string_view kind() const override { return "fuzz"; }

  private:
    std::vector<std::string> reads_;
    std::size_t next_ = 0, at_ = 0;
    std::string& written_;
    unsigned writes_ = 0;
};

void check_frames(const std::string& bytes) {
    std::size_t at = 0;
    while (at + 2 <= bytes.size()) {
        if (static_cast<std::uint8_t>(bytes[at + 1]) & 0x80) __builtin_trap();  // masked
        std::uint64_t n = static_cast<std::uint8_t>(bytes[at + 1]) & 0x7F;
        at += 2;
        if (n == 126 || n == 127) {
            const int width = n == 126 ? 2 : 8;
            if (at + width > bytes.size()) __builtin_trap();
            n = 0;
            for (int i = 0; i < width; ++i) n = (n << 8) | static_cast<std::uint8_t>(bytes[at + i]);
            at += width;
        }
        if (n > bytes.size() - at) __builtin_trap();  // a frame cut short
        at += n;
    }
    if (at != bytes.size()) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) return 0;
    const std::size_t chunk = 1 + data[0] % 32;
    std::vector<std::string> reads;
    for (std::size_t i = 1; i < size; i += chunk)
        reads.emplace_back(reinterpret_cast<const char*>(data) + i, std::min(chunk, size - i));
    std::string written;
    std::string early = reads.empty() ? std::string() : reads.front().substr(0, 3);
    if (!reads.empty()) reads.front().erase(0, early.size());
    {
        auto ws = make_websocket_stream(std::make_unique<memory_stream>(std::move(reads), written),
                                        std::move(early), "fuzz");
        std::string into(7, '\0');
        std::string echo;
        for (int i = 0; i < 100000; ++i) {
            auto r = ws->read_some(into);
            if (r.what != io_result::status::done) break;
            echo.append(into.data(), r.bytes);
            // Some of it goes back, so reads and writes interleave as in a connection.
            auto w = ws->write_some(std::string_view(echo).substr(0, 5));
            if (w.what == io_result::status::done) echo.erase(0, w.bytes);
        }
    }  // close() says goodbye
    check_frames(written);
    return 0;
}
