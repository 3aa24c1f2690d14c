#include "query/eval.hpp"

#include "common/encoding.hpp"

#include <array>
#include <charconv>
#include <cmath>
#include <limits>

namespace iothub::query::detail {
namespace json = boost::json;
namespace {

std::optional<double> as_double(const json::value& v) {
    switch (v.kind()) {
        case json::kind::int64:
            return static_cast<double>(v.get_int64());
        case json::kind::uint64:
            return static_cast<double>(v.get_uint64());
        case json::kind::double_:
            return v.get_double();
        default:
            return std::nullopt;
    }
}

// Integers are compared and added exactly, so ids and counters beyond 2^53 keep their identity.
std::optional<std::int64_t> as_int(const json::value& v) {
    if (v.is_int64()) return v.get_int64();
    if (v.is_uint64() &&
        v.get_uint64() <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
        return static_cast<std::int64_t>(v.get_uint64());
    return std::nullopt;
}

// -1, 0 or 1; both must be numbers.
int number_order(const json::value& a, const json::value& b) {
    auto ai = as_int(a);
    auto bi = as_int(b);
    if (ai && bi) return (*ai > *bi) - (*ai < *bi);
    double x = *as_double(a);
    double y = *as_double(b);
    return (x > y) - (x < y);
}

value boolean(bool b) {
    // Every comparison makes one: borrowed, it costs no JSON value.
    static const json::value yes(true), no(false);
    return value::borrow(b ? yes : no);
}
value number(double d) {
    return value::own(number_value(d));
}
value integer(std::int64_t i) {
    return value::own(json::value(i));
}

const json::string* string_of(const value& v) {
    return v.defined() && v.get().is_string() ? &v.get().get_string() : nullptr;
}
std::optional<double> number_of(const value& v) {
    return v.defined() ? as_double(v.get()) : std::nullopt;
}
// Only Booleans have a truth value; everything else is unknown to AND, OR and NOT.
std::optional<bool> truth(const value& v) {
    if (v.defined() && v.get().is_bool()) return v.get().get_bool();
    return std::nullopt;
}

// Comparisons are defined between primitives of one type only, as Azure documents; the rest is
// undefined rather than false so that NOT cannot turn a type mismatch into a match. Booleans and
// null have equality but no order.
value compare(const value& a, const value& b, compare_op op) {
    if (!a.defined() || !b.defined()) return {};
    const json::value& x = a.get();
    const json::value& y = b.get();
    int order = 0;
    bool ordered = true;
    if (x.is_number() && y.is_number()) {
        order = number_order(x, y);
    } else if (x.is_string() && y.is_string()) {
        // Byte order of UTF-8 is code point order.
        int c = std::string_view(x.get_string()).compare(std::string_view(y.get_string()));
        order = (c > 0) - (c < 0);
    } else if (x.is_bool() && y.is_bool()) {
        order = x.get_bool() == y.get_bool() ? 0 : 1;
        ordered = false;
    } else if (x.is_null() && y.is_null()) {
        ordered = false;
    } else {
        return {};
    }
    switch (op) {
        case compare_op::eq:
            return boolean(order == 0);
        case compare_op::ne:
            return boolean(order != 0);
        default:
            break;
    }
    if (!ordered) return {};
    switch (op) {
        case compare_op::lt:
            return boolean(order < 0);
        case compare_op::gt:
            return boolean(order > 0);
        case compare_op::le:
            return boolean(order <= 0);
        default:
            return boolean(order >= 0);
    }
}

value arithmetic(const value& a, const value& b, arith_op op) {
    if (!a.defined() || !b.defined()) return {};
    const json::value& x = a.get();
    const json::value& y = b.get();
    if (!x.is_number() || !y.is_number()) return {};
    auto xi = as_int(x);
    auto yi = as_int(y);
    if (xi && yi) {
        std::int64_t r = 0;
        switch (op) {
            case arith_op::add:
                if (!__builtin_add_overflow(*xi, *yi, &r)) return integer(r);
                break;
            case arith_op::sub:
                if (!__builtin_sub_overflow(*xi, *yi, &r)) return integer(r);
                break;
            case arith_op::mul:
                if (!__builtin_mul_overflow(*xi, *yi, &r)) return integer(r);
                break;
            case arith_op::mod:
                if (*yi == 0) return {};
                // INT64_MIN % -1 traps on x86; the answer is 0 anyway.
                return integer(*yi == -1 ? 0 : *xi % *yi);
            case arith_op::div:
                break;
        }
    }
    double dx = *as_double(x);
    double dy = *as_double(y);
    switch (op) {
        case arith_op::add:
            return number(dx + dy);
        case arith_op::sub:
            return number(dx - dy);
        case arith_op::mul:
            return number(dx * dy);
        case arith_op::div:
            if (dy == 0) return {};
            return number(dx / dy);
        case arith_op::mod:
            if (dy == 0) return {};
            return number(std::fmod(dx, dy));
    }
    return {};
}

// String functions count characters as Unicode code points (Azure, being .NET, counts UTF-16
// units; the two differ only outside the Basic Multilingual Plane).
bool continuation(char c) {
    return (static_cast<unsigned char>(c) & 0xC0) == 0x80;
}

std::size_t char_count(std::string_view s) {
    std::size_t n = 0;
    for (char c : s)
        if (!continuation(c)) ++n;
    return n;
}

// Byte offset of character `n`, or s.size() past the end.
std::size_t char_offset(std::string_view s, std::size_t n) {
    std::size_t seen = 0;
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (continuation(s[i])) continue;
        if (seen == n) return i;
        ++seen;
    }
    return s.size();
}

// --- Type checks: defined for every input, undefined included. ---

value is_defined(std::span<const value> a) {
    return boolean(a[0].defined());
}
value is_null(std::span<const value> a) {
    return boolean(a[0].defined() && a[0].get().is_null());
}
value is_bool(std::span<const value> a) {
    return boolean(a[0].defined() && a[0].get().is_bool());
}
value is_number(std::span<const value> a) {
    return boolean(a[0].defined() && a[0].get().is_number());
}
value is_string(std::span<const value> a) {
    return boolean(a[0].defined() && a[0].get().is_string());
}
value is_object(std::span<const value> a) {
    return boolean(a[0].defined() && a[0].get().is_object());
}
value is_array(std::span<const value> a) {
    return boolean(a[0].defined() && a[0].get().is_array());
}
value is_primitive(std::span<const value> a) {
    return boolean(a[0].defined() && !a[0].get().is_object() && !a[0].get().is_array());
}

// --- String functions: undefined unless every argument has the expected type. ---

value starts_with(std::span<const value> a) {
    auto s = string_of(a[0]);
    auto p = string_of(a[1]);
    if (!s || !p) return {};
    return boolean(std::string_view(*s).starts_with(std::string_view(*p)));
}
value ends_with(std::span<const value> a) {
    auto s = string_of(a[0]);
    auto p = string_of(a[1]);
    if (!s || !p) return {};
    return boolean(std::string_view(*s).ends_with(std::string_view(*p)));
}
value contains(std::span<const value> a) {
    auto s = string_of(a[0]);
    auto p = string_of(a[1]);
    if (!s || !p) return {};
    return boolean(std::string_view(*s).find(std::string_view(*p)) != std::string_view::npos);
}

// ASCII only: case mapping beyond it depends on a locale Azure does not document.
value lower(std::span<const value> a) {
    auto s = string_of(a[0]);
    if (!s) return {};
    std::string out(*s);
    for (char& c : out)
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    return value::own(json::value(out));
}
value upper(std::span<const value> a) {
    auto s = string_of(a[0]);
    if (!s) return {};
    std::string out(*s);
    for (char& c : out)
        if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
    return value::own(json::value(out));
}
value length(std::span<const value> a) {
    auto s = string_of(a[0]);
    if (!s) return {};
    return integer(static_cast<std::int64_t>(char_count(*s)));
}
value concat(std::span<const value> a) {
    std::string out;
    for (const auto& v : a) {
        auto s = string_of(v);
        if (!s) return {};
        out += std::string_view(*s);
    }
    return value::own(json::value(out));
}

// A character count from a number argument: fractions are truncated, negatives clamp to 0.
std::size_t count_argument(double d, std::size_t limit) {
    if (!(d > 0)) return 0;
    double t = std::trunc(d);
    return t >= static_cast<double>(limit) ? limit : static_cast<std::size_t>(t);
}

// SUBSTRING(s, start[, length]) with a zero-based start; a start before 0 counts from 0 and one
// past the end, or a negative length, gives "".
value substring(std::span<const value> a) {
    auto s = string_of(a[0]);
    auto start = number_of(a[1]);
    if (!s || !start) return {};
    std::string_view text(*s);
    std::size_t chars = char_count(text);
    std::size_t from = count_argument(*start, chars);
    std::size_t len = chars - from;
    if (a.size() > 2) {
        auto l = number_of(a[2]);
        if (!l) return {};
        len = count_argument(*l, len);
    }
    std::size_t begin = char_offset(text, from);
    std::size_t end = char_offset(text, from + len);
    return value::own(json::value(text.substr(begin, end - begin)));
}
value index_of(std::span<const value> a) {
    auto s = string_of(a[0]);
    auto f = string_of(a[1]);
    if (!s || !f) return {};
    std::string_view text(*s);
    auto at = text.find(std::string_view(*f));
    if (at == std::string_view::npos) return integer(-1);
    return integer(static_cast<std::int64_t>(char_count(text.substr(0, at))));
}

// --- Math: undefined for non-numbers and for results JSON cannot hold (NaN, infinity). ---

template <double (*F)(double)>
value math1(std::span<const value> a) {
    auto d = number_of(a[0]);
    if (!d) return {};
    return number(F(*d));
}
double square_of(double d) {
    return d * d;
}
double sign_of(double d) {
    return (d > 0) - (d < 0);
}
// Half away from zero, as .NET's MidpointRounding.AwayFromZero and C's round().
double round_of(double d) {
    return std::round(d);
}
double abs_of(double d) {
    return std::fabs(d);
}
double ceil_of(double d) {
    return std::ceil(d);
}
double floor_of(double d) {
    return std::floor(d);
}
double sqrt_of(double d) {
    return std::sqrt(d);
}
double exp_of(double d) {
    return std::exp(d);
}

value power(std::span<const value> a) {
    auto x = number_of(a[0]);
    auto y = number_of(a[1]);
    if (!x || !y) return {};
    return number(std::pow(*x, *y));
}

// A number stays as it is; a string must be a number in JSON's decimal form (optional minus,
// digits, fraction, exponent) and nothing else; anything else is undefined.
value as_number(std::span<const value> a) {
    if (!a[0].defined()) return {};
    const json::value& v = a[0].get();
    if (v.is_number()) return a[0];
    if (!v.is_string()) return {};
    std::string_view s(v.get_string());
    std::size_t digits = !s.empty() && s[0] == '-' ? 1 : 0;
    if (digits >= s.size() || s[digits] < '0' || s[digits] > '9') return {};
    const char* last = s.data() + s.size();
    if (s.find_first_of(".eE") == std::string_view::npos) {
        std::int64_t i = 0;
        auto [p, ec] = std::from_chars(s.data(), last, i);
        if (ec == std::errc{} && p == last) return integer(i);
    }
    double d = 0;
    auto [p, ec] = std::from_chars(s.data(), last, d);
    if (ec != std::errc{} || p != last) return {};
    return number(d);
}

constexpr std::size_t many = any_number_of_args;
constexpr std::array functions = {
    function_def{"IS_DEFINED", 1, 1, &is_defined},
    function_def{"IS_NULL", 1, 1, &is_null},
    function_def{"IS_BOOL", 1, 1, &is_bool},
    function_def{"IS_NUMBER", 1, 1, &is_number},
    function_def{"IS_STRING", 1, 1, &is_string},
    function_def{"IS_OBJECT", 1, 1, &is_object},
    function_def{"IS_ARRAY", 1, 1, &is_array},
    function_def{"IS_PRIMITIVE", 1, 1, &is_primitive},
    function_def{"STARTS_WITH", 2, 2, &starts_with},
    function_def{"STARTSWITH", 2, 2, &starts_with},
    function_def{"ENDS_WITH", 2, 2, &ends_with},
    function_def{"ENDSWITH", 2, 2, &ends_with},
    function_def{"CONTAINS", 2, 2, &contains},
    function_def{"LOWER", 1, 1, &lower},
    function_def{"UPPER", 1, 1, &upper},
    function_def{"LENGTH", 1, 1, &length},
    function_def{"CONCAT", 2, many, &concat},
    function_def{"SUBSTRING", 2, 3, &substring},
    function_def{"INDEX_OF", 2, 2, &index_of},
    function_def{"ABS", 1, 1, &math1<abs_of>},
    function_def{"CEILING", 1, 1, &math1<ceil_of>},
    function_def{"FLOOR", 1, 1, &math1<floor_of>},
    function_def{"ROUND", 1, 1, &math1<round_of>},
    function_def{"SQUARE", 1, 1, &math1<square_of>},
    function_def{"SQRT", 1, 1, &math1<sqrt_of>},
    function_def{"SIGN", 1, 1, &math1<sign_of>},
    function_def{"EXP", 1, 1, &math1<exp_of>},
    function_def{"POWER", 2, 2, &power},
    function_def{"AS_NUMBER", 1, 1, &as_number},
};

struct aggregate_def {
    std::string_view name;
    aggregate_kind kind;
};
constexpr std::array aggregates = {
    aggregate_def{"COUNT", aggregate_kind::count}, aggregate_def{"SUM", aggregate_kind::sum},
    aggregate_def{"AVG", aggregate_kind::avg},     aggregate_def{"MIN", aggregate_kind::min},
    aggregate_def{"MAX", aggregate_kind::max},
};

value in_list(const node& n, const scope& s) {
    value v = evaluate(*n.args[0], s);
    if (!v.defined()) return {};
    bool found = false;
    for (const auto& item : n.constant.get_array()) {
        if (truth(compare(v, value::borrow(item), compare_op::eq)) == true) {
            found = true;
            break;
        }
    }
    return boolean(n.kind == node_kind::in ? found : !found);
}

}  // namespace

const function_def* find_function(std::string_view name) {
    for (const auto& f : functions)
        if (iequals(f.name, name)) return &f;
    return nullptr;
}

std::optional<aggregate_kind> find_aggregate(std::string_view name) {
    for (const auto& a : aggregates)
        if (iequals(a.name, name)) return a.kind;
    return std::nullopt;
}

std::string_view aggregate_name(aggregate_kind k) {
    for (const auto& a : aggregates)
        if (a.kind == k) return a.name;
    return "COUNT";
}

namespace {
// An exact match first (the common case, and the only one when names differ only in case is
// ambiguous), then the first name equal ignoring ASCII case.
const json::value* member(const json::object& o, std::string_view name, bool ignore_case) {
    if (auto it = o.find(name); it != o.end()) return &it->value();
    if (!ignore_case) return nullptr;
    for (const auto& kv : o)
        if (iequals(kv.key(), name)) return &kv.value();
    return nullptr;
}
}  // namespace

value lookup(const json::object& row, const path& p, bool ignore_case) {
    if (p.empty() || p.front().is_index) return {};
    const json::value* at = member(row, p.front().name, ignore_case);
    if (!at) return {};
    for (std::size_t i = 1; i < p.size(); ++i) {
        const segment& s = p[i];
        if (s.is_index) {
            if (!at->is_array() || s.index >= at->get_array().size()) return {};
            at = &at->get_array()[s.index];
        } else {
            if (!at->is_object()) return {};
            at = member(at->get_object(), s.name, ignore_case);
            if (!at) return {};
        }
    }
    return value::borrow(*at);
}

value evaluate(const node& n, const scope& s) {
    switch (n.kind) {
        case node_kind::constant:
            return value::borrow(n.constant);
        case node_kind::undefined:
            return {};
        case node_kind::path:
            if (s.keys) {
                if (n.slot >= s.keys->size() || !(*s.keys)[n.slot].defined()) return {};
                return value::borrow((*s.keys)[n.slot].get());
            }
            return s.row ? lookup(*s.row, n.steps, s.ignore_case) : value();
        case node_kind::negate: {
            value v = evaluate(*n.args[0], s);
            if (!v.defined() || !v.get().is_number()) return {};
            auto i = as_int(v.get());
            if (i && *i != std::numeric_limits<std::int64_t>::min()) return integer(-*i);
            return number(-*as_double(v.get()));
        }
        case node_kind::logical_not: {
            auto t = truth(evaluate(*n.args[0], s));
            if (!t) return {};
            return boolean(!*t);
        }
        case node_kind::logical_and:
        case node_kind::logical_or: {
            // Three-valued: a deciding operand wins even when another is unknown.
            bool decider = n.kind == node_kind::logical_or;
            bool unknown = false;
            for (const auto& a : n.args) {
                auto t = truth(evaluate(*a, s));
                if (!t)
                    unknown = true;
                else if (*t == decider)
                    return boolean(decider);
            }
            if (unknown) return {};
            return boolean(!decider);
        }
        case node_kind::compare:
            return compare(evaluate(*n.args[0], s), evaluate(*n.args[1], s), n.cmp);
        case node_kind::arithmetic:
            return arithmetic(evaluate(*n.args[0], s), evaluate(*n.args[1], s), n.arith);
        case node_kind::in:
        case node_kind::nin:
            return in_list(n, s);
        case node_kind::call: {
            // Routes call functions per message: the usual few arguments stay off the heap.
            constexpr std::size_t inline_args = 4;
            if (n.args.size() <= inline_args) {
                std::array<value, inline_args> args;
                for (std::size_t i = 0; i < n.args.size(); ++i) args[i] = evaluate(*n.args[i], s);
                return n.fn->call(std::span<const value>(args.data(), n.args.size()));
            }
            std::vector<value> args;
            args.reserve(n.args.size());
            for (const auto& a : n.args) args.push_back(evaluate(*a, s));
            return n.fn->call(args);
        }
        case node_kind::aggregate:
            if (!s.aggregates || n.slot >= s.aggregates->size() ||
                !(*s.aggregates)[n.slot].defined())
                return {};
            return value::borrow((*s.aggregates)[n.slot].get());
    }
    return {};
}

// SUM and AVG skip what is not a number (a device that never reported the property, or reported
// it as a string). MIN and MAX order numbers before strings, as Azure's engine orders types, and
// skip the other types.
void accumulator::add(aggregate_kind k, bool has_argument, const value& v) {
    switch (k) {
        case aggregate_kind::count:
            if (!has_argument || v.defined()) ++count_;
            return;
        case aggregate_kind::sum:
        case aggregate_kind::avg: {
            if (!v.defined() || !v.get().is_number()) return;
            ++count_;
            sum_ += *as_double(v.get());
            if (int_exact_) {
                auto i = as_int(v.get());
                if (!i || __builtin_add_overflow(int_sum_, *i, &int_sum_)) int_exact_ = false;
            }
            return;
        }
        case aggregate_kind::min:
        case aggregate_kind::max: {
            if (!v.defined()) return;
            const json::value& j = v.get();
            int want = k == aggregate_kind::min ? -1 : 1;
            if (j.is_number()) {
                if (!best_number_ || number_order(j, *best_number_) == want) best_number_ = j;
            } else if (j.is_string()) {
                std::string_view sv(j.get_string());
                int c = best_string_ ? sv.compare(*best_string_) : 0;
                if (!best_string_ || (c > 0) - (c < 0) == want) best_string_ = std::string(sv);
            }
            return;
        }
    }
}

// With no numbers seen, SUM is 0 (the sum of nothing) while AVG, MIN and MAX are undefined, so
// their field is left out of the result row.
value accumulator::finish(aggregate_kind k) const {
    switch (k) {
        case aggregate_kind::count:
            return integer(static_cast<std::int64_t>(count_));
        case aggregate_kind::sum:
            if (count_ == 0) return integer(0);
            return int_exact_ ? integer(int_sum_) : number(sum_);
        case aggregate_kind::avg:
            if (count_ == 0) return {};
            return number((int_exact_ ? static_cast<double>(int_sum_) : sum_) /
                          static_cast<double>(count_));
        case aggregate_kind::min:
            if (best_number_) return value::own(*best_number_);
            if (best_string_) return value::own(json::value(*best_string_));
            return {};
        case aggregate_kind::max:
            if (best_string_) return value::own(json::value(*best_string_));
            if (best_number_) return value::own(*best_number_);
            return {};
    }
    return {};
}

}  // namespace iothub::query::detail
