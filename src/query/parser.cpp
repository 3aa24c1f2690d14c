// Recursive descent over the token list. Precedence, loosest first:
//   OR, AND, NOT, comparison (= != <> < > <= >= IN NIN; not chainable), + -, * / %, unary -.
//
// Where Azure's documentation is silent:
// - Reserved words (SELECT FROM WHERE GROUP BY AND OR NOT IN NIN AS TOP true false null
//   undefined) cannot start a path; after a dot any identifier is a property name, and bracket
//   form reaches any name at all.
// - Array and object constants hold constants only, as the documented grammar has it.
// - COUNT also takes `*` and, like Cosmos DB, an expression, counting rows where it is defined.
// - Aggregates may sit inside SELECT expressions (`SUM(x) / COUNT() AS mean`) but not inside
//   each other, WHERE or GROUP BY; with aggregates or GROUP BY every path outside an aggregate
//   must be a GROUP BY key.
// - Two outputs with one name are an error rather than one silently replacing the other.
// - For devices.jobs a leading `devices.jobs.` on a path (as Azure's examples write them) is
//   dropped, since the rows are the job records themselves.
#include "common/encoding.hpp"
#include "query/ast.hpp"
#include "query/eval.hpp"
#include "query/lexer.hpp"
#include "query/query.hpp"

#include <algorithm>
#include <array>
#include <limits>
#include <set>

namespace iothub::query::detail {
namespace json = boost::json;
namespace {

constexpr std::array reserved = {
    std::string_view("SELECT"),    std::string_view("FROM"),  std::string_view("WHERE"),
    std::string_view("GROUP"),     std::string_view("BY"),    std::string_view("AND"),
    std::string_view("OR"),        std::string_view("NOT"),   std::string_view("IN"),
    std::string_view("NIN"),       std::string_view("AS"),    std::string_view("TOP"),
    std::string_view("TRUE"),      std::string_view("FALSE"), std::string_view("NULL"),
    std::string_view("UNDEFINED"),
};

bool is_reserved(std::string_view word) {
    return std::any_of(reserved.begin(), reserved.end(),
                       [&](std::string_view r) { return iequals(r, word); });
}

bool plain_identifier(std::string_view s) {
    if (s.empty() || (s[0] >= '0' && s[0] <= '9')) return false;
    return std::all_of(s.begin(), s.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '_' || c == '$';
    });
}

std::optional<json::value> negated(const json::value& v) {
    if (v.is_int64() && v.get_int64() != std::numeric_limits<std::int64_t>::min())
        return json::value(-v.get_int64());
    if (v.is_int64()) return number_value(-static_cast<double>(v.get_int64()));
    if (v.is_uint64()) return number_value(-static_cast<double>(v.get_uint64()));
    if (v.is_double()) return number_value(-v.get_double());
    return std::nullopt;
}

class parser {
  public:
    parser(std::string_view text, std::vector<token> tokens)
        : text_(text), toks_(std::move(tokens)) {}

    result<std::shared_ptr<plan>> run() {
        auto p = std::make_shared<plan>();
        if (!query(*p) || err_) return err_ ? *err_ : error(errc::argument_invalid, "Bad query");
        if (!validate(*p)) return *err_;
        return p;
    }

    // A bare expression, as a route condition is written: no SELECT, FROM or aggregates.
    result<std::shared_ptr<plan>> run_condition() {
        auto p = std::make_shared<plan>();
        clause_ = clause::where;
        if (cur().kind == token_kind::end) fail("The condition is empty");
        if (!err_) p->where = expression();
        if (!err_ && cur().kind != token_kind::end)
            expected("an operator or the end of the condition");
        if (!err_ && aggregate_count_ > 0)
            fail("Aggregate functions cannot be used in a condition");
        if (err_) return *err_;
        p->ignore_case = true;
        return p;
    }

  private:
    // --- Tokens and errors ---

    const token& cur() const { return toks_[at_]; }
    const token& peek(std::size_t k) const { return toks_[std::min(at_ + k, toks_.size() - 1)]; }
    void advance() {
        if (cur().kind != token_kind::end) ++at_;
    }
    bool is_punct(std::string_view p) const {
        return cur().kind == token_kind::punct && cur().text == p;
    }
    bool is_keyword(std::string_view kw) const {
        return cur().kind == token_kind::identifier && iequals(cur().text, kw);
    }
    std::string where(const token& t) const {
        return std::to_string(char_position(text_, t.offset));
    }

