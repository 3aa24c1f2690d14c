// Device and module links: telemetry (plain and batched), cloud-to-device, twin and methods,
// translated onto one device session per identity. An identity is live on the connection from
// its first link to its last; a gateway carries many. Links are authorized by the identity's
// put-token, or by the TLS client certificate for X.509 devices (authenticated off the network
// thread while the attach waits).
#include "amqp/detail/connection.hpp"

#include <spdlog/spdlog.h>

#include <charconv>
#include <set>
#include <utility>

namespace iothub::amqp::detail {
namespace {

// Method request ids are the method service's short hex strings; over AMQP they travel as a uuid
// (the C SDK refuses anything else), so the id is written into the uuid's low bytes.
std::string rid_to_uuid_text(std::string_view rid) {
    std::string hex(32 - std::min<std::size_t>(rid.size(), 32), '0');
    hex += rid.substr(0, 32);
    return hex.substr(0, 8) + "-" + hex.substr(8, 4) + "-" + hex.substr(12, 4) + "-" +
           hex.substr(16, 4) + "-" + hex.substr(20);
}
std::string uuid_text_to_rid(std::string_view text) {
    std::string hex;
    for (char c : text)
        if (c != '-') hex.push_back(c);
    auto first = hex.find_first_not_of('0');
    return first == std::string::npos ? "0" : hex.substr(first);
}

class device_links;

// One identity on this connection: the device session and what its links are waiting for.
class identity final : public session::device_port {
  public:
    identity(device_links& family, connection& c, std::string key)
        : family_(family), c_(c), key_(std::move(key)) {}

    void opened(const result<opening>& r) override;
    void telemetry_stored(std::span<const std::uint64_t> tickets, const result<void>& r) override;
    void twin_answered(std::uint64_t ticket, const twin::device_answer& answer) override;
    bool c2d_room() const override {
        auto* ls = c_.link_of(key_, role::c2d_out);
        return ls && pn_link_credit(ls->link) > 0;
    }
    void c2d_deliver(const c2d::delivery& d) override;
    void desired_update(const std::string& patch, std::uint64_t version) override;
    void method_request(const std::string& name, const std::string& rid,
                        const std::string& payload) override;
    void ended(const std::string& reason) override;

    device_links& family_;
    connection& c_;
    std::string key_;
    std::shared_ptr<session::device_session> session;
    std::set<std::uint64_t> links;       // attached, or waiting for the session to open
    std::vector<std::uint64_t> waiting;  // attaches answered once the session opens
    // Telemetry in flight: ticket -> (link, delivery); twin requests: ticket -> correlation.
    std::map<std::uint64_t, std::pair<std::uint64_t, pn_delivery_t*>> telemetry;
    std::map<std::uint64_t, saved_id> twin;
    // A put-token open refused inside open(), for the attach to answer with.
    std::optional<error> refused;
};

class device_links final : public link_family {
  public:
    using link_family::link_family;

    attach_decision attach(link_state& ls, const node_address& a) override {
        auto& id = identities_[ls.identity];
        if (!id) id = std::make_unique<identity>(*this, c_, ls.identity);
        // A session that ended (taken over, revoked) while its links are still closing: the
        // client attaches afresh, so the identity gets a new one.
        if (id->session && id->session->closed() && id->waiting.empty()) id->session.reset();
        id->links.insert(ls.id);
        if (id->session && id->session->is_open()) {
            ls.grant_key = ls.identity;
            return attach_decision::open();
        }
        if (id->session) {  // opening: this link waits with the others
            id->waiting.push_back(ls.id);
            return attach_decision::later();
        }
        id->session = std::make_shared<session::device_session>(c_.sessions(), c_.io().executor(),
                                                                *id, c_.budget());
        if (const auto* g = c_.grant_for(ls.identity); g && g->device) {
            ls.grant_key = ls.identity;
            id->session->open(*g->device, {});
            if (id->session->is_open()) return attach_decision::open();
            id->links.erase(ls.id);
            // Why it did not open (the hub's connect rate: device-container-throttled).
            const auto why = std::exchange(id->refused, std::nullopt);
            drop_if_unused(ls.identity);
            return why ? attach_decision::refuse(condition_for(why->code()), why->message())
                       : attach_decision::refuse("amqp:unauthorized-access",
                                                 "The identity could not be opened.");
        }
        // X.509 devices authenticate with the TLS client certificate instead of CBS.
        if (auto cert = c_.io().stream().client_certificate()) {
            id->waiting.push_back(ls.id);
            id->session->open(
                device_auth::device_credentials{a.device_id, a.module_id, std::nullopt, *cert}, {});
            return attach_decision::later();
        }
        drop_if_unused(ls.identity);
        return attach_decision::refuse(
            "amqp:unauthorized-access",
            "No token for '" + ls.identity + "' on this connection: put one on $cbs first.");
    }

