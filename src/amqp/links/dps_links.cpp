// Provisioning clients over AMQP (routing-dps.md D.5): a sender and a receiver on
// `{idScope}/registrations/{registrationId}`. Each request carries `iotdps-operation-type`
// (register, get-operationstatus with `iotdps-operation-id`, get-registration) and a correlation
// id; the answer comes on the receiver with the same correlation id, `iotdps-status`,
// `iotdps-operation-id` and, while assigning, `retry-after`. The registration service decides
// everything; a refusal (a bad key, an unknown operation) rejects the request with its condition,
// which the SDK reports as that error.
//
// Who the client is: the SASL PLAIN login or, with no login, the TLS client certificate, checked
// when each link attaches. A link names one registration, and only the login's.
#include "amqp/detail/connection.hpp"
#include "common/encoding.hpp"
#include "dps/registrations.hpp"

#include <boost/json.hpp>
#include <spdlog/spdlog.h>

namespace iothub::amqp::detail {
namespace {

class dps_links final : public link_family {
  public:
    using link_family::link_family;

    attach_decision attach(link_state& ls, const node_address& a) override {
        if (!c_.sessions().provisioning)
            return attach_decision::refuse("amqp:not-found",
                                           "This hub does not serve the provisioning service.");
        if (const auto& login = c_.provisioning()) {
            if (!iequals(a.id_scope, login->id_scope) ||
                !iequals(a.registration_id, login->registration_id))
                return attach_decision::refuse(
                    "amqp:unauthorized-access",
                    "The link is for registration '" + a.id_scope + "/registrations/" +
                        a.registration_id + "', the connection signed in as '" + login->id_scope +
                        "/registrations/" + login->registration_id + "'.");
        } else if (!c_.io().stream().client_certificate()) {
            return attach_decision::refuse(
                "amqp:unauthorized-access",
                "A provisioning link needs the registration's SAS (SASL PLAIN) or a client "
                "certificate.");
        }
        // "{idScope}/registrations/{id}" as the link named it: its two links pair by this.
        ls.identity = a.id_scope + "/registrations/" + a.registration_id;
        ls.device_id = a.registration_id;
        c_.off_shard(
            ls.id,
            [service = c_.sessions().provisioning, request = request_of(ls)] {
                return service->check_credentials(request, iothub::now());
            },
            [this](link_state& ls, result<void> ok) {
                if (ok) return c_.finish_attach(ls.id, attach_decision::open());
                c_.finish_attach(ls.id, attach_decision::refuse(condition_for(ok.error().code()),
                                                                ok.error().message()));
            });
        return attach_decision::later();
    }

    void message(link_state& ls, pn_delivery_t* d, pn_message_t* m) override {
        enum class op { register_device, operation_status, registration };
        const auto type = application_property(m, "iotdps-operation-type").value_or("");
        op what;
        if (type == "iotdps-register")
            what = op::register_device;
        else if (type == "iotdps-get-operationstatus")
            what = op::operation_status;
        else if (type == "iotdps-get-registration")
            what = op::registration;
        else
            return c_.reject(ls, d, "amqp:not-implemented",
                             "Unknown iotdps-operation-type '" + type + "'.");
        const auto operation_id = application_property(m, "iotdps-operation-id").value_or("");
        if (what == op::operation_status && operation_id.empty())
            return c_.reject(ls, d, "com.microsoft:argument-error",
                             "iotdps-get-operationstatus needs iotdps-operation-id.");

        auto request = request_of(ls);
        if (auto body = body_bytes(m)) request.payload = dps::registration_payload(*body);
        auto id = saved_id::of(pn_message_get_correlation_id(m));
        c_.off_shard(
            ls.id,
            [service = c_.sessions().provisioning, request = std::move(request), what,
             operation_id]() -> result<boost::json::object> {
                switch (what) {
                    case op::register_device:
                        return service->register_device(request, iothub::now());
                    case op::operation_status:
                        return service->operation_status(request, operation_id, iothub::now());
                    case op::registration:
                        break;
                }
                return service->device_state(request, iothub::now());
            },
            [this, d, id](link_state& ls, result<boost::json::object> r) {
                if (!r) {
                    spdlog::debug("{}: provisioning request of '{}' refused: {}", c_.describe(),
                                  ls.device_id, r.error().message());
                    return c_.settle_error(ls, d, r.error());
                }
                c_.settle(ls, d, PN_ACCEPTED);
                answer(ls.identity, id, *r);
            });
    }

  private:
    dps::registration_request request_of(const link_state& ls) {
        dps::registration_request r{
            ls.identity.substr(0, ls.identity.find('/')), ls.device_id, {}, std::nullopt, {}};
        if (const auto& login = c_.provisioning())
            r.authorization = login->authorization;
        else
            r.certificate = c_.io().stream().client_certificate();
        return r;
    }

    void answer(const std::string& identity, const saved_id& id, const boost::json::object& r) {
        auto* out = c_.link_of(identity, role::dps_responses);
        if (!out) return;  // nobody listens: the client polls again or gives up
        auto* m = c_.scratch();
        pn_message_clear(m);
        if (id.type != PN_NULL) pn_message_set_correlation_id(m, id.atom());
        auto* props = pn_message_properties(m);
        const auto* status = r.if_contains("status");
        const std::string status_text =
            status && status->is_string() ? std::string(status->get_string()) : std::string();
        put_string_property(props, "iotdps-status", status_text);
        if (const auto* op = r.if_contains("operationId"); op && op->is_string())
            put_string_property(props, "iotdps-operation-id", op->get_string());
        if (status_text == "assigning")
            put_string_property(props, "retry-after", std::to_string(dps::poll_after_seconds));
        set_data_body(m, boost::json::serialize(r));
        c_.send(*out, m);
    }
};

}  // namespace

std::unique_ptr<link_family> make_dps_links(connection& c) {
    return std::make_unique<dps_links>(c);
}

}  // namespace iothub::amqp::detail
