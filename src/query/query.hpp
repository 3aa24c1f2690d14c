// The IoT Hub query language of `POST /devices/query`: parsing, validation and evaluation.
//
// This module owns what a query text means: lexing, parsing, the checks Azure makes before it runs
// anything (unknown functions, arity, aggregates where they cannot be, GROUP BY rules, size and
// nesting limits), and evaluating the result against one row at a time. It does not own the rows:
// the caller walks the collection from() names, keeps the rows matches() accepts, stops after
// top() results, and either projects each row or feeds an aggregation. Paging, continuation tokens
// and the `Twin`/`JSON` item type of the response are the caller's too.
//
// A row is a JSON object as Azure renders it: a twin as `GET /twins/{id}` returns it (with
// moduleId for devices.modules) or a job record. Paths address it with dots and brackets:
// `properties.desired.$metadata.x.$lastUpdated`, `tags['some key']`, `tags.list[0]`. A path that
// leads nowhere is `undefined`, which is not JSON null. Keywords and function names are
// case-insensitive; property names are case-sensitive.
//
// Semantics in brief (query.cpp and eval.cpp record where Azure's documentation is silent):
// - Comparisons are between primitives of the same type only (numbers as doubles, strings by
//   byte order, booleans and null for equality); anything else, or an undefined operand, yields
//   undefined. AND/OR/NOT are three-valued: a non-Boolean operand counts as unknown, and only a
//   condition that is exactly `true` selects a row.
// - Arithmetic is on numbers only; division or modulo by zero is undefined. Computed numbers that
//   are whole (and within 2^53) come out as JSON integers, as in Azure's JavaScript-like engine.
// - An unaliased projection is named by its path's last property; other unaliased expressions,
//   aggregates included, are named `$1`, `$2`, ... in SELECT order (Azure's behaviour).
//
// Error positions in messages are 1-based character (code point) offsets into the query text.
//
// Thread safety: a statement is immutable and may be shared and used from any number of threads;
// an aggregation belongs to one thread at a time.
#pragma once

#include "common/error.hpp"

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace iothub::query {

namespace detail {
struct plan;
struct group_table;
}  // namespace detail

// Azure's documented limit; anything longer is refused before lexing.
inline constexpr std::size_t max_query_length = 8192;
// Parentheses, unary operators, nested constants and operator chains may not nest deeper than
// this, so hostile input cannot exhaust the stack of the parser or the evaluator.
inline constexpr std::size_t max_nesting = 64;

// FROM devices | devices.modules | devices.jobs
enum class collection : std::uint8_t { devices, modules, jobs };

// A parsed, validated query; immutable, cheap to copy (shares its syntax tree).
class statement {
  public:
    collection from() const;
    // SELECT TOP n: the caller stops after n result rows (for an aggregate query, n of the rows
    // finish() returns).
    std::optional<std::uint64_t> top() const;
    // SELECT *: result rows are the rows themselves (item type "Twin" for devices and modules).
    bool selects_whole_rows() const;
    // Uses COUNT/SUM/AVG/MIN/MAX and/or GROUP BY: feed matching rows to an aggregation.
    bool aggregates() const;
    // Output names in SELECT order; empty for SELECT *.
    std::vector<std::string> column_names() const;

    // The WHERE condition evaluates to Boolean true (undefined, null and non-Booleans do not
    // match). Without WHERE every row matches.
    bool matches(const boost::json::object& row) const;
    // One result row of a non-aggregate query: each projection that is defined, under its output
    // name. For SELECT * the row itself. Aggregates in an aggregate query are undefined here.
    boost::json::object project(const boost::json::object& row) const;

  private:
    friend result<statement> parse(std::string_view text);
    friend class aggregation;
    explicit statement(std::shared_ptr<const detail::plan> plan);

    std::shared_ptr<const detail::plan> plan_;
};

// The outcome of a condition: Azure's routing reports these three (a route matches only on true).
enum class truth : std::uint8_t { false_, true_, undefined };
std::string_view to_string(truth t);  // "false", "true", "undefined"

// A message-routing condition: one Boolean expression in the same language (every function, no
// aggregates, no SELECT/FROM), evaluated against a row whose property names match ignoring ASCII
// case, as route conditions do. The caller builds the row: for a message, system properties under
// `$name`, application properties under their names, `$body` and `$twin` as objects.
class condition {
  public:
    condition() = default;  // `true`, as a route without a condition
    truth evaluate(const boost::json::object& row) const;
    // Whether any path starts with `name` (case-insensitive), e.g. "$body" or "$twin": the row
    // needs that part only then, and it can be costly to build.
    bool refers_to(std::string_view name) const;
    // refers_to("$body") and refers_to("$twin"), worked out once at parse time: asked per message.
    bool reads_body() const { return reads_body_; }
    bool reads_twin() const { return reads_twin_; }
    // The first name of every path, as written and without repeats ("level", "$body", ...): a
    // row that holds only these members evaluates as the whole row would.
    const std::vector<std::string>& roots() const { return roots_; }

  private:
    friend result<condition> parse_condition(std::string_view text);
    explicit condition(std::shared_ptr<const detail::plan> plan);

    std::shared_ptr<const detail::plan> plan_;
    bool reads_body_ = false;
    bool reads_twin_ = false;
    std::vector<std::string> roots_;
};

// Errors as parse()'s, e.g. "Syntax error at position 7: expected an expression but found end".
result<condition> parse_condition(std::string_view text);

// Errors are errc::argument_invalid with a message naming what is wrong and where, e.g.
// "Syntax error at position 10: expected FROM but found 'devices'" for `SELECT * devices`, or
// "Unknown function 'FOO' at position 8".
result<statement> parse(std::string_view text);

// The grouping and aggregate state of one run of an aggregate query: feed every matching row,
// then take the result rows.
class aggregation {
  public:
    explicit aggregation(const statement& s);
    ~aggregation();
    aggregation(aggregation&&) noexcept;
    aggregation& operator=(aggregation&&) noexcept;

    // The caller has already filtered with matches().
    void add(const boost::json::object& row);
    // One row per group in the order groups were first seen; without GROUP BY exactly one row,
    // even when no row was added (COUNT() is then 0). Rows whose group key is undefined form
    // their own group, which omits that key. May be called again after more add()s.
    boost::json::array finish();

  private:
    std::shared_ptr<const detail::plan> plan_;
    std::unique_ptr<detail::group_table> groups_;
};

}  // namespace iothub::query