    void opened(link_state& ls) override {
        auto* id = find(ls.identity);
        if (!id || !id->session) return;
        auto& s = *id->session;
        switch (ls.what) {
            case role::methods_in:
            case role::methods_out:
                if (c_.link_of(ls.identity, role::methods_in) &&
                    c_.link_of(ls.identity, role::methods_out))
                    s.listen_methods(true);
                break;
            case role::c2d_out:
                s.listen_c2d(true);
                break;
            default:
                break;
        }
    }

    void message(link_state& ls, pn_delivery_t* d, pn_message_t* m) override {
        auto* id = find(ls.identity);
        if (!id || !id->session || !id->session->is_open())
            return c_.reject(ls, d, "amqp:unauthorized-access", "The identity is not open.");
        switch (ls.what) {
            case role::d2c: {
                auto e = to_event(m);
                if (!e) return c_.settle_error(ls, d, e.error());
                const auto ticket = next_ticket_++;
                if (auto ok = id->session->admit(std::move(*e), ticket); !ok)
                    return c_.settle_error(ls, d, ok.error());
                id->telemetry.emplace(ticket, std::pair{ls.id, d});
                return;
            }
            case role::twin_in:
                return twin_request(*id, ls, d, m);
            case role::methods_in:
                return method_response(*id, ls, d, m);
            default:
                return c_.settle(ls, d, PN_ACCEPTED);
        }
    }

    // A batched message: every data section is a whole message, stored as if sent alone. The
    // batch is refused whole if any of them does not decode or breaks a limit; one disposition
    // settles it once all of them are durable.
    void batch(link_state& ls, pn_delivery_t* d, std::string_view bytes) override {
        auto* id = find(ls.identity);
        if (!id || !id->session || !id->session->is_open())
            return c_.reject(ls, d, "amqp:unauthorized-access", "The identity is not open.");
        auto events =
            c_.decode_batch(ls, d, bytes, "Message", [](pn_message_t* m) { return to_event(m); });
        if (!events) return;
        const auto ticket = next_ticket_++;
        if (auto ok = id->session->admit_batch(std::move(*events), ticket); !ok)
            return c_.settle_error(ls, d, ok.error());
        id->telemetry.emplace(ticket, std::pair{ls.id, d});
    }

    void flow(link_state& ls) override {
        if (ls.what != role::c2d_out) return;
        if (auto* id = find(ls.identity); id && id->session) id->session->c2d_room_freed();
    }

    void outcome(link_state& ls, pn_delivery_t* d, std::uint64_t state) override {
        auto lock = ls.locks.find(d);
        if (lock == ls.locks.end()) return;
        auto token = std::move(lock->second);
        ls.locks.erase(lock);
        auto* id = find(ls.identity);
        if (!id || !id->session) return;
        id->session->settle_c2d(token, state == PN_ACCEPTED   ? session::c2d_outcome::complete
                                       : state == PN_REJECTED ? session::c2d_outcome::reject
                                                              : session::c2d_outcome::abandon);
    }

