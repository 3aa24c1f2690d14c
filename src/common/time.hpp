// Wall-clock time as the hub shows it: ISO-8601 UTC strings in Azure's style, and the
// `0001-01-01T00:00:00Z` value Azure uses for "never".
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace iothub {

using sys_time = std::chrono::time_point<std::chrono::system_clock, std::chrono::nanoseconds>;

inline constexpr std::string_view never_timestamp = "0001-01-01T00:00:00Z";

inline sys_time now() {
    return std::chrono::system_clock::now();
}
inline std::int64_t unix_seconds(sys_time t) {
    return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}
inline std::int64_t unix_millis(sys_time t) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

// "2024-05-01T12:34:56.1234567Z": seven fractional digits, as Azure emits them.
std::string format_iso8601(sys_time t);

// Accepts "YYYY-MM-DDTHH:MM:SS[.fraction](Z|+hh:mm|-hh:mm)". nullopt when malformed.
std::optional<sys_time> parse_iso8601(std::string_view text);

}  // namespace iothub
