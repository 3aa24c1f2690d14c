// libFuzzer target: what the AMQP adapter reads from the network beyond proton's own framing.
// Input is split at the first NUL: before it, a link address and a C2D `to`; after it, an encoded
// AMQP message, decoded by proton and read as telemetry, as a service C2D message, and as a CBS
// put-token (whose body is a SAS token); the same bytes are also read as a batched message (each
// data section decoded as a message of its own) and as incoming frames whose transfer formats
// are noted. Nothing may crash; decoded ids must survive their text round trip.
#include "amqp/addresses.hpp"
#include "amqp/detail/transfer_formats.hpp"
#include "amqp/event_hubs.hpp"
#include "amqp/message_codec.hpp"
#include "auth/sas.hpp"

#include <cstdint>
#include <cstdlib>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace iothub::amqp;
    std::string_view input(reinterpret_cast<const char*>(data), size);
    auto nul = input.find('\0');
    auto text = input.substr(0, nul);
    auto a = classify_address(text);
    if (a.what == node_address::kind::unknown && !a.device_id.empty()) std::abort();
    (void)c2d_target_device(text);
    (void)parse_selector(text);
    if (auto g = guid_bytes(text); g && g->size() != 16) std::abort();

    if (nul == std::string_view::npos) return 0;
    auto bytes = input.substr(nul + 1);
    detail::transfer_formats formats;
    formats.feed(bytes);
    (void)formats.take(text, bytes.substr(0, 4));
    auto m = make_message();
    if (auto sections = data_sections(bytes)) {
        for (auto inner : *sections) {
            if (inner.empty() || pn_message_decode(m.get(), inner.data(), inner.size()) != 0)
                continue;
            (void)to_event(m.get());
        }
        pn_message_clear(m.get());
    }
    // As in the server: proton asserts on an empty input, so it never gets one.
    if (bytes.empty() || pn_message_decode(m.get(), bytes.data(), bytes.size()) != 0) return 0;
    (void)to_event(m.get());
    (void)to_c2d_message(m.get());
    (void)application_properties(m.get());
    (void)annotations(m.get());
    (void)application_property(m.get(), "operation");
    (void)selector_of(pn_message_properties(m.get()));
    if (auto body = body_bytes(m.get())) (void)iothub::auth::parse_sas_token(*body);
    return 0;
}