    void detached(link_state& ls) override {
        auto* id = find(ls.identity);
        if (!id) return;
        id->links.erase(ls.id);
        std::erase(id->waiting, ls.id);
        if (id->session && id->session->is_open()) {
            auto& s = *id->session;
            switch (ls.what) {
                case role::methods_in:
                case role::methods_out:
                    s.listen_methods(false);
                    break;
                case role::twin_out:
                    s.listen_desired(false);
                    break;
                case role::c2d_out:
                    // What this link held goes back to the queue; the identity may stay.
                    for (auto& [d, token] : ls.locks)
                        s.settle_c2d(token, session::c2d_outcome::abandon);
                    ls.locks.clear();
                    s.listen_c2d(false);
                    break;
                default:
                    break;
            }
        }
        drop_if_unused(ls.identity);
    }

    void closing() override {
        for (auto& [key, id] : identities_)
            if (id->session) id->session->close("the connection closed");
        identities_.clear();
    }

    identity* find(const std::string& key) {
        auto it = identities_.find(key);
        return it == identities_.end() ? nullptr : it->second.get();
    }

    // The identity leaves the connection with its last link.
    void drop_if_unused(const std::string& key) {
        auto it = identities_.find(key);
        if (it == identities_.end() || !it->second->links.empty()) return;
        if (it->second->session) it->second->session->close("its last link detached");
        identities_.erase(it);
    }

  private:
    void twin_request(identity& id, link_state& ls, pn_delivery_t* d, pn_message_t* m) {
        const auto operation = annotation(m, "operation").value_or("");
        const auto resource = annotation(m, "resource").value_or("");
        constexpr std::string_view desired = "/notifications/twin/properties/desired";
        using v = session::twin_request::verb;
        session::twin_request r;
        if (operation == "GET") {
            r.what = v::get;
        } else if (operation == "PATCH" && resource == "/properties/reported") {
            r.what = v::patch_reported;
            r.body = body_bytes(m).value_or("");
        } else if ((operation == "PUT" || operation == "DELETE") && resource == desired) {
            r.what = operation == "PUT" ? v::subscribe_desired : v::unsubscribe_desired;
        } else {
            r.what = v::invalid;
            r.body = "Unsupported twin operation '" + operation + "' on '" + resource + "'.";
        }
        r.ticket = next_ticket_++;
        id.twin.emplace(r.ticket, saved_id::of(pn_message_get_correlation_id(m)));
        c_.settle(ls, d, PN_ACCEPTED);
        id.session->twin(std::move(r));
    }

    void method_response(identity& id, link_state& ls, pn_delivery_t* d, pn_message_t* m) {
        auto rid = uuid_text_to_rid(id_text(pn_message_get_correlation_id(m)));
        auto status_text = application_property(m, "IoThub-status").value_or("");
        int status = 0;
        auto [p, ec] =
            std::from_chars(status_text.data(), status_text.data() + status_text.size(), status);
        auto body = body_bytes(m).value_or("");
        if (ec != std::errc{} || rid.empty())
            return c_.reject(ls, d, "com.microsoft:argument-error",
                             "A method response needs a correlation-id and an integer "
                             "IoThub-status.");
        if (!id.session->method_response(rid, status, body))
            spdlog::debug("{}: method response for unknown request {}", c_.describe(), rid);
        c_.settle(ls, d, PN_ACCEPTED);
    }

