// What config.cpp and endpoints.cpp share: reading fields of a JSON object the way ARM does (names
// ignoring case, null as absent), and one endpoint's reading and writing. Internal to the module.
#pragma once

#include "routing/config.hpp"

#include <boost/json/object.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace iothub::routing::detail {

inline error fault(std::string message) {
    return error(errc::argument_invalid, std::move(message));
}

inline std::string quoted(std::string_view s) {
    return "'" + std::string(s) + "'";
}

// ASCII only: names end up in URLs, blob paths and AMQP properties.
inline bool is_alnum(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

// The value under `key` compared ignoring case; nullptr when absent or null (ARM exports write
// null for optional fields left unset).
const boost::json::value* find(const boost::json::object& o, std::string_view key);

// ARM compares keys ignoring case, so {"routes":..., "Routes":...} is ambiguous.
result<void> check_unique_keys(const boost::json::object& o, std::string_view where);

// Typed optional fields; `where` names the object in messages ("Route 'hot'").
result<std::optional<std::string>> get_string(const boost::json::object& o, std::string_view key,
                                              std::string_view where);
result<std::optional<bool>> get_bool(const boost::json::object& o, std::string_view key,
                                     std::string_view where);
result<std::optional<std::int64_t>> get_integer(const boost::json::object& o, std::string_view key,
                                                std::string_view where);

// Letters, digits, '.', '_' and '-', 1 to max_name_length characters. `what` is "Endpoint" or
// "Route".
result<void> check_name(std::string_view name, std::string_view what, const limits& l);

// One element of the `kind` collection; `where` is its position, e.g. "eventHubs[2]".
result<endpoint> parse_endpoint(endpoint_kind kind, const boost::json::object& o,
                                std::string_view where, const limits& l);

// The endpoint as the document should show it: every field the document gave that the hub does not
// interpret, then the normalized ones.
boost::json::object endpoint_json(const endpoint& e);

}  // namespace iothub::routing::detail