    // The first error wins; later ones are consequences of it.
    std::nullptr_t fail(std::string message) {
        if (!err_) err_ = error(errc::argument_invalid, std::move(message));
        return nullptr;
    }
    std::nullptr_t expected(std::string_view what) {
        return fail("Syntax error at position " + where(cur()) + ": expected " + std::string(what) +
                    " but found " + describe(cur()));
    }
    bool expect_punct(std::string_view p, std::string_view what) {
        if (!is_punct(p)) return expected(what), false;
        advance();
        return true;
    }

    // Counts recursion (parentheses, unary operators, nested constants) against max_nesting.
    class nesting {
      public:
        explicit nesting(parser& p) : p_(p) {
            if (++p_.depth_ > max_nesting) p_.too_deep();
        }
        ~nesting() { --p_.depth_; }
        nesting(const nesting&) = delete;
        nesting& operator=(const nesting&) = delete;
        bool ok() const { return p_.depth_ <= max_nesting; }

      private:
        parser& p_;
    };
    std::nullptr_t too_deep() {
        return fail("Query is nested deeper than " + std::to_string(max_nesting) +
                    " levels at position " + where(cur()));
    }

    node_ptr make(node_kind kind, const token& at) {
        auto n = std::make_unique<node>();
        n->kind = kind;
        n->position = char_position(text_, at.offset);
        return n;
    }
    node_ptr make(node_kind kind, std::size_t position) {
        auto n = std::make_unique<node>();
        n->kind = kind;
        n->position = position;
        return n;
    }
    // Left-associative chains (`a + b + c ...`) deepen the tree without recursing in the
    // parser, so the evaluator's recursion is bounded here too.
    node_ptr seal(node_ptr n) {
        std::size_t below = 0;
        for (const auto& a : n->args) below = std::max(below, a->height);
        n->height = below + 1;
        if (n->height > max_nesting)
            return fail("Query is nested deeper than " + std::to_string(max_nesting) +
                        " levels at position " + std::to_string(n->position));
        return n;
    }

    // --- Statement ---

    bool query(plan& p) {
        if (cur().kind == token_kind::end) return fail("The query is empty"), false;
        if (!is_keyword("SELECT")) return expected("SELECT"), false;
        advance();
        if (is_keyword("TOP")) {
            advance();
            const token& t = cur();
            bool positive =
                t.kind == token_kind::number &&
                ((t.literal.is_int64() && t.literal.get_int64() > 0) || t.literal.is_uint64());
            if (!positive)
                return fail("TOP expects a positive integer at position " + where(t) +
                            " but found " + describe(t)),
                       false;
            p.top = t.literal.is_int64() ? static_cast<std::uint64_t>(t.literal.get_int64())
                                         : t.literal.get_uint64();
            advance();
        }
        if (is_punct("*")) {
            p.star = true;
            advance();
            if (is_punct(","))
                return fail("SELECT * cannot be combined with other projections (position " +
                            where(cur()) + ")"),
                       false;
        } else {
            if (is_keyword("FROM")) return expected("* or a projection list"), false;
            if (!projections(p)) return false;
        }
        if (!is_keyword("FROM")) return expected("FROM"), false;
        advance();
        if (!from(p)) return false;
        if (is_keyword("WHERE")) {
            advance();
            clause_ = clause::where;
            p.where = expression();
            clause_ = clause::select;
            if (!p.where) return false;
        }
        if (is_keyword("GROUP")) {
            advance();
            if (!is_keyword("BY")) return expected("BY"), false;
            advance();
            while (true) {
                if (cur().kind != token_kind::identifier || is_reserved(cur().text))
                    return expected("a property path"), false;
                path steps;
                if (!path_steps(steps)) return false;
                p.group_by.push_back(std::move(steps));
                if (!is_punct(",")) break;
                advance();
            }
        }
        if (cur().kind != token_kind::end) {
            if (!p.group_by.empty()) return expected("end of query"), false;
            if (p.where) return expected("GROUP BY or end of query"), false;
            return expected("WHERE, GROUP BY or end of query"), false;
        }
        return true;
    }

