// The message side of C2D with no storage: ack modes, outcomes, sizes and the feedback body.
// Kept apart so protocol adapters and fuzzers can use it without the queues.
#include "c2d/c2d.hpp"
#include "common/encoding.hpp"

#include <boost/json.hpp>

namespace iothub::c2d {
namespace json = boost::json;

result<ack_mode> parse_ack(std::string_view text) {
    if (text.empty() || iequals(text, "none")) return ack_mode::none;
    if (iequals(text, "positive")) return ack_mode::positive;
    if (iequals(text, "negative")) return ack_mode::negative;
    if (iequals(text, "full")) return ack_mode::full;
    return error(
        errc::argument_invalid,
        "iothub-ack must be none, positive, negative or full, not '" + std::string(text) + "'.");
}

std::string_view to_string(ack_mode a) {
    switch (a) {
        case ack_mode::none:
            return "none";
        case ack_mode::positive:
            return "positive";
        case ack_mode::negative:
            return "negative";
        case ack_mode::full:
            return "full";
    }
    return "none";
}

std::string_view to_string(outcome o) {
    switch (o) {
        case outcome::success:
            return "Success";
        case outcome::expired:
            return "Expired";
        case outcome::delivery_count_exceeded:
            return "DeliveryCountExceeded";
        case outcome::rejected:
            return "Rejected";
        case outcome::purged:
            return "Purged";
    }
    return "Success";
}

namespace {

std::string_view description_of(outcome o) {
    switch (o) {
        case outcome::success:
            return "Success";
        case outcome::expired:
            return "Message expired";
        case outcome::delivery_count_exceeded:
            return "Maximum delivery count exceeded";
        case outcome::rejected:
            return "Message rejected";
        case outcome::purged:
            return "Message purged";
    }
    return "Success";
}

}  // namespace

std::string feedback_json(const std::vector<feedback_record>& records) {
    json::array out;
    out.reserve(records.size());
    for (const auto& r : records)
        out.push_back(json::object{{"originalMessageId", r.original_message_id},
                                   {"deviceGenerationId", r.device_generation_id},
                                   {"deviceId", r.device_id},
                                   {"enqueuedTimeUtc", format_iso8601(r.enqueued_time)},
                                   {"statusCode", to_string(r.what)},
                                   {"description", description_of(r.what)}});
    return json::serialize(out);
}

std::size_t message_size(const message& m) {
    std::size_t n = m.body.size() + m.message_id.size() + m.correlation_id.size() +
                    m.user_id.size() + m.content_type.size() + m.content_encoding.size();
    for (const auto& [k, v] : m.properties) n += k.size() + v.size();
    return n;
}

}  // namespace iothub::c2d
