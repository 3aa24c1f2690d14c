#include "query/query.hpp"

#include "common/encoding.hpp"
#include "query/ast.hpp"
#include "query/eval.hpp"

#include <boost/json/serialize.hpp>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <unordered_map>

namespace iothub::query::detail {
namespace json = boost::json;

struct group_table {
    struct group {
        std::vector<value> keys;  // owned copies; undefined where the row had no such key
        std::vector<accumulator> accumulators;
    };
    std::unordered_map<std::string, std::size_t> index;
    std::vector<group> groups;
};

namespace {

// An injective encoding of a group key tuple. Numbers are keyed by value, not by JSON kind, so
// 21 and 21.0 share a group as they compare equal.
void append_key(std::string& out, const value& v) {
    if (!v.defined()) {
        out += 'u';
        return;
    }
    const json::value& j = v.get();
    auto counted = [&](char tag, std::string_view body) {
        out += tag;
        out += std::to_string(body.size());
        out += ':';
        out += body;
    };
    switch (j.kind()) {
        case json::kind::null:
            out += 'z';
            return;
        case json::kind::bool_:
            out += j.get_bool() ? "b1" : "b0";
            return;
        case json::kind::int64:
            counted('i', std::to_string(j.get_int64()));
            return;
        case json::kind::uint64:
            if (j.get_uint64() <=
                static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
                counted('i', std::to_string(j.get_uint64()));
            else
                counted('w', std::to_string(j.get_uint64()));
            return;
        case json::kind::double_: {
            double d = j.get_double();
            if (d == std::trunc(d) && std::fabs(d) < 9.2e18) {
                counted('i', std::to_string(static_cast<std::int64_t>(d)));
                return;
            }
            char buf[32];
            auto r = std::to_chars(buf, buf + sizeof buf, d);
            counted('d', std::string_view(buf, static_cast<std::size_t>(r.ptr - buf)));
            return;
        }
        case json::kind::string:
            counted('s', j.get_string());
            return;
        default:
            counted('j', json::serialize(j));
            return;
    }
}

json::object project_with(const plan& p, const scope& s) {
    json::object out;
    for (const auto& item : p.items) {
        value v = evaluate(*item.expr, s);
        if (v.defined()) out.insert_or_assign(item.name, v.get());
    }
    return out;
}

}  // namespace
}  // namespace iothub::query::detail

namespace iothub::query {
namespace json = boost::json;
using detail::evaluate;
using detail::scope;
using detail::value;

statement::statement(std::shared_ptr<const detail::plan> plan) : plan_(std::move(plan)) {}

collection statement::from() const {
    return plan_->from;
}
std::optional<std::uint64_t> statement::top() const {
    return plan_->top;
}
bool statement::selects_whole_rows() const {
    return plan_->star;
}
bool statement::aggregates() const {
    return plan_->aggregates;
}

std::vector<std::string> statement::column_names() const {
    std::vector<std::string> names;
    for (const auto& item : plan_->items) names.push_back(item.name);
    return names;
}

std::string_view to_string(truth t) {
    switch (t) {
        case truth::true_:
            return "true";
        case truth::false_:
            return "false";
        default:
            return "undefined";
    }
}

condition::condition(std::shared_ptr<const detail::plan> plan) : plan_(std::move(plan)) {
    auto walk = [&](auto& self, const detail::node& n) -> void {
        if (n.kind == detail::node_kind::path && !n.steps.empty() && !n.steps[0].is_index &&
            std::find(roots_.begin(), roots_.end(), n.steps[0].name) == roots_.end())
            roots_.push_back(n.steps[0].name);
        for (const auto& a : n.args) self(self, *a);
    };
    if (plan_) walk(walk, *plan_->where);
    reads_body_ = refers_to("$body");
    reads_twin_ = refers_to("$twin");
}

truth condition::evaluate(const json::object& row) const {
    if (!plan_) return truth::true_;
    detail::scope s{&row};
    s.ignore_case = true;
    value v = detail::evaluate(*plan_->where, s);
    if (!v.defined() || !v.get().is_bool()) return truth::undefined;
    return v.get().get_bool() ? truth::true_ : truth::false_;
}

bool condition::refers_to(std::string_view name) const {
    return std::any_of(roots_.begin(), roots_.end(),
                       [&](const std::string& root) { return iequals(root, name); });
}

bool statement::matches(const json::object& row) const {
    if (!plan_->where) return true;
    value v = evaluate(*plan_->where, scope{&row});
    return v.defined() && v.get().is_bool() && v.get().get_bool();
}

json::object statement::project(const json::object& row) const {
    if (plan_->star) return row;
    return detail::project_with(*plan_, scope{&row});
}

aggregation::aggregation(const statement& s)
    : plan_(s.plan_), groups_(std::make_unique<detail::group_table>()) {
    // Without GROUP BY there is exactly one group, present even if no row ever arrives.
    if (plan_->group_by.empty()) {
        groups_->index.emplace(std::string(), 0);
        groups_->groups.emplace_back();
        groups_->groups.back().accumulators.resize(plan_->aggregate_nodes.size());
    }
}

aggregation::~aggregation() = default;
aggregation::aggregation(aggregation&&) noexcept = default;
aggregation& aggregation::operator=(aggregation&&) noexcept = default;

void aggregation::add(const json::object& row) {
    std::vector<value> keys;
    std::string key;
    keys.reserve(plan_->group_by.size());
    for (const auto& g : plan_->group_by) {
        keys.push_back(detail::lookup(row, g));
        detail::append_key(key, keys.back());
    }
    auto [it, inserted] = groups_->index.try_emplace(std::move(key), groups_->groups.size());
    if (inserted) {
        detail::group_table::group g;
        // The row is gone after add() returns, so the group keeps copies of its keys.
        for (const auto& k : keys) g.keys.push_back(k.defined() ? value::own(k.get()) : value());
        g.accumulators.resize(plan_->aggregate_nodes.size());
        groups_->groups.push_back(std::move(g));
    }
    auto& group = groups_->groups[it->second];
    scope s{&row};
    for (std::size_t i = 0; i < plan_->aggregate_nodes.size(); ++i) {
        const detail::node& a = *plan_->aggregate_nodes[i];
        bool has_argument = !a.args.empty();
        value v = has_argument ? evaluate(*a.args[0], s) : value();
        group.accumulators[i].add(a.agg, has_argument, v);
    }
}

json::array aggregation::finish() {
    json::array out;
    out.reserve(groups_->groups.size());
    for (const auto& g : groups_->groups) {
        std::vector<value> finished;
        finished.reserve(g.accumulators.size());
        for (std::size_t i = 0; i < g.accumulators.size(); ++i)
            finished.push_back(g.accumulators[i].finish(plan_->aggregate_nodes[i]->agg));
        out.push_back(detail::project_with(*plan_, scope{nullptr, &g.keys, &finished}));
    }
    return out;
}

}  // namespace iothub::query