    bool projections(plan& p) {
        while (true) {
            select_item item;
            item.expr = expression();
            if (!item.expr) return false;
            if (is_keyword("AS")) {
                advance();
                if (cur().kind != token_kind::identifier || is_reserved(cur().text))
                    return expected("an alias after AS"), false;
                item.name = std::string(cur().text);
                advance();
            }
            p.items.push_back(std::move(item));
            if (!is_punct(",")) return true;
            advance();
        }
    }

    bool from(plan& p) {
        const token& first = cur();
        auto unknown = [&](std::string_view name) {
            return fail("Unknown collection '" + std::string(name) + "' at position " +
                        where(first) + "; expected devices, devices.modules or devices.jobs"),
                   false;
        };
        if (first.kind != token_kind::identifier)
            return expected("devices, devices.modules or devices.jobs"), false;
        if (!iequals(first.text, "devices")) return unknown(first.text);
        advance();
        p.from = collection::devices;
        if (!is_punct(".")) return true;
        advance();
        std::string name = std::string(first.text) + "." + std::string(cur().text);
        if (is_keyword("modules"))
            p.from = collection::modules;
        else if (is_keyword("jobs"))
            p.from = collection::jobs;
        else
            return unknown(name);
        advance();
        return true;
    }

    // --- Expressions ---

    node_ptr expression() {
        nesting guard(*this);
        if (!guard.ok()) return nullptr;
        return logical(node_kind::logical_or);
    }

    // OR over ANDs, AND over NOTs; flattened so a long chain stays one level deep.
    node_ptr logical(node_kind kind) {
        bool is_or = kind == node_kind::logical_or;
        std::string_view word = is_or ? "OR" : "AND";
        auto operand = [&]() { return is_or ? logical(node_kind::logical_and) : negation(); };
        auto first = operand();
        if (!first || !is_keyword(word)) return first;
        auto n = make(kind, first->position);
        n->args.push_back(std::move(first));
        while (is_keyword(word)) {
            advance();
            auto next = operand();
            if (!next) return nullptr;
            n->args.push_back(std::move(next));
        }
        return seal(std::move(n));
    }

    node_ptr negation() {
        if (!is_keyword("NOT")) return comparison();
        auto n = make(node_kind::logical_not, cur());
        advance();
        nesting guard(*this);
        if (!guard.ok()) return nullptr;
        auto operand = negation();
        if (!operand) return nullptr;
        n->args.push_back(std::move(operand));
        return seal(std::move(n));
    }

    node_ptr comparison() {
        auto lhs = additive();
        if (!lhs) return nullptr;
        static constexpr std::pair<std::string_view, compare_op> ops[] = {
            {"=", compare_op::eq},  {"!=", compare_op::ne}, {"<>", compare_op::ne},
            {"<", compare_op::lt},  {">", compare_op::gt},  {"<=", compare_op::le},
            {">=", compare_op::ge},
        };
        for (auto [text, op] : ops) {
            if (!is_punct(text)) continue;
            advance();
            auto rhs = additive();
            if (!rhs) return nullptr;
            auto n = make(node_kind::compare, lhs->position);
            n->cmp = op;
            n->args.push_back(std::move(lhs));
            n->args.push_back(std::move(rhs));
            return seal(std::move(n));
        }
        if (is_keyword("IN") || is_keyword("NIN")) {
            bool in = is_keyword("IN");
            std::string word(cur().text);
            advance();
            if (!is_punct("["))
                return fail(word + " expects an array constant such as ['a', 'b'] at position " +
                            where(cur()) + " but found " + describe(cur()));
            auto n = make(in ? node_kind::in : node_kind::nin, lhs->position);
            if (!constant(n->constant)) return nullptr;
            n->args.push_back(std::move(lhs));
            return seal(std::move(n));
        }
        return lhs;
    }

    node_ptr additive() {
        auto lhs = multiplicative();
        while (lhs && (is_punct("+") || is_punct("-"))) {
            arith_op op = is_punct("+") ? arith_op::add : arith_op::sub;
            advance();
            auto rhs = multiplicative();
            if (!rhs) return nullptr;
            lhs = binary(std::move(lhs), op, std::move(rhs));
        }
        return lhs;
    }

