// `$cbs`: put-token requests on the client's sender, answers on its receiver. A token is checked
// off the network thread; what it grants is kept on the connection until it expires or a newer
// put-token for the same principal replaces it (protocol.md 3.2).
#include "amqp/detail/connection.hpp"

#include <spdlog/spdlog.h>

namespace iothub::amqp::detail {
namespace {

// The first path segment of a token audience (`sb://host/entity/...` or `host/entity`).
std::string audience_entity(std::string_view audience) {
    if (auto scheme = audience.find("://"); scheme != std::string_view::npos)
        audience.remove_prefix(scheme + 3);
    auto slash = audience.find('/');
    if (slash == std::string_view::npos) return {};
    audience.remove_prefix(slash + 1);
    return std::string(audience.substr(0, audience.find('/')));
}

class cbs_links final : public link_family {
  public:
    using link_family::link_family;

    attach_decision attach(link_state&, const node_address&) override {
        return attach_decision::open();
    }

    void message(link_state& ls, pn_delivery_t* d, pn_message_t* m) override {
        put_token_request r;
        r.operation = application_property(m, "operation").value_or("");
        r.type = application_property(m, "type").value_or("");
        r.audience = application_property(m, "name").value_or("");
        r.token = body_bytes(m).value_or("");
        auto id = saved_id::of(pn_message_get_id(m));
        const char* reply_to = pn_message_get_reply_to(m);
        std::string reply(reply_to ? reply_to : "");
        c_.settle(ls, d, PN_ACCEPTED);
        c_.off_shard(
            ls.id,
            [r = std::move(r), &svc = c_.svc()] {
                // A token for a hosted event hub names that entity instead of the built-in one.
                std::string_view entity = svc.event_hub;
                auto hosted = audience_entity(r.audience);
                if (svc.hosted_event_hub && !hosted.empty() && svc.hosted_event_hub(hosted))
                    entity = hosted;
                return authorize_put_token(r, svc.authenticator, svc.policies, svc.hosts, entity,
                                           iothub::now());
            },
            [this, id, reply](link_state&, result<grant> g) { answer(std::move(g), id, reply); });
    }

  private:
    void answer(result<grant> g, const saved_id& id, const std::string& reply_to) {
        int status = 200;
        std::string description = "OK";
        if (g) {
            c_.add_grant(std::move(*g));
        } else {
            status = g.error().code() == errc::unauthorized ? 401 : 400;
            description = g.error().message();
            spdlog::debug("{}: put-token refused: {}", c_.describe(), description);
        }
        // The reply goes to the link named by reply-to (Event Hubs), else to the $cbs receiver
        // (the IoT SDKs say "cbs", which names no link).
        link_state* out = nullptr;
        c_.for_each_link(role::cbs_out, [&](link_state& ls) {
            if (!out || reply_to == pn_link_name(ls.link)) out = &ls;
        });
        if (!out) return;
        auto* m = c_.scratch();
        pn_message_clear(m);
        if (id.type != PN_NULL) pn_message_set_correlation_id(m, id.atom());
        auto* props = pn_message_properties(m);
        put_int_property(props, "status-code", status);
        put_string_property(props, "status-description", description);
        c_.send(*out, m);
    }
};

}  // namespace

std::unique_ptr<link_family> make_cbs_links(connection& c) {
    return std::make_unique<cbs_links>(c);
}

}  // namespace iothub::amqp::detail
