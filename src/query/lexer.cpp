#include "query/lexer.hpp"

#include "query/ast.hpp"

#include <charconv>
#include <cmath>
#include <limits>

namespace iothub::query::detail {
namespace json = boost::json;
namespace {

bool is_digit(char c) {
    return c >= '0' && c <= '9';
}
bool is_alpha(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}
bool identifier_start(char c) {
    return is_alpha(c) || c == '_' || c == '$';
}
bool identifier_part(char c) {
    return identifier_start(c) || is_digit(c);
}

int hex_digit(char c) {
    if (is_digit(c)) return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

bool continuation(unsigned char c) {
    return (c & 0xC0) == 0x80;
}

// The offset of the first byte that is not well-formed UTF-8, or npos. Queries normally arrive
// inside a JSON body that was already validated; this keeps string constants valid regardless.
std::size_t invalid_utf8(std::string_view s) {
    std::size_t i = 0;
    while (i < s.size()) {
        auto c = static_cast<unsigned char>(s[i]);
        std::size_t len = 0;
        std::uint32_t cp = 0;
        if (c < 0x80) {
            ++i;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            len = 2;
            cp = c & 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            len = 3;
            cp = c & 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            len = 4;
            cp = c & 0x07;
        } else {
            return i;
        }
        if (i + len > s.size()) return i;
        for (std::size_t k = 1; k < len; ++k) {
            auto b = static_cast<unsigned char>(s[i + k]);
            if (!continuation(b)) return i;
            cp = (cp << 6) | (b & 0x3F);
        }
        bool overlong =
            (len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000);
        if (overlong || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
        i += len;
    }
    return std::string_view::npos;
}

void append_utf8(std::string& out, std::uint32_t cp) {
    if (cp < 0x80) {
        out += static_cast<char>(cp);
    } else if (cp < 0x800) {
        out += static_cast<char>(0xC0 | (cp >> 6));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        out += static_cast<char>(0xE0 | (cp >> 12));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
        out += static_cast<char>(0xF0 | (cp >> 18));
        out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    }
}

class lexer {
  public:
    explicit lexer(std::string_view text) : text_(text) {}

    result<std::vector<token>> run() {
        std::vector<token> out;
        while (true) {
            skip_space();
            token t;
            t.offset = i_;
            if (i_ == text_.size()) {
                out.push_back(std::move(t));
                return out;
            }
            char c = text_[i_];
            result<void> r;
            if (identifier_start(c)) {
                identifier(t);
            } else if (is_digit(c)) {
                r = number(t);
            } else if (c == '\'' || c == '"') {
                r = string(t);
            } else {
                r = punct(t);
            }
            if (!r) return r.error();
            out.push_back(std::move(t));
        }
    }

  private:
    error invalid(std::string what, std::size_t offset) const {
        return error(errc::argument_invalid,
                     what + " at position " + std::to_string(char_position(text_, offset)));
    }

    void skip_space() {
        while (i_ < text_.size() &&
               (text_[i_] == ' ' || text_[i_] == '\t' || text_[i_] == '\r' || text_[i_] == '\n'))
            ++i_;
    }

    void identifier(token& t) {
        std::size_t start = i_;
        while (i_ < text_.size() && identifier_part(text_[i_])) ++i_;
        t.kind = token_kind::identifier;
        t.text = text_.substr(start, i_ - start);
    }

    result<void> number(token& t) {
        std::size_t start = i_;
        bool is_hex = text_[i_] == '0' && i_ + 1 < text_.size() &&
                      (text_[i_ + 1] == 'x' || text_[i_ + 1] == 'X');
        bool ok = true;
        bool whole = true;
        if (is_hex) {
            i_ += 2;
            std::size_t digits = i_;
            while (i_ < text_.size() && hex_digit(text_[i_]) >= 0) ++i_;
            ok = i_ > digits;
        } else {
            while (i_ < text_.size() && is_digit(text_[i_])) ++i_;
            if (i_ < text_.size() && text_[i_] == '.') {
                whole = false;
                std::size_t digits = ++i_;
                while (i_ < text_.size() && is_digit(text_[i_])) ++i_;
                ok = i_ > digits;
            }
            if (ok && i_ < text_.size() && (text_[i_] == 'e' || text_[i_] == 'E')) {
                whole = false;
                ++i_;
                if (i_ < text_.size() && (text_[i_] == '+' || text_[i_] == '-')) ++i_;
                std::size_t digits = i_;
                while (i_ < text_.size() && is_digit(text_[i_])) ++i_;
                ok = i_ > digits;
            }
        }
        // `12abc` or `1.2.3` is one bad number, not a number followed by something else.
        if (!ok || (i_ < text_.size() && (identifier_part(text_[i_]) || text_[i_] == '.'))) {
            while (i_ < text_.size() && (identifier_part(text_[i_]) || text_[i_] == '.')) ++i_;
            return invalid("Invalid number '" + std::string(text_.substr(start, i_ - start)) + "'",
                           start);
        }
        t.kind = token_kind::number;
        t.text = text_.substr(start, i_ - start);
        if (is_hex) {
            std::string_view digits = t.text.substr(2);
            std::uint64_t v = 0;
            auto [p, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), v, 16);
            if (ec != std::errc{} || p != digits.data() + digits.size())
                return invalid("Number '" + std::string(t.text) + "' is too large", start);
            if (v <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
                t.literal = static_cast<std::int64_t>(v);
            else
                t.literal = v;
            return {};
        }
        const char* first = t.text.data();
        const char* last = first + t.text.size();
        if (whole) {
            std::int64_t v = 0;
            auto [p, ec] = std::from_chars(first, last, v);
            if (ec == std::errc{} && p == last) {
                t.literal = v;
                return {};
            }
        }
        double d = 0;
        auto [p, ec] = std::from_chars(first, last, d);
        auto v = number_value(d);
        if (ec != std::errc{} || p != last || !v)
            return invalid("Number '" + std::string(t.text) + "' is out of range", start);
        t.literal = *v;
        return {};
    }

    result<void> string(token& t) {
        std::size_t start = i_;
        char quote = text_[i_++];
        std::string out;
        while (true) {
            if (i_ >= text_.size()) return invalid("Unterminated string starting", start);
            char c = text_[i_];
            if (c == quote) {
                ++i_;
                break;
            }
            if (c != '\\') {
                out += c;
                ++i_;
                continue;
            }
            std::size_t escape = i_;
            if (i_ + 1 >= text_.size()) return invalid("Unterminated string starting", start);
            char e = text_[i_ + 1];
            i_ += 2;
            switch (e) {
                case '\'':
                case '"':
                case '\\':
                case '/':
                    out += e;
                    break;
                case 'b':
                    out += '\b';
                    break;
                case 'f':
                    out += '\f';
                    break;
                case 'n':
                    out += '\n';
                    break;
                case 'r':
                    out += '\r';
                    break;
                case 't':
                    out += '\t';
                    break;
                case 'u': {
                    auto cp = unicode_escape();
                    if (!cp) return invalid("Invalid \\u escape in string", escape);
                    append_utf8(out, *cp);
                    break;
                }
                default: {
                    // Name the whole character, even when it is not ASCII.
                    std::size_t len = 1;
                    while (i_ - 1 + len < text_.size() &&
                           continuation(static_cast<unsigned char>(text_[i_ - 1 + len])))
                        ++len;
                    return invalid("Invalid escape sequence '\\" +
                                       std::string(text_.substr(i_ - 1, len)) + "' in string",
                                   escape);
                }
            }
        }
        t.kind = token_kind::string;
        t.text = text_.substr(start, i_ - start);
        t.literal = json::string(out);
        return {};
    }

    // After `\u`: four hex digits, and for a high surrogate the `\uXXXX` of its low half.
    std::optional<std::uint32_t> unicode_escape() {
        auto four = [this]() -> std::optional<std::uint32_t> {
            if (i_ + 4 > text_.size()) return std::nullopt;
            std::uint32_t v = 0;
            for (int k = 0; k < 4; ++k) {
                int d = hex_digit(text_[i_ + k]);
                if (d < 0) return std::nullopt;
                v = v * 16 + static_cast<std::uint32_t>(d);
            }
            i_ += 4;
            return v;
        };
        auto hi = four();
        if (!hi) return std::nullopt;
        if (*hi >= 0xDC00 && *hi <= 0xDFFF) return std::nullopt;
        if (*hi < 0xD800 || *hi > 0xDBFF) return hi;
        if (i_ + 2 > text_.size() || text_[i_] != '\\' || text_[i_ + 1] != 'u') return std::nullopt;
        i_ += 2;
        auto lo = four();
        if (!lo || *lo < 0xDC00 || *lo > 0xDFFF) return std::nullopt;
        return 0x10000 + ((*hi - 0xD800) << 10) + (*lo - 0xDC00);
    }

    result<void> punct(token& t) {
        static constexpr std::string_view two[] = {"!=", "<>", "<=", ">="};
        static constexpr std::string_view one = ",.()[]{}:*+-/%=<>";
        t.kind = token_kind::punct;
        for (auto p : two) {
            if (text_.substr(i_, 2) == p) {
                t.text = text_.substr(i_, 2);
                i_ += 2;
                return {};
            }
        }
        if (one.find(text_[i_]) != std::string_view::npos) {
            t.text = text_.substr(i_++, 1);
            return {};
        }
        std::size_t len = 1;
        while (i_ + len < text_.size() && continuation(static_cast<unsigned char>(text_[i_ + len])))
            ++len;
        return invalid("Unexpected character '" + std::string(text_.substr(i_, len)) + "'", i_);
    }

    std::string_view text_;
    std::size_t i_ = 0;
};

}  // namespace

std::optional<json::value> number_value(double d) {
    if (!std::isfinite(d)) return std::nullopt;
    constexpr double exact = 9007199254740992.0;  // 2^53
    if (d == std::trunc(d) && std::fabs(d) <= exact)
        return json::value(static_cast<std::int64_t>(d));
    return json::value(d);
}

std::size_t char_position(std::string_view text, std::size_t offset) {
    std::size_t chars = 1;
    for (std::size_t i = 0; i < offset && i < text.size(); ++i)
        if (!continuation(static_cast<unsigned char>(text[i]))) ++chars;
    return chars;
}

std::string describe(const token& t) {
    if (t.kind == token_kind::end) return "end of query";
    // A string constant is shown as written, quotes and all.
    std::string_view quote = t.kind == token_kind::string ? "" : "'";
    constexpr std::size_t longest = 40;
    if (t.text.size() <= longest)
        return std::string(quote) + std::string(t.text) + std::string(quote);
    std::size_t cut = longest;
    while (cut > 0 && continuation(static_cast<unsigned char>(t.text[cut]))) --cut;
    return std::string(quote) + std::string(t.text.substr(0, cut)) + "..." + std::string(quote);
}

result<std::vector<token>> tokenize(std::string_view text) {
    if (auto bad = invalid_utf8(text); bad != std::string_view::npos)
        return error(errc::argument_invalid, "Query is not valid UTF-8 at position " +
                                                 std::to_string(char_position(text, bad)));
    return lexer(text).run();
}

}  // namespace iothub::query::detail