    node_ptr multiplicative() {
        auto lhs = unary();
        while (lhs && (is_punct("*") || is_punct("/") || is_punct("%"))) {
            arith_op op = is_punct("*")   ? arith_op::mul
                          : is_punct("/") ? arith_op::div
                                          : arith_op::mod;
            advance();
            auto rhs = unary();
            if (!rhs) return nullptr;
            lhs = binary(std::move(lhs), op, std::move(rhs));
        }
        return lhs;
    }

    node_ptr binary(node_ptr lhs, arith_op op, node_ptr rhs) {
        auto n = make(node_kind::arithmetic, lhs->position);
        n->arith = op;
        n->args.push_back(std::move(lhs));
        n->args.push_back(std::move(rhs));
        return seal(std::move(n));
    }

    node_ptr unary() {
        if (!is_punct("-")) return primary();
        const token& minus = cur();
        advance();
        nesting guard(*this);
        if (!guard.ok()) return nullptr;
        auto operand = unary();
        if (!operand) return nullptr;
        // Fold `-5` so negative constants cost nothing and count as constants.
        if (operand->kind == node_kind::constant && operand->constant.is_number()) {
            auto v = negated(operand->constant);
            if (v) {
                operand->constant = std::move(*v);
                operand->position = char_position(text_, minus.offset);
                return operand;
            }
        }
        auto n = make(node_kind::negate, minus);
        n->args.push_back(std::move(operand));
        return seal(std::move(n));
    }

    node_ptr primary() {
        const token& t = cur();
        switch (t.kind) {
            case token_kind::number:
            case token_kind::string: {
                auto n = make(node_kind::constant, t);
                n->constant = t.literal;
                advance();
                return n;
            }
            case token_kind::punct: {
                if (t.text == "(") {
                    advance();
                    auto inner = expression();
                    if (!inner) return nullptr;
                    if (!expect_punct(")", "')'")) return nullptr;
                    return inner;
                }
                if (t.text == "[" || t.text == "{") {
                    auto n = make(node_kind::constant, t);
                    if (!constant(n->constant)) return nullptr;
                    return n;
                }
                return expected("an expression");
            }
            case token_kind::identifier:
                break;
            case token_kind::end:
                return expected("an expression");
        }
        if (is_keyword("true") || is_keyword("false") || is_keyword("null")) {
            auto n = make(node_kind::constant, t);
            if (!is_keyword("null")) n->constant = is_keyword("true");
            advance();
            return n;
        }
        if (is_keyword("undefined")) {
            auto n = make(node_kind::undefined, t);
            advance();
            return n;
        }
        if (is_reserved(t.text)) return expected("an expression");
        if (peek(1).kind == token_kind::punct && peek(1).text == "(") return call();
        auto n = make(node_kind::path, t);
        if (!path_steps(n->steps)) return nullptr;
        return n;
    }

    node_ptr call() {
        const token& name = cur();
        std::size_t position = char_position(text_, name.offset);
        auto agg = find_aggregate(name.text);
        const function_def* fn = agg ? nullptr : find_function(name.text);
        if (!agg && !fn)
            return fail("Unknown function '" + std::string(name.text) + "' at position " +
                        where(name));
        std::string canonical(agg ? aggregate_name(*agg) : fn->name);
        if (agg && clause_ == clause::where)
            return fail("Aggregate function " + canonical + " is not allowed in WHERE (position " +
                        where(name) + ")");
        if (agg && inside_aggregate_)
            return fail("Aggregate function " + canonical +
                        " cannot be used inside another aggregate (position " + where(name) + ")");
        advance();  // name
        advance();  // (
        auto n = make(agg ? node_kind::aggregate : node_kind::call, position);
        if (agg && *agg == aggregate_kind::count && is_punct("*") &&
            peek(1).kind == token_kind::punct && peek(1).text == ")")
            advance();
        if (!is_punct(")")) {
            bool outer = inside_aggregate_;
            inside_aggregate_ = inside_aggregate_ || agg.has_value();
            while (true) {
                auto arg = expression();
                if (!arg) return nullptr;
                n->args.push_back(std::move(arg));
                if (!is_punct(",")) break;
                advance();
            }
            inside_aggregate_ = outer;
        }
        if (!expect_punct(")", "',' or ')'")) return nullptr;
        std::size_t lo = fn ? fn->min_args : (*agg == aggregate_kind::count ? 0 : 1);
        std::size_t hi = fn ? fn->max_args : 1;
        std::size_t got = n->args.size();
        if (got < lo || got > hi) {
            std::string takes = lo == hi ? std::to_string(lo)
                                : hi == any_number_of_args
                                    ? "at least " + std::to_string(lo)
                                    : std::to_string(lo) + " to " + std::to_string(hi);
            return fail("Function " + canonical + " takes " + takes +
                        (lo == 1 && hi == 1 ? " argument" : " arguments") + " but was given " +
                        std::to_string(got) + " at position " + std::to_string(position));
        }
        if (agg) {
            n->agg = *agg;
            n->slot = aggregate_count_++;
        } else {
            n->fn = fn;
        }
        return seal(std::move(n));
    }

