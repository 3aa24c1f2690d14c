// Splits a query into tokens. Internal to the query module.
#pragma once

#include "common/error.hpp"

#include <boost/json/value.hpp>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace iothub::query::detail {

enum class token_kind : std::uint8_t { identifier, number, string, punct, end };

struct token {
    token_kind kind = token_kind::end;
    std::string_view text;       // as written; strings keep their quotes
    std::size_t offset = 0;      // in bytes
    boost::json::value literal;  // the value of a number or string token
};

// 1-based character (code point) position of a byte offset, as messages report it.
std::size_t char_position(std::string_view text, std::size_t offset);

// `'text'` for a token, shortened when long; "end of query" for the end.
std::string describe(const token& t);

// The tokens of `text`, always ending with an end token.
result<std::vector<token>> tokenize(std::string_view text);

}  // namespace iothub::query::detail
