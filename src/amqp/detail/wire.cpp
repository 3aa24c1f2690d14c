#include "amqp/detail/wire.hpp"

#include <algorithm>

namespace iothub::amqp::detail {

std::uint32_t read_u32(std::string_view s, std::size_t at) {
    return (std::uint32_t(std::uint8_t(s[at])) << 24) |
           (std::uint32_t(std::uint8_t(s[at + 1])) << 16) |
           (std::uint32_t(std::uint8_t(s[at + 2])) << 8) | std::uint32_t(std::uint8_t(s[at + 3]));
}

void put_u32(std::string& out, std::uint32_t v) {
    out.push_back(char(v >> 24));
    out.push_back(char(v >> 16));
    out.push_back(char(v >> 8));
    out.push_back(char(v));
}

std::optional<std::size_t> skip_value(std::string_view s, std::size_t at, int depth) {
    if (at >= s.size() || depth > 32) return std::nullopt;
    const auto code = std::uint8_t(s[at]);
    auto fixed = [&](std::size_t n) -> std::optional<std::size_t> {
        return at + 1 + n <= s.size() ? std::optional(at + 1 + n) : std::nullopt;
    };
    auto sized = [&](std::size_t width) -> std::optional<std::size_t> {
        if (at + 1 + width > s.size()) return std::nullopt;
        std::size_t n = width == 1 ? std::uint8_t(s[at + 1]) : read_u32(s, at + 1);
        if (n > s.size()) return std::nullopt;
        return at + 1 + width + n <= s.size() ? std::optional(at + 1 + width + n) : std::nullopt;
    };
    if (code == 0x00) {  // described: descriptor then value
        auto d = skip_value(s, at + 1, depth + 1);
        return d ? skip_value(s, *d, depth + 1) : std::nullopt;
    }
    switch (code >> 4) {
        case 0x4:
            return fixed(0);
        case 0x5:
            return fixed(1);
        case 0x6:
            return fixed(2);
        case 0x7:
            return fixed(4);
        case 0x8:
            return fixed(8);
        case 0x9:
            return fixed(16);
        case 0xa:
        case 0xc:
        case 0xe:
            return sized(1);
        case 0xb:
        case 0xd:
        case 0xf:
            return sized(4);
        default:
            return std::nullopt;
    }
}

std::optional<descriptor> read_descriptor(std::string_view s, std::size_t at) {
    if (at + 3 > s.size() || std::uint8_t(s[at]) != 0x00) return std::nullopt;
    const auto form = std::uint8_t(s[at + 1]);
    if (form == 0x53) return descriptor{std::uint8_t(s[at + 2]), at + 3};
    if (form == 0x44) return descriptor{0, at + 2};  // ulong0
    if (form == 0x80 && at + 10 <= s.size()) {
        std::uint64_t code = 0;
        for (int i = 0; i < 8; ++i) code = (code << 8) | std::uint8_t(s[at + 2 + i]);
        return descriptor{code, at + 10};
    }
    return std::nullopt;
}

std::optional<list_header> read_list_header(std::string_view s, std::size_t at) {
    if (at >= s.size()) return std::nullopt;
    const auto code = std::uint8_t(s[at]);
    if (code == 0x45) return list_header{0, at + 1, at + 1};
    if (code == 0xc0 && at + 3 <= s.size()) {
        const std::size_t size = std::uint8_t(s[at + 1]);
        if (size < 1) return std::nullopt;
        return list_header{std::uint8_t(s[at + 2]), at + 3, at + 2 + size};
    }
    if (code == 0xd0 && at + 9 <= s.size()) {
        const std::size_t size = read_u32(s, at + 1);
        if (size < 4) return std::nullopt;
        return list_header{read_u32(s, at + 5), at + 9, at + 5 + size};
    }
    return std::nullopt;
}

bool is_null(std::string_view value) {
    return value.size() == 1 && std::uint8_t(value[0]) == 0x40;
}

std::optional<std::uint32_t> read_uint(std::string_view value) {
    if (value.empty()) return std::nullopt;
    switch (std::uint8_t(value[0])) {
        case 0x43:
            return value.size() == 1 ? std::optional<std::uint32_t>(0) : std::nullopt;
        case 0x52:
            return value.size() == 2 ? std::optional<std::uint32_t>(std::uint8_t(value[1]))
                                     : std::nullopt;
        case 0x70:
            return value.size() == 5 ? std::optional(read_u32(value, 1)) : std::nullopt;
        default:
            return std::nullopt;
    }
}

std::optional<bool> read_bool(std::string_view value) {
    if (value.size() == 1 && std::uint8_t(value[0]) == 0x41) return true;
    if (value.size() == 1 && std::uint8_t(value[0]) == 0x42) return false;
    if (value.size() == 2 && std::uint8_t(value[0]) == 0x56) return value[1] != 0;
    return std::nullopt;
}

namespace {
std::optional<std::string_view> sized_bytes(std::string_view value, std::uint8_t short_code,
                                            std::uint8_t long_code) {
    if (value.size() >= 2 && std::uint8_t(value[0]) == short_code &&
        value.size() == 2 + std::size_t(std::uint8_t(value[1])))
        return value.substr(2);
    if (value.size() >= 5 && std::uint8_t(value[0]) == long_code &&
        value.size() == 5 + std::size_t(read_u32(value, 1)))
        return value.substr(5);
    return std::nullopt;
}
}  // namespace

std::optional<std::string_view> read_binary(std::string_view value) {
    return sized_bytes(value, 0xa0, 0xb0);
}

std::optional<std::string_view> read_string(std::string_view value) {
    return sized_bytes(value, 0xa1, 0xb1);
}

std::optional<fields> read_described_list(std::string_view s, std::size_t limit) {
    auto d = read_descriptor(s, 0);
    if (!d) return std::nullopt;
    auto list = read_list_header(s, d->value_at);
    if (!list) return std::nullopt;
    fields out;
    out.code = d->code;
    out.count = list->count;
    const auto bound = std::min(list->end, s.size());
    const auto wanted = std::min({list->count, limit, std::size(out.at)});
    std::size_t p = list->items;
    for (std::size_t i = 0; i < wanted; ++i) {
        auto next = skip_value(s.substr(0, bound), p);
        if (!next) return std::nullopt;
        out.at[i] = s.substr(p, *next - p);
        p = *next;
    }
    return out;
}

}  // namespace iothub::amqp::detail