    // name ( .name | ['name'] | [index] )*, starting at an identifier.
    bool path_steps(path& steps) {
        steps.push_back(segment{std::string(cur().text)});
        advance();
        while (true) {
            if (is_punct(".")) {
                advance();
                if (cur().kind != token_kind::identifier)
                    return expected("a property name after '.'"), false;
                steps.push_back(segment{std::string(cur().text)});
                advance();
            } else if (is_punct("[")) {
                advance();
                const token& t = cur();
                if (t.kind == token_kind::string) {
                    steps.push_back(segment{std::string(t.literal.get_string())});
                } else if (t.kind == token_kind::number &&
                           (t.literal.is_uint64() ||
                            (t.literal.is_int64() && t.literal.get_int64() >= 0))) {
                    segment s;
                    s.is_index = true;
                    s.index = t.literal.is_int64()
                                  ? static_cast<std::size_t>(t.literal.get_int64())
                                  : static_cast<std::size_t>(t.literal.get_uint64());
                    steps.push_back(std::move(s));
                } else {
                    return expected("a quoted property name or an array index"), false;
                }
                advance();
                if (!expect_punct("]", "']'")) return false;
            } else {
                return true;
            }
        }
    }

    // A constant: string, number (optionally negated), true/false/null, or an array or object of
    // constants.
    bool constant(json::value& out) {
        const token& t = cur();
        if (t.kind == token_kind::string || t.kind == token_kind::number) {
            out = t.literal;
            advance();
            return true;
        }
        if (is_punct("-") && peek(1).kind == token_kind::number) {
            auto v = negated(peek(1).literal);
            if (!v) return expected("a constant"), false;
            out = std::move(*v);
            advance();
            advance();
            return true;
        }
        if (is_keyword("true") || is_keyword("false") || is_keyword("null")) {
            out = nullptr;
            if (!is_keyword("null")) out = is_keyword("true");
            advance();
            return true;
        }
        if (is_punct("[")) {
            nesting guard(*this);
            if (!guard.ok()) return false;
            advance();
            json::array items;
            if (!is_punct("]")) {
                while (true) {
                    json::value v;
                    if (!constant(v)) return false;
                    items.push_back(std::move(v));
                    if (!is_punct(",")) break;
                    advance();
                }
            }
            if (!expect_punct("]", "',' or ']'")) return false;
            out = std::move(items);
            return true;
        }
        if (is_punct("{")) {
            nesting guard(*this);
            if (!guard.ok()) return false;
            advance();
            json::object members;
            if (!is_punct("}")) {
                while (true) {
                    const token& key = cur();
                    if (key.kind != token_kind::string && key.kind != token_kind::identifier)
                        return expected("a property name"), false;
                    std::string name = key.kind == token_kind::string
                                           ? std::string(key.literal.get_string())
                                           : std::string(key.text);
                    advance();
                    if (!expect_punct(":", "':'")) return false;
                    json::value v;
                    if (!constant(v)) return false;
                    members[name] = std::move(v);
                    if (!is_punct(",")) break;
                    advance();
                }
            }
            if (!expect_punct("}", "',' or '}'")) return false;
            out = std::move(members);
            return true;
        }
        return expected("a constant"), false;
    }

    // --- Checks on the whole statement ---

    template <class F>
    static void each_node(node& n, F&& f) {
        f(n);
        for (auto& a : n.args) each_node(*a, f);
    }

    static void collect_aggregates(const node& n, std::vector<const node*>& out) {
        if (n.kind == node_kind::aggregate) out[n.slot] = &n;
        for (const auto& a : n.args) collect_aggregates(*a, out);
    }

