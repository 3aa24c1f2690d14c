// The stored form of C2D messages and feedback records: storage keys and a compact binary value
// encoding (length-prefixed strings, little-endian integers, a leading format byte so a later
// layout can be told apart). Kept apart from the service so the layout can be tested on its own.
#pragma once

#include "c2d/c2d.hpp"

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace iothub::c2d::detail {

inline constexpr std::string_view message_prefix = "c2d/";
inline constexpr std::string_view feedback_prefix = "c2dfb/";

// `c2d/<deviceId>/<16 hex digits>`: a device id never contains '/', and fixed-width hex sorts
// like the number, so a device's messages scan in sequence order.
std::string message_key(std::string_view device_id, std::uint64_t sequence);
std::string feedback_key(std::uint64_t sequence);

struct message_key_parts {
    std::string device_id;
    std::uint64_t sequence = 0;
};
std::optional<message_key_parts> parse_message_key(std::string_view key);
std::optional<std::uint64_t> parse_feedback_key(std::string_view key);

// What a queued message's record holds besides the message itself.
struct stored_message {
    sys_time enqueued_time;
    sys_time expiry_time;
    std::uint32_t delivery_count = 0;
    std::string device_generation_id;
    std::shared_ptr<const message> content;  // never null
};

std::string encode(const stored_message& m);
std::string encode_message(sys_time enqueued, sys_time expiry, std::uint32_t deliveries,
                           std::string_view generation, const message& content);
std::optional<stored_message> decode_message(std::string_view value);

// A feedback record and how many times it was delivered (its abandoned deliveries count across
// restarts). Records written before the count was kept read as never delivered.
std::string encode(const feedback_record& r, std::uint32_t deliveries = 0);
struct stored_feedback {
    feedback_record record;
    std::uint32_t deliveries = 0;
};
std::optional<stored_feedback> decode_feedback(std::string_view value);

}  // namespace iothub::c2d::detail
