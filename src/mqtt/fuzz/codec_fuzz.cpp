// libFuzzer target: arbitrary bytes through the MQTT decoder and the session state machine.
// Properties checked: nothing crashes or hangs, and every packet that decodes re-encodes to
// bytes that decode to the same packet.
#include "mqtt/codec.hpp"
#include "mqtt/session.hpp"

#include <cstdint>
#include <cstdlib>
#include <string_view>

namespace {

using namespace iothub::mqtt;

struct accepting_handler : session_handler {
    bool connected = false;
    void on_connect(const connect_packet&) override { connected = true; }
    void on_publish(publish_packet&&) override {}
    std::uint8_t on_subscribe(const subscription& s) override { return s.qos; }
    void on_unsubscribe(const std::string&) override {}
    void on_delivered(std::uint16_t) override {}
};

void check_round_trip(const packet& p) {
    decoder again(1 << 20);
    again.feed(encode(p));
    auto r = again.next();
    if (!std::holds_alternative<packet>(r) || encode(std::get<packet>(r)) != encode(p))
        std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string_view input(reinterpret_cast<const char*>(data), size);
    // The first byte picks a chunk size so packets split across reads are exercised too.
    std::size_t chunk = size ? 1 + data[0] % 64 : 1;

    // Odd reads are lent from a buffer that dies after the read, as a connection's read buffer is
    // reused: anything the decoder kept a view of is then caught by the sanitizer.
    decoder d(64 * 1024);
    for (std::size_t i = 0; i < input.size(); i += chunk) {
        std::string read(input.substr(i, chunk));
        if ((i / chunk) % 2)
            d.lend(read);
        else
            d.feed(read);
        for (;;) {
            auto r = d.next();
            if (std::holds_alternative<std::monostate>(r)) break;
            if (std::holds_alternative<decode_error>(r)) return 0;
            check_round_trip(std::get<packet>(r));
        }
    }

    accepting_handler h;
    session_limits limits;
    limits.max_packet_size = 64 * 1024;
    session s(h, limits, clock::now());
    for (std::size_t i = 0; i < input.size() && !s.closed(); i += chunk) {
        {
            std::string read(input.substr(i, chunk));
            s.receive(read, clock::now());
        }
        if (s.current() == session::state::authenticating) s.accept(false);
        s.acknowledge(1);
        s.output().clear();
    }
    return 0;
}
