// How an event is laid out in bytes wherever an engine stores it: varint-length strings, the
// connection's stamp folded into the system properties. RocksDB prefixes the enqueued time; a
// JetStream message carries the record alone (the stream keeps the time).
#pragma once

#include "common/time.hpp"
#include "storage/event_log.hpp"

#include <string>
#include <string_view>

namespace iothub::storage::detail {

void put_u64(std::string& out, std::uint64_t v);  // big-endian, so keys sort by value
std::uint64_t get_u64(std::string_view s);
void put_varint(std::string& out, std::uint64_t v);
bool get_varint(std::string_view& in, std::uint64_t& v);
void put_string(std::string& out, std::string_view s);
bool get_string(std::string_view& in, std::string& s);

void encode_record(std::string& out, const event_record& e);
bool decode_record(std::string_view value, event_record& out);

// With the enqueued time in front (8 bytes, nanoseconds since the epoch).
std::string encode(sys_time t, const event_record& e);
bool decode(std::string_view value, stored_event& out);
sys_time time_of(std::string_view value);

}  // namespace iothub::storage::detail
