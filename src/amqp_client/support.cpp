#include "amqp_client/support.hpp"

#include "common/time.hpp"

#include <proton/binary.hpp>
#include <proton/condition.h>
#include <proton/delivery.h>
#include <proton/disposition.h>
#include <proton/message_id.hpp>
#include <proton/scalar.hpp>
#include <proton/symbol.hpp>
#include <proton/timestamp.hpp>

namespace iothub::amqp_client {
namespace {

// A class derived from tracker may read its (protected) C handle, which has the condition.
struct delivery_of : proton::tracker {
    explicit delivery_of(const proton::tracker& t) : proton::tracker(t) {}
    pn_delivery_t* get() const { return pn_object(); }
};

}  // namespace

proton::message put_token_request(const std::string& id, const std::string& audience,
                                  const std::string& token, const std::string& reply_to) {
    proton::message m;
    m.id(proton::message_id(id));
    m.to("$cbs");
    m.reply_to(reply_to);
    m.properties().put("operation", "put-token");
    m.properties().put("type", "servicebus.windows.net:sastoken");
    m.properties().put("name", audience);
    m.body(token);
    return m;
}

std::int64_t status_of(const proton::message& m) {
    auto status = m.properties().get("status-code");
    if (status.empty()) return 0;
    try {
        return proton::coerce<std::int64_t>(status);
    } catch (const std::exception&) {
        return 0;  // not a number: no status the client can act on
    }
}

std::string status_description(const proton::message& m) {
    return text_of(m.properties().get("status-description"));
}

std::string text_of(const proton::value& v) {
    switch (v.type()) {
        case proton::BINARY: {
            auto b = proton::get<proton::binary>(v);
            return std::string(b.begin(), b.end());
        }
        case proton::STRING:
            return proton::get<std::string>(v);
        case proton::SYMBOL:
            return proton::get<proton::symbol>(v);
        case proton::TIMESTAMP:
            return format_iso8601(sys_time(
                std::chrono::milliseconds(proton::get<proton::timestamp>(v).milliseconds())));
        case proton::NULL_TYPE:
            return {};
        default:
            return proton::to_string(v);
    }
}

outcome_condition condition_of(const proton::tracker& t) {
    outcome_condition out;
    auto* d = delivery_of(t).get();
    if (!d) return out;
    auto* c = pn_disposition_condition(pn_delivery_remote(d));
    if (!c || !pn_condition_is_set(c)) return out;
    if (const char* name = pn_condition_get_name(c)) out.name = name;
    if (const char* text = pn_condition_get_description(c)) out.description = text;
    return out;
}

}  // namespace iothub::amqp_client