    std::map<std::string, std::unique_ptr<identity>> identities_;
    std::uint64_t next_ticket_ = 1;
};

void identity::opened(const result<opening>& r) {
    // Only the deferred (X.509) path gets here later; a put-token grant opens at once.
    auto waiting = std::move(this->waiting);
    this->waiting.clear();
    if (!r) {
        spdlog::debug("{}: {} refused: {}", c_.describe(), key_, r.error().message());
        if (waiting.empty()) {  // the attach that opened it answers
            refused = r.error();
            return;
        }
        // Refusing the last link ends this identity (and this object): only locals from here.
        auto& c = c_;
        const auto refusal =
            attach_decision::refuse(condition_for(r.error().code()), r.error().message());
        for (auto link_id : waiting) c.finish_attach(link_id, refusal);
        return;
    }
    if (waiting.empty()) return;
    grant g;
    g.device = session->principal();
    c_.add_grant(std::move(g));
    for (auto link_id : waiting) {
        if (auto* ls = c_.link(link_id)) ls->grant_key = key_;
        c_.finish_attach(link_id, attach_decision::open());
    }
    c_.wake();
}

void identity::telemetry_stored(std::span<const std::uint64_t> tickets, const result<void>& r) {
    for (auto ticket : tickets) {
        auto it = telemetry.find(ticket);
        if (it == telemetry.end()) continue;
        auto [link_id, d] = it->second;
        telemetry.erase(it);
        auto* ls = c_.link(link_id);
        if (!ls) continue;  // the link went; its deliveries with it
        if (r)
            c_.settle(*ls, d, PN_ACCEPTED);
        else
            c_.settle_error(*ls, d, r.error());
    }
    c_.wake();
}

void identity::twin_answered(std::uint64_t ticket, const twin::device_answer& answer) {
    auto correlation = twin.extract(ticket);
    auto* ls = c_.link_of(key_, role::twin_out);
    if (!ls) return;
    auto* m = c_.scratch();
    pn_message_clear(m);
    if (!correlation.empty() && correlation.mapped().type != PN_NULL)
        pn_message_set_correlation_id(m, correlation.mapped().atom());
    auto* ann = pn_message_annotations(m);
    put_int_property(ann, "status", answer.status, true);
    if (answer.version)
        put_long_property(ann, "version", static_cast<std::int64_t>(*answer.version), true);
    set_data_body(m, answer.body);
    c_.send(*ls, m);
    c_.wake();
}

void identity::c2d_deliver(const c2d::delivery& d) {
    auto* ls = c_.link_of(key_, role::c2d_out);
    if (!ls) return;
    auto tag = guid_bytes(d.lock_token).value_or(c_.next_tag());
    fill_delivery(c_.scratch(), d, ls->device_id);
    auto* delivery = c_.send_now(*ls, c_.scratch(), tag);
    // A receiver that takes messages pre-settled accepts them on arrival.
    if (pn_link_snd_settle_mode(ls->link) == PN_SND_SETTLED)
        session->settle_c2d(d.lock_token, session::c2d_outcome::complete);
    else
        ls->locks[delivery] = d.lock_token;
    c_.wake();
}

void identity::desired_update(const std::string& patch, std::uint64_t version) {
    auto* ls = c_.link_of(key_, role::twin_out);
    if (!ls) return;
    auto* m = c_.scratch();
    pn_message_clear(m);
    put_long_property(pn_message_annotations(m), "version", static_cast<std::int64_t>(version),
                      true);
    set_data_body(m, patch);
    c_.send(*ls, m);
    c_.wake();
}

void identity::method_request(const std::string& name, const std::string& rid,
                              const std::string& payload) {
    auto* ls = c_.link_of(key_, role::methods_out);
    if (!ls) return;
    auto* m = c_.scratch();
    pn_message_clear(m);
    pn_uuid_t u;
    if (auto a = uuid_atom(rid_to_uuid_text(rid), u)) pn_message_set_correlation_id(m, *a);
    put_string_property(pn_message_properties(m), "IoThub-methodname", name);
    set_data_body(m, payload);
    c_.send(*ls, m);
    c_.wake();
}

// Another connection took the identity over, or its access was revoked. The token that
// authorized it goes too: after a revocation (deleted, disabled, new keys) it must not attach the
// identity's links again, and after a takeover the client puts a token again if it wants the
// identity back. The links close after this call returns (closing them ends this object).
void identity::ended(const std::string& reason) {
    c_.defer([&c = c_, key = key_, reason] {
        c.drop_grant(key);
        std::vector<std::uint64_t> doomed;
        for (auto r : {role::d2c, role::c2d_out, role::methods_in, role::methods_out, role::twin_in,
                       role::twin_out})
            c.for_each_link(r, [&](link_state& ls) {
                if (ls.identity == key) doomed.push_back(ls.id);
            });
        for (auto id : doomed) c.close_link(id, "amqp:link:detach-forced", reason);
    });
}

}  // namespace

std::unique_ptr<link_family> make_device_links(connection& c) {
    return std::make_unique<device_links>(c);
}

}  // namespace iothub::amqp::detail
