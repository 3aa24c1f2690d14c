// Evaluation of syntax trees against rows and groups, the built-in functions, and aggregate
// accumulators. Internal to the query module.
#pragma once

#include "query/ast.hpp"

#include <boost/json/object.hpp>
#include <boost/json/value.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace iothub::query::detail {

// The result of an expression: undefined, or a JSON value that is either borrowed (from the row,
// the syntax tree or a group) or owned. Borrowing keeps path lookups free of copies.
class value {
  public:
    value() = default;
    static value borrow(const boost::json::value& v) {
        value r;
        r.ref_ = &v;
        return r;
    }
    static value own(boost::json::value v) { return value(std::move(v)); }
    static value own(std::optional<boost::json::value> v) {
        return v ? own(std::move(*v)) : value();
    }

    bool defined() const { return own_ || ref_ != nullptr; }
    const boost::json::value& get() const { return own_ ? *own_ : *ref_; }

  private:
    explicit value(boost::json::value&& v) : own_(std::move(v)) {}

    const boost::json::value* ref_ = nullptr;
    // Most results are borrowed: an empty optional costs nothing to make and destroy, where a
    // JSON value (null) holds a storage pointer.
    std::optional<boost::json::value> own_;
};

struct function_def {
    std::string_view name;  // canonical spelling, for messages
    std::size_t min_args;
    std::size_t max_args;
    value (*call)(std::span<const value> args);
};
inline constexpr std::size_t any_number_of_args = static_cast<std::size_t>(-1);

// Case-insensitive; nullptr for an unknown name.
const function_def* find_function(std::string_view name);
std::optional<aggregate_kind> find_aggregate(std::string_view name);
std::string_view aggregate_name(aggregate_kind k);

// What paths and aggregates resolve against: a row, or (for the SELECT list of an aggregate
// query) the keys and finished aggregates of one group.
struct scope {
    const boost::json::object* row = nullptr;
    const std::vector<value>* keys = nullptr;
    const std::vector<value>* aggregates = nullptr;
    bool ignore_case = false;  // property names in paths
};

value evaluate(const node& n, const scope& s);
value lookup(const boost::json::object& row, const path& p, bool ignore_case = false);

// The running state of one aggregate over one group.
class accumulator {
  public:
    void add(aggregate_kind k, bool has_argument, const value& v);
    value finish(aggregate_kind k) const;

  private:
    std::uint64_t count_ = 0;   // COUNT, and numbers seen by SUM/AVG
    std::int64_t int_sum_ = 0;  // exact while every number is an integer and nothing overflows
    bool int_exact_ = true;
    double sum_ = 0;
    std::optional<boost::json::value> best_number_;  // MIN/MAX, keeping the number's JSON kind
    std::optional<std::string> best_string_;
};

}  // namespace iothub::query::detail
