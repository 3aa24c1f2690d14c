#include "amqp/detail/transfer_formats.hpp"

#include "amqp/detail/wire.hpp"

#include <algorithm>

namespace iothub::amqp::detail {
namespace {

constexpr std::uint64_t attach_code = 0x12;
constexpr std::uint64_t transfer_code = 0x14;
// Enough of a transfer for handle, delivery-id, a 32-byte delivery tag and message-format in any
// encoding; an ATTACH is read whole (it is bounded by the frame size) for its name.
constexpr std::size_t transfer_prefix = 160;

std::string key_of(std::string_view link, std::string_view tag) {
    std::string key;
    key.reserve(link.size() + 1 + tag.size());
    key.append(link);
    key.push_back('\0');
    key.append(tag);
    return key;
}

}  // namespace

void transfer_formats::feed(std::string_view in) {
    while (!in.empty() && !lost_) {
        if (state_ == state::skip) {
            const auto n = std::min(skip_, in.size());
            skip_ -= n;
            in.remove_prefix(n);
            if (skip_ > 0) return;
            if (extended_) {
                extended_ = false;
                start_body();
            } else {
                end_frame();
            }
            continue;
        }
        const auto n = std::min(want_ - buf_.size(), in.size());
        buf_.append(in.substr(0, n));
        in.remove_prefix(n);
        if (buf_.size() < want_) return;

        if (state_ == state::header) {
            if (buf_.compare(0, 4, "AMQP") == 0) {  // a protocol header (SASL, then AMQP)
                buf_.clear();
                continue;
            }
            const std::uint32_t size = read_u32(buf_, 0);
            const std::size_t doff = std::uint8_t(buf_[4]);
            const auto type = std::uint8_t(buf_[5]);
            if (size < 8 || doff < 2 || doff * 4 > size) {
                // Not AMQP framing: the driver fails the connection; nothing more to read here.
                lost_ = true;
                return;
            }
            channel_ =
                static_cast<std::uint16_t>((std::uint8_t(buf_[6]) << 8) | std::uint8_t(buf_[7]));
            body_ = size - doff * 4;
            buf_.clear();
            const std::size_t extended = doff * 4 - 8;
            if (type != 0x00 || body_ == 0) {  // SASL frames and heartbeats
                skip_ = extended + body_;
                extended_ = false;
            } else {
                skip_ = extended;
                extended_ = true;
            }
            state_ = state::skip;
            if (skip_ == 0) {
                if (extended_) {
                    extended_ = false;
                    start_body();
                } else {
                    end_frame();
                }
            }
            continue;
        }

        // state::prefix: enough of the body to tell what it is.
        if (want_ < body_) {
            if (auto d = read_descriptor(buf_, 0); d && d->code == attach_code) {
                want_ = body_;
                continue;
            }
        }
        on_performative(buf_);
        skip_ = body_ - want_;
        state_ = state::skip;
        if (skip_ == 0) end_frame();
    }
}

void transfer_formats::start_body() {
    state_ = state::prefix;
    want_ = std::min(body_, transfer_prefix);
    buf_.clear();
}

void transfer_formats::end_frame() {
    state_ = state::header;
    want_ = 8;
    buf_.clear();
    if (buf_.capacity() > 4 * transfer_prefix) buf_.shrink_to_fit();  // after a large ATTACH
}

void transfer_formats::on_performative(std::string_view prefix) {
    auto f = read_described_list(prefix, 4);
    if (!f) return;
    if (f->code == attach_code) {
        if (f->count < 3) return;
        auto name = read_string(f->at[0]);
        auto handle = read_uint(f->at[1]);
        auto role = read_bool(f->at[2]);
        if (!name || !handle || !role) return;
        const auto key = (std::uint64_t(channel_) << 32) | *handle;
        // role false: the peer is the sender, so its transfers will come on this handle.
        if (!*role)
            names_[key] = std::string(*name);
        else
            names_.erase(key);
        return;
    }
    if (f->code != transfer_code || f->count < 3) return;
    auto handle = read_uint(f->at[0]);
    auto tag = read_binary(f->at[2]);
    if (!handle || !tag) return;  // a continuation of a delivery already seen
    std::uint32_t format = 0;
    if (f->count > 3 && !is_null(f->at[3])) {
        auto v = read_uint(f->at[3]);
        if (!v) return;
        format = *v;
    }
    auto name = names_.find((std::uint64_t(channel_) << 32) | *handle);
    if (name == names_.end()) return;  // no such link: the driver refuses the transfer
    if (format != standard_message_format)
        formats_[key_of(name->second, *tag)] = format;
    else if (!formats_.empty())
        formats_.erase(key_of(name->second, *tag));  // a tag reused after an earlier delivery
}

std::uint32_t transfer_formats::take(std::string_view link, std::string_view tag) {
    if (formats_.empty()) return standard_message_format;
    auto it = formats_.find(key_of(link, tag));
    if (it == formats_.end()) return standard_message_format;
    const auto format = it->second;
    formats_.erase(it);
    return format;
}

}  // namespace iothub::amqp::detail
