#include "amqp/event_hubs.hpp"

#include "amqp/message_codec.hpp"
#include "common/encoding.hpp"

#include <charconv>
#include <cstring>

namespace iothub::amqp {
namespace {

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

std::optional<std::int64_t> integer(std::string_view s) {
    std::int64_t v = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc{} || p != s.data() + s.size()) return std::nullopt;
    return v;
}

error bad_filter(std::string_view filter) {
    return error(errc::argument_invalid,
                 "Unsupported selector filter '" + std::string(filter) +
                     "': use amqp.annotation.x-opt-offset, x-opt-sequence-number or "
                     "x-opt-enqueued-time with > or >= and a quoted value.");
}

void put_symbol(pn_data_t* d, std::string_view s) {
    pn_data_put_symbol(d, pn_bytes(s.size(), s.data()));
}
void put_string(pn_data_t* d, std::string_view s) {
    pn_data_put_string(d, pn_bytes(s.size(), s.data()));
}

bool is_property(std::string_view name) {
    return name == "message-id" || name == "correlation-id" || name == "user-id" || name == "to" ||
           name == "content-type" || name == "content-encoding" || name == "absolute-expiry-time";
}

}  // namespace

result<storage::read_position> parse_selector(std::string_view filter) {
    auto f = trim(filter);
    constexpr std::string_view prefix = "amqp.annotation.";
    if (f.substr(0, prefix.size()) != prefix) return bad_filter(filter);
    f.remove_prefix(prefix.size());
    std::string_view field;
    for (auto name : {"x-opt-offset", "x-opt-sequence-number", "x-opt-enqueued-time"}) {
        std::string_view n(name);
        if (f.substr(0, n.size()) == n) {
            field = n;
            f.remove_prefix(n.size());
            break;
        }
    }
    if (field.empty()) return bad_filter(filter);
    f = trim(f);
    bool inclusive = false;
    if (f.substr(0, 2) == ">=") {
        inclusive = true;
        f.remove_prefix(2);
    } else if (f.substr(0, 1) == ">") {
        f.remove_prefix(1);
    } else {
        return bad_filter(filter);
    }
    f = trim(f);
    if (f.size() < 2 || f.front() != '\'' || f.back() != '\'') return bad_filter(filter);
    auto value = f.substr(1, f.size() - 2);

    if (field == "x-opt-offset" && value == "@latest") return storage::read_position::latest();
    if (field == "x-opt-offset" && value == "-1") return storage::read_position::earliest();
    auto n = integer(value);
    if (!n) return bad_filter(filter);
    if (field == "x-opt-enqueued-time") {
        auto t =
            sys_time(std::chrono::milliseconds(std::clamp<std::int64_t>(*n, 0, 9'000'000'000'000)));
        return storage::read_position::after_time(inclusive ? t - std::chrono::milliseconds(1) : t);
    }
    if (*n < 0) return storage::read_position::earliest();
    auto seq = static_cast<std::uint64_t>(*n);
    return inclusive ? storage::read_position::at_sequence(seq)
                     : storage::read_position::after_sequence(seq);
}

result<std::optional<storage::read_position>> selector_of(pn_data_t* filter) {
    if (!filter) return std::optional<storage::read_position>{};
    pn_data_rewind(filter);
    if (!pn_data_next(filter) || pn_data_type(filter) != PN_MAP)
        return std::optional<storage::read_position>{};
    pn_data_enter(filter);
    std::optional<std::string> text;
    while (pn_data_next(filter)) {
        bool selector = false;
        if (pn_data_type(filter) == PN_SYMBOL || pn_data_type(filter) == PN_STRING) {
            auto b = pn_data_type(filter) == PN_SYMBOL ? pn_data_get_symbol(filter)
                                                       : pn_data_get_string(filter);
            selector = std::string_view(b.start, b.size) == "apache.org:selector-filter:string";
        }
        if (!pn_data_next(filter)) break;
        if (!selector) continue;
        // The value is described (descriptor 0x468C00000004); its string is what matters.
        if (pn_data_type(filter) == PN_DESCRIBED) {
            pn_data_enter(filter);
            pn_data_next(filter);  // descriptor
            if (pn_data_next(filter) && pn_data_type(filter) == PN_STRING) {
                auto b = pn_data_get_string(filter);
                text = std::string(b.start, b.size);
            }
            pn_data_exit(filter);
        } else if (pn_data_type(filter) == PN_STRING) {
            auto b = pn_data_get_string(filter);
            text = std::string(b.start, b.size);
        }
    }
    pn_data_exit(filter);
    if (!text) return std::optional<storage::read_position>{};
    auto p = parse_selector(*text);
    if (!p) return p.error();
    return std::optional<storage::read_position>{*p};
}

