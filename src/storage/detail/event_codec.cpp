#include "storage/detail/event_codec.hpp"

namespace iothub::storage::detail {

void put_u64(std::string& out, std::uint64_t v) {
    for (int i = 7; i >= 0; --i) out += static_cast<char>((v >> (i * 8)) & 0xff);
}

std::uint64_t get_u64(std::string_view s) {
    std::uint64_t v = 0;
    for (std::size_t i = 0; i < 8 && i < s.size(); ++i)
        v = (v << 8) | static_cast<unsigned char>(s[i]);
    return v;
}

void put_varint(std::string& out, std::uint64_t v) {
    while (v >= 0x80) {
        out += static_cast<char>((v & 0x7f) | 0x80);
        v >>= 7;
    }
    out += static_cast<char>(v);
}

bool get_varint(std::string_view& in, std::uint64_t& v) {
    v = 0;
    for (int shift = 0; shift < 64 && !in.empty(); shift += 7) {
        auto b = static_cast<unsigned char>(in.front());
        in.remove_prefix(1);
        v |= static_cast<std::uint64_t>(b & 0x7f) << shift;
        if (!(b & 0x80)) return true;
    }
    return false;
}

void put_string(std::string& out, std::string_view s) {
    put_varint(out, s.size());
    out.append(s);
}

bool get_string(std::string_view& in, std::string& s) {
    std::uint64_t n;
    if (!get_varint(in, n) || n > in.size()) return false;
    s.assign(in.substr(0, n));
    in.remove_prefix(n);
    return true;
}

namespace {

void put_properties(std::string& out, const property_list& props) {
    put_varint(out, props.size());
    for (const auto& [k, v] : props) {
        put_string(out, k);
        put_string(out, v);
    }
}

bool get_properties(std::string_view& in, property_list& props) {
    std::uint64_t n;
    if (!get_varint(in, n) || n > in.size()) return false;
    props.resize(n);
    for (auto& [k, v] : props)
        if (!get_string(in, k) || !get_string(in, v)) return false;
    return true;
}

}  // namespace

void encode_record(std::string& out, const event_record& e) {
    put_string(out, e.body);
    put_properties(out, e.application_properties);
    const std::size_t stamped = e.stamp ? e.stamp->size() : 0;
    put_varint(out, e.system_properties.size() + stamped);
    for (const auto& [k, v] : e.system_properties) {
        put_string(out, k);
        put_string(out, v);
    }
    if (e.stamp)
        for (const auto& [k, v] : *e.stamp) {
            put_string(out, k);
            put_string(out, v);
        }
}

std::string encode(sys_time t, const event_record& e) {
    std::string out;
    out.reserve(16 + event_size(e) +
                4 * (e.application_properties.size() + e.system_properties.size()));
    put_u64(out, static_cast<std::uint64_t>(t.time_since_epoch().count()));
    encode_record(out, e);
    return out;
}

sys_time time_of(std::string_view value) {
    return sys_time(std::chrono::nanoseconds(static_cast<std::int64_t>(get_u64(value))));
}

bool decode_record(std::string_view value, event_record& out) {
    return get_string(value, out.body) && get_properties(value, out.application_properties) &&
           get_properties(value, out.system_properties);
}

bool decode(std::string_view value, stored_event& out) {
    if (value.size() < 8) return false;
    out.enqueued_time = time_of(value);
    value.remove_prefix(8);
    return decode_record(value, out.record);
}

}  // namespace iothub::storage::detail
