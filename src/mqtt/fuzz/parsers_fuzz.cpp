// libFuzzer target: Azure's MQTT conventions on arbitrary text. The property-bag parser and
// encoder must round-trip; the username and topic parsers must not crash.
#include "mqtt/topics.hpp"

#include <cstdint>
#include <cstdlib>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace iothub::mqtt;
    std::string_view text(reinterpret_cast<const char*>(data), size);

    auto bag = parse_property_bag(text);
    if (parse_property_bag(encode_property_bag(bag)) != bag) std::abort();
    (void)telemetry_event(std::string(text), bag);

    (void)parse_username(text);
    (void)parse_dps_username(text);
    auto split = text.find('\n');
    std::string_view topic = text.substr(0, split);
    std::string_view id = split == std::string_view::npos ? "dev" : text.substr(split + 1);
    (void)classify_publish(topic, id, "");
    (void)classify_publish(topic, id, "mod");
    (void)classify_dps_publish(topic);
    (void)classify_filter(topic, id, "");
    return 0;
}
