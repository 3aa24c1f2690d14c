#include "c2d/detail/records.hpp"

#include "common/encoding.hpp"

#include <cstring>

namespace iothub::c2d::detail {
namespace {

constexpr char format_v1 = 1;
constexpr char format_v2 = 2;  // feedback: the delivery count follows

class writer {
  public:
    void byte(std::uint8_t b) { out_.push_back(static_cast<char>(b)); }
    void u32(std::uint32_t v) {
        for (int i = 0; i < 4; ++i) byte(static_cast<std::uint8_t>(v >> (8 * i)));
    }
    void i64(std::int64_t v) {
        auto u = static_cast<std::uint64_t>(v);
        for (int i = 0; i < 8; ++i) byte(static_cast<std::uint8_t>(u >> (8 * i)));
    }
    void time(sys_time t) { i64(t.time_since_epoch().count()); }
    void str(std::string_view s) {
        u32(static_cast<std::uint32_t>(s.size()));
        out_.append(s);
    }
    std::string take() { return std::move(out_); }

  private:
    std::string out_;
};

// Every read checks the remaining length; one short read poisons the rest, checked once at the end.
class reader {
  public:
    explicit reader(std::string_view in) : in_(in) {}
    std::uint8_t byte() {
        if (in_.empty()) return fail();
        auto b = static_cast<std::uint8_t>(in_.front());
        in_.remove_prefix(1);
        return b;
    }
    std::uint32_t u32() {
        std::uint32_t v = 0;
        for (int i = 0; i < 4; ++i) v |= std::uint32_t{byte()} << (8 * i);
        return v;
    }
    std::int64_t i64() {
        std::uint64_t v = 0;
        for (int i = 0; i < 8; ++i) v |= std::uint64_t{byte()} << (8 * i);
        return static_cast<std::int64_t>(v);
    }
    sys_time time() { return sys_time(sys_time::duration(i64())); }
    std::string str() {
        auto n = u32();
        if (n > in_.size()) {
            fail();
            return {};
        }
        std::string s(in_.substr(0, n));
        in_.remove_prefix(n);
        return s;
    }
    bool ok_and_done() const { return ok_ && in_.empty(); }

  private:
    std::uint8_t fail() {
        ok_ = false;
        in_ = {};
        return 0;
    }
    std::string_view in_;
    bool ok_ = true;
};

}  // namespace

std::string message_key(std::string_view device_id, std::uint64_t sequence) {
    std::string key(message_prefix);
    key.append(device_id).append("/").append(hex16(sequence));
    return key;
}

std::string feedback_key(std::uint64_t sequence) {
    return std::string(feedback_prefix) + hex16(sequence);
}

std::optional<message_key_parts> parse_message_key(std::string_view key) {
    if (!key.starts_with(message_prefix)) return std::nullopt;
    key.remove_prefix(message_prefix.size());
    auto slash = key.rfind('/');
    if (slash == std::string_view::npos || slash == 0) return std::nullopt;
    auto seq = parse_hex16(key.substr(slash + 1));
    if (!seq) return std::nullopt;
    return message_key_parts{std::string(key.substr(0, slash)), *seq};
}

std::optional<std::uint64_t> parse_feedback_key(std::string_view key) {
    if (!key.starts_with(feedback_prefix)) return std::nullopt;
    return parse_hex16(key.substr(feedback_prefix.size()));
}

std::string encode(const stored_message& m) {
    return encode_message(m.enqueued_time, m.expiry_time, m.delivery_count, m.device_generation_id,
                          *m.content);
}

std::string encode_message(sys_time enqueued, sys_time expiry, std::uint32_t deliveries,
                           std::string_view generation, const message& c) {
    writer w;
    w.byte(format_v1);
    w.time(enqueued);
    w.time(expiry);
    w.u32(deliveries);
    w.str(generation);
    w.str(c.message_id);
    w.str(c.correlation_id);
    w.str(c.user_id);
    w.str(c.content_type);
    w.str(c.content_encoding);
    w.byte(static_cast<std::uint8_t>(c.ack));
    w.byte(c.expiry ? 1 : 0);
    if (c.expiry) w.time(*c.expiry);
    w.u32(static_cast<std::uint32_t>(c.properties.size()));
    for (const auto& [k, v] : c.properties) {
        w.str(k);
        w.str(v);
    }
    w.str(c.body);
    return w.take();
}

std::optional<stored_message> decode_message(std::string_view value) {
    reader r(value);
    if (r.byte() != format_v1) return std::nullopt;
    stored_message m;
    m.enqueued_time = r.time();
    m.expiry_time = r.time();
    m.delivery_count = r.u32();
    m.device_generation_id = r.str();
    auto content = std::make_shared<message>();
    auto& c = *content;
    c.message_id = r.str();
    c.correlation_id = r.str();
    c.user_id = r.str();
    c.content_type = r.str();
    c.content_encoding = r.str();
    auto ack = r.byte();
    if (ack > static_cast<std::uint8_t>(ack_mode::full)) return std::nullopt;
    c.ack = static_cast<ack_mode>(ack);
    if (r.byte() == 1) c.expiry = r.time();
    auto count = r.u32();
    // Each property takes at least 8 bytes, so a corrupt count cannot make us reserve much.
    if (count > value.size() / 8) return std::nullopt;
    c.properties.reserve(count);
    for (std::uint32_t i = 0; i < count; ++i) {
        auto k = r.str();
        auto v = r.str();
        c.properties.emplace_back(std::move(k), std::move(v));
    }
    c.body = r.str();
    if (!r.ok_and_done()) return std::nullopt;
    m.content = std::move(content);
    return m;
}

std::string encode(const feedback_record& f, std::uint32_t deliveries) {
    writer w;
    w.byte(format_v2);
    w.str(f.original_message_id);
    w.str(f.device_id);
    w.str(f.device_generation_id);
    w.time(f.enqueued_time);
    w.byte(static_cast<std::uint8_t>(f.what));
    w.u32(deliveries);
    return w.take();
}

std::optional<stored_feedback> decode_feedback(std::string_view value) {
    reader r(value);
    const auto format = r.byte();
    if (format != format_v1 && format != format_v2) return std::nullopt;
    stored_feedback out;
    auto& f = out.record;
    f.original_message_id = r.str();
    f.device_id = r.str();
    f.device_generation_id = r.str();
    f.enqueued_time = r.time();
    auto what = r.byte();
    if (what > static_cast<std::uint8_t>(outcome::purged)) return std::nullopt;
    f.what = static_cast<outcome>(what);
    if (format == format_v2) out.deliveries = r.u32();
    if (!r.ok_and_done()) return std::nullopt;
    return out;
}

}  // namespace iothub::c2d::detail
