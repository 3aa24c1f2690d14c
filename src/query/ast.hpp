// The syntax tree of a parsed query, shared by the parser and the evaluator. Internal to the
// query module.
#pragma once

#include "query/query.hpp"

#include <boost/json/value.hpp>

#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace iothub::query::detail {

// A number computed by the query as JSON. Azure's engine is JavaScript-like: every number is a
// double and a whole one prints without a fraction, so whole values within 2^53 become int64.
// NaN and infinities have no JSON form; they make the result undefined (nullopt).
std::optional<boost::json::value> number_value(double d);

// One step of a path: a property name (`.name`, `['name']`) or an array index (`[3]`).
struct segment {
    std::string name;
    std::size_t index = 0;
    bool is_index = false;

    friend bool operator==(const segment&, const segment&) = default;
};
using path = std::vector<segment>;

// How a path is written back in messages: identifiers dotted, anything else bracketed.
std::string to_string(const path& p);

enum class node_kind : std::uint8_t {
    constant,   // a JSON constant in `constant`
    undefined,  // the `undefined` literal
    path,       // `steps`, resolved against the row (or the group keys of a grouped query)
    negate,     // unary minus of args[0]
    logical_not,
    logical_and,  // n-ary, so long condition chains do not deepen the tree
    logical_or,
    compare,     // args[0] `cmp` args[1]
    arithmetic,  // args[0] `arith` args[1]
    in,          // args[0] IN the array in `constant`
    nin,         // args[0] NIN the array in `constant`
    call,        // `fn` applied to args
    aggregate,   // `agg` over args[0] (COUNT may have none); its result is accumulator `slot`
};

enum class compare_op : std::uint8_t { eq, ne, lt, gt, le, ge };
enum class arith_op : std::uint8_t { add, sub, mul, div, mod };
enum class aggregate_kind : std::uint8_t { count, sum, avg, min, max };

struct function_def;

inline constexpr std::size_t no_slot = std::numeric_limits<std::size_t>::max();

struct node {
    node_kind kind = node_kind::constant;
    std::size_t position = 0;  // 1-based character position of the node's first token
    std::size_t height = 1;    // nodes on the longest path down, for the nesting limit
    compare_op cmp = compare_op::eq;
    arith_op arith = arith_op::add;
    aggregate_kind agg = aggregate_kind::count;
    boost::json::value constant;
    path steps;
    const function_def* fn = nullptr;
    // aggregate: index of its accumulator; path in a grouped SELECT: index of its GROUP BY key.
    std::size_t slot = no_slot;
    std::vector<std::unique_ptr<node>> args;
};
using node_ptr = std::unique_ptr<node>;

struct select_item {
    node_ptr expr;
    std::string name;
};

struct plan {
    collection from = collection::devices;
    std::optional<std::uint64_t> top;
    bool star = false;
    bool aggregates = false;
    std::vector<select_item> items;
    node_ptr where;
    std::vector<path> group_by;
    std::vector<const node*> aggregate_nodes;  // indexed by node::slot
    bool ignore_case = false;                  // route conditions match names case-insensitively
};

}  // namespace iothub::query::detail
