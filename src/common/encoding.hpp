// Text encodings used across protocols: Base64 (keys, signatures, ETags), percent-encoding (SAS
// resources, URL paths, MQTT property bags) and hex (certificate thumbprints).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace iothub {

std::string base64_encode(std::span<const std::uint8_t> bytes);
inline std::string base64_encode(std::string_view bytes) {
    return base64_encode(
        std::span(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size()));
}
// Standard alphabet with padding; whitespace is not accepted. nullopt when malformed.
std::optional<std::string> base64_decode(std::string_view text);

// Percent-encodes everything but RFC 3986 unreserved characters (A-Z a-z 0-9 - _ . ~), with
// upper-case hex, so the output is safe in a path segment, a query value and a SAS `sr`.
std::string percent_encode(std::string_view text);

// Decodes %XX escapes. '+' stays '+': SAS signatures and device ids may contain it literally.
// nullopt when an escape is truncated or not hex.
std::optional<std::string> percent_decode(std::string_view text);

std::string hex_encode(std::span<const std::uint8_t> bytes, bool upper = false);
// A number as exactly 16 lower-case hex digits and back: fixed width, so keys built from it sort
// in numeric order. parse_hex16 wants all 16 digits.
std::string hex16(std::uint64_t v);
std::optional<std::uint64_t> parse_hex16(std::string_view s);
// Either case; nullopt for an odd length or a character that is not a hex digit.
std::optional<std::string> hex_decode(std::string_view hex);
inline std::string hex_encode(std::string_view bytes, bool upper = false) {
    return hex_encode(std::span(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size()),
                      upper);
}

bool iequals(std::string_view a, std::string_view b) noexcept;
std::string to_lower(std::string_view text);

// True when `s` is well-formed UTF-8 (bodies that are not are shown as Base64).
bool valid_utf8(std::string_view s);

}  // namespace iothub
