#include "amqp/detail/frame_padding.hpp"

#include <array>
#include <cstdint>
#include <optional>
#include <vector>

namespace iothub::amqp::detail {
namespace {

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

// Where the encoded value starting at `at` ends; nullopt when it runs past the input or uses a
// constructor this does not know.
std::optional<std::size_t> skip_value(std::string_view s, std::size_t at, int depth = 0) {
    if (at >= s.size() || depth > 32) return std::nullopt;
    const auto code = std::uint8_t(s[at]);
    auto fixed = [&](std::size_t n) -> std::optional<std::size_t> {
        return at + 1 + n <= s.size() ? std::optional(at + 1 + n) : std::nullopt;
    };
    auto sized = [&](std::size_t width) -> std::optional<std::size_t> {
        if (at + 1 + width > s.size()) return std::nullopt;
        std::size_t n = width == 1 ? std::uint8_t(s[at + 1]) : read_u32(s, at + 1);
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
            return sized(1);
        case 0xb:
            return sized(4);
        case 0xc:
            return sized(1);
        case 0xd:
            return sized(4);
        case 0xe:
            return sized(1);
        case 0xf:
            return sized(4);
        default:
            return std::nullopt;
    }
}

// Field counts of the AMQP performatives, by descriptor code 0x10 (open) to 0x18 (close).
constexpr std::array<std::size_t, 9> field_count = {10, 8, 14, 11, 11, 6, 3, 1, 1};
constexpr std::uint64_t begin_code = 0x11;
constexpr std::uint64_t attach_code = 0x12;

}  // namespace

std::string pad_performative(std::string_view body) {
    const std::string unchanged(body);
    if (body.size() < 3 || std::uint8_t(body[0]) != 0x00) return unchanged;
    // Descriptor: smallulong (0x53 code) or ulong (0x80 + 8 bytes).
    std::uint64_t code = 0;
    std::size_t at = 1;
    if (std::uint8_t(body[1]) == 0x53) {
        code = std::uint8_t(body[2]);
        at = 3;
    } else if (std::uint8_t(body[1]) == 0x80 && body.size() >= 10) {
        for (int i = 0; i < 8; ++i) code = (code << 8) | std::uint8_t(body[2 + i]);
        at = 10;
    } else {
        return unchanged;
    }
    if (code < 0x10 || code > 0x18) return unchanged;
    const std::size_t want = field_count[code - 0x10];

    // The list: list0, list8 or list32.
    if (at >= body.size()) return unchanged;
    const auto list = std::uint8_t(body[at]);
    std::size_t count = 0, items = 0, end = 0;
    if (list == 0x45) {
        items = end = at + 1;
    } else if (list == 0xc0 && at + 3 <= body.size()) {
        const std::size_t size = std::uint8_t(body[at + 1]);
        count = std::uint8_t(body[at + 2]);
        items = at + 3;
        end = at + 2 + size;
    } else if (list == 0xd0 && at + 9 <= body.size()) {
        const std::size_t size = read_u32(body, at + 1);
        count = read_u32(body, at + 5);
        items = at + 9;
        end = at + 5 + size;
    } else {
        return unchanged;
    }
    if (end > body.size()) return unchanged;

    std::vector<std::string_view> fields;
    for (std::size_t p = items, i = 0; i < count; ++i) {
        auto next = skip_value(body, p);
        if (!next || *next > end) return unchanged;
        fields.push_back(body.substr(p, *next - p));
        p = *next;
    }
    bool changed = false;
    const std::string_view null_value("\x40", 1);
    while (fields.size() < want) {
        fields.push_back(null_value);
        changed = true;
    }
    // BEGIN's handle-max and ATTACH's properties are indexed by the Python client.
    static const std::string max_handle("\x70\xff\xff\xff\xff", 5);
    static const std::string empty_map("\xc1\x01\x00", 3);
    if (code == begin_code && fields[4] == null_value) {
        fields[4] = max_handle;
        changed = true;
    }
    if (code == attach_code && fields[13] == null_value) {
        fields[13] = empty_map;
        changed = true;
    }
    if (!changed) return unchanged;

    std::string out(body.substr(0, at));
    std::size_t content = 4;  // the count
    for (auto f : fields) content += f.size();
    out.push_back(char(0xd0));
    put_u32(out, static_cast<std::uint32_t>(content));
    put_u32(out, static_cast<std::uint32_t>(fields.size()));
    for (auto f : fields) out.append(f);
    out.append(body.substr(end));  // a transfer's payload
    return out;
}

void performative_padder::feed(std::string_view in, std::string& out) {
    pending_.append(in);
    std::string_view s(pending_);
    std::size_t at = 0;
    while (at < s.size()) {
        if (s.size() - at >= 4 && s.substr(at, 4) == "AMQP") {
            if (s.size() - at < 8) break;
            out.append(s.substr(at, 8));
            at += 8;
            continue;
        }
        if (s.size() - at < 8) break;
        const std::uint32_t size = read_u32(s, at);
        const std::size_t doff = std::uint8_t(s[at + 4]);
        const auto type = std::uint8_t(s[at + 5]);
        if (size < 8 || doff < 2 || doff * 4 > size) {
            // Not a frame as this reads it: pass the rest through rather than corrupt it.
            out.append(s.substr(at));
            at = s.size();
            break;
        }
        if (s.size() - at < size) break;
        const auto frame = s.substr(at, size);
        const auto header = frame.substr(0, doff * 4);
        const auto body = frame.substr(doff * 4);
        if (type != 0x00 || body.empty()) {  // SASL frames and heartbeats as they are
            out.append(frame);
        } else {
            auto padded = pad_performative(body);
            put_u32(out, static_cast<std::uint32_t>(header.size() + padded.size()));
            out.append(header.substr(4));
            out.append(padded);
        }
        at += size;
    }
    pending_.erase(0, at);
}

}  // namespace iothub::amqp::detail
