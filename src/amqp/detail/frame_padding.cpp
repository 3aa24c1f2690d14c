#include "amqp/detail/frame_padding.hpp"

#include "amqp/detail/wire.hpp"

#include <array>
#include <cstdint>
#include <vector>

namespace iothub::amqp::detail {
namespace {

// Field counts of the AMQP performatives, by descriptor code 0x10 (open) to 0x18 (close).
constexpr std::array<std::size_t, 9> field_count = {10, 8, 14, 11, 11, 6, 3, 1, 1};
constexpr std::uint64_t begin_code = 0x11;
constexpr std::uint64_t attach_code = 0x12;

}  // namespace

std::string pad_performative(std::string_view body) {
    const std::string unchanged(body);
    auto d = read_descriptor(body, 0);
    if (!d || d->code < 0x10 || d->code > 0x18) return unchanged;
    const auto code = d->code;
    const std::size_t at = d->value_at;
    const std::size_t want = field_count[code - 0x10];
    auto list = read_list_header(body, at);
    if (!list || list->end > body.size()) return unchanged;
    const std::size_t count = list->count, items = list->items, end = list->end;

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
