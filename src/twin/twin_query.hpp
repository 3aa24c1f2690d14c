// Runs IoT Hub queries (`POST /devices/query`) over the twins: walks devices or modules in
// identity order, filters and projects or aggregates with the query module, and pages the result.
//
// Paging follows Azure: at most `page_size` rows per call, and a continuation token only when
// another page has rows. For plain queries the token records where the walk stopped (the
// identity key before the next match, and how many rows TOP has already counted), so each page
// costs only the rows it walks; aggregate queries are recomputed per page and paged by offset.
// Tokens are opaque to clients.
#pragma once

#include "twin/twin.hpp"

#include <boost/json/array.hpp>

#include <optional>
#include <string>

namespace iothub::twin {

struct query_page {
    boost::json::array rows;
    std::string item_type;                    // "Twin" for SELECT * rows, else "Raw"
    std::optional<std::string> continuation;  // absent on the last page
};

inline constexpr std::size_t default_query_page = 100;
inline constexpr std::size_t max_query_page = 1000;

// `page_size` 0 means the default; larger than max_query_page is capped. A malformed or foreign
// continuation token is errc::argument_invalid.
result<query_page> run_query(twin_service& twins, std::string_view text, std::size_t page_size,
                             std::string_view continuation);

}  // namespace iothub::twin