    // Paths outside aggregates, in a grouped SELECT, must be GROUP BY keys; they are bound to
    // their key here.
    bool bind_group_keys(node& n, const plan& p) {
        if (n.kind == node_kind::aggregate) return true;
        if (n.kind == node_kind::path) {
            auto key = std::find(p.group_by.begin(), p.group_by.end(), n.steps);
            if (key == p.group_by.end()) {
                fail("'" + to_string(n.steps) + "' at position " + std::to_string(n.position) +
                     (p.group_by.empty()
                          ? " must be inside an aggregate function when others are"
                          : " must be a GROUP BY key or inside an aggregate function"));
                return false;
            }
            n.slot = static_cast<std::size_t>(key - p.group_by.begin());
            return true;
        }
        for (auto& a : n.args)
            if (!bind_group_keys(*a, p)) return false;
        return true;
    }

    bool validate(plan& p) {
        if (p.from == collection::jobs) {
            auto strip = [](path& steps) {
                if (steps.size() > 2 && !steps[0].is_index && !steps[1].is_index &&
                    steps[0].name == "devices" && steps[1].name == "jobs")
                    steps.erase(steps.begin(), steps.begin() + 2);
            };
            auto strip_node = [&](node& n) {
                if (n.kind == node_kind::path) strip(n.steps);
            };
            if (p.where) each_node(*p.where, strip_node);
            for (auto& item : p.items) each_node(*item.expr, strip_node);
            for (auto& g : p.group_by) strip(g);
        }
        if (p.star && !p.group_by.empty())
            return fail("SELECT * cannot be used with GROUP BY; select the keys and aggregates"),
                   false;
        p.aggregates = aggregate_count_ > 0 || !p.group_by.empty();
        p.aggregate_nodes.assign(aggregate_count_, nullptr);
        for (auto& item : p.items) {
            collect_aggregates(*item.expr, p.aggregate_nodes);
            if (p.aggregates && !bind_group_keys(*item.expr, p)) return false;
        }
        std::size_t unnamed = 0;
        std::set<std::string> names;
        for (auto& item : p.items) {
            const node& e = *item.expr;
            if (item.name.empty()) {
                if (e.kind == node_kind::path && !e.steps.back().is_index)
                    item.name = e.steps.back().name;
                else
                    item.name = "$" + std::to_string(++unnamed);
            }
            if (!names.insert(item.name).second)
                return fail("Duplicate output name '" + item.name + "' at position " +
                            std::to_string(e.position) + "; use AS to name it differently"),
                       false;
        }
        return true;
    }

    enum class clause : std::uint8_t { select, where };

    std::string_view text_;
    std::vector<token> toks_;
    std::size_t at_ = 0;
    std::size_t depth_ = 0;
    clause clause_ = clause::select;
    bool inside_aggregate_ = false;
    std::size_t aggregate_count_ = 0;
    std::optional<error> err_;
};

}  // namespace

std::string to_string(const path& p) {
    std::string out;
    for (const auto& s : p) {
        if (s.is_index) {
            out += "[" + std::to_string(s.index) + "]";
        } else if (plain_identifier(s.name)) {
            if (!out.empty()) out += '.';
            out += s.name;
        } else {
            out += "['";
            for (char c : s.name) {
                if (c == '\'' || c == '\\') out += '\\';
                out += c;
            }
            out += "']";
        }
    }
    return out;
}

}  // namespace iothub::query::detail

namespace iothub::query {

namespace {
result<std::shared_ptr<detail::plan>> parse_plan(std::string_view text, bool condition) {
    // Characters, as Azure counts them; bytes would refuse shorter non-ASCII queries.
    std::size_t length = detail::char_position(text, text.size()) - 1;
    if (length > max_query_length)
        return error(errc::argument_invalid, "Query is longer than " +
                                                 std::to_string(max_query_length) +
                                                 " characters (" + std::to_string(length) + ")");
    auto tokens = detail::tokenize(text);
    if (!tokens) return tokens.error();
    detail::parser parser(text, std::move(*tokens));
    return condition ? parser.run_condition() : parser.run();
}
}  // namespace

result<statement> parse(std::string_view text) {
    auto p = parse_plan(text, false);
    if (!p) return p.error();
    return statement(std::move(*p));
}

result<condition> parse_condition(std::string_view text) {
    auto p = parse_plan(text, true);
    if (!p) return p.error();
    return condition(std::move(*p));
}

}  // namespace iothub::query