void fill_event(pn_message_t* out, const storage::stored_event& e) {
    pn_message_clear(out);
    const auto& r = e.record;
    auto ann = pn_message_annotations(out);
    pn_data_put_map(ann);
    pn_data_enter(ann);
    put_symbol(ann, "x-opt-sequence-number");
    pn_data_put_long(ann, static_cast<std::int64_t>(e.sequence_number));
    put_symbol(ann, "x-opt-offset");
    put_string(ann, std::to_string(e.sequence_number));
    put_symbol(ann, "x-opt-enqueued-time");
    pn_data_put_timestamp(ann, unix_millis(e.enqueued_time));
    put_symbol(ann, "iothub-enqueuedtime");
    pn_data_put_timestamp(ann, unix_millis(e.enqueued_time));
    auto annotate = [&](const storage::property_list& list) {
        for (const auto& [k, v] : list) {
            if (is_property(k) || k == "iothub-enqueuedtime") continue;
            put_symbol(ann, k);
            put_string(ann, v);
        }
    };
    annotate(r.system_properties);
    if (r.stamp) annotate(*r.stamp);
    pn_data_exit(ann);

    for (const auto& [k, v] : r.system_properties) {
        pn_atom_t a;
        a.type = PN_STRING;
        a.u.as_bytes = pn_bytes(v.size(), v.data());
        if (k == "message-id") pn_message_set_id(out, a);
        if (k == "correlation-id") pn_message_set_correlation_id(out, a);
        if (k == "user-id") pn_message_set_user_id(out, pn_bytes(v.size(), v.data()));
        if (k == "to") pn_message_set_address(out, v.c_str());
        if (k == "content-type") pn_message_set_content_type(out, v.c_str());
        if (k == "content-encoding") pn_message_set_content_encoding(out, v.c_str());
        if (k == "absolute-expiry-time")
            if (auto t = parse_iso8601(v)) pn_message_set_expiry_time(out, unix_millis(*t));
    }
    auto* props = pn_message_properties(out);
    for (const auto& [k, v] : r.application_properties) put_string_property(props, k, v);
    set_data_body(out, r.body);
}

void fill_eventhub_info(pn_message_t* out, std::string_view name, sys_time created,
                        int partition_count) {
    pn_message_clear(out);
    auto* body = pn_message_body(out);
    pn_data_put_map(body);
    pn_data_enter(body);
    put_string(body, "name");
    put_string(body, name);
    put_string(body, "type");
    put_symbol(body, "com.microsoft:eventhub");
    put_string(body, "created_at");
    pn_data_put_timestamp(body, unix_millis(created));
    put_string(body, "partition_count");
    pn_data_put_int(body, partition_count);
    put_string(body, "partition_ids");
    pn_data_put_array(body, false, PN_STRING);
    pn_data_enter(body);
    for (int i = 0; i < partition_count; ++i) put_string(body, std::to_string(i));
    pn_data_exit(body);
    pn_data_exit(body);
    pn_message_set_inferred(out, false);
}

void fill_partition_info(pn_message_t* out, std::string_view name, int partition,
                         const storage::partition_info& info) {
    pn_message_clear(out);
    auto* body = pn_message_body(out);
    pn_data_put_map(body);
    pn_data_enter(body);
    put_string(body, "name");
    put_string(body, name);
    put_string(body, "type");
    put_symbol(body, "com.microsoft:partition");
    put_string(body, "partition");
    put_string(body, std::to_string(partition));
    put_string(body, "begin_sequence_number");
    pn_data_put_long(body, static_cast<std::int64_t>(info.begin_sequence_number));
    const std::int64_t last = static_cast<std::int64_t>(info.next_sequence_number) - 1;
    put_string(body, "last_enqueued_sequence_number");
    pn_data_put_long(body, last);
    put_string(body, "last_enqueued_offset");
    put_string(body, std::to_string(last));
    put_string(body, "last_enqueued_time_utc");
    pn_data_put_timestamp(body, info.empty() && info.next_sequence_number == 0
                                    ? 0
                                    : unix_millis(info.last_enqueued_time));
    put_string(body, "is_partition_empty");
    pn_data_put_bool(body, info.empty());
    pn_data_exit(body);
    pn_message_set_inferred(out, false);
}

}  // namespace iothub::amqp
