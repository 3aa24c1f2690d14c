#include "dps/registrations.hpp"

#include "auth/sas.hpp"
#include "certificates/ca_store.hpp"
#include "common/crypto.hpp"
#include "common/encoding.hpp"
#include "dps/errors.hpp"
#include "registry/identity.hpp"

#include <boost/json.hpp>

#include <algorithm>

namespace iothub::dps {
namespace json = boost::json;

namespace {

constexpr std::string_view state_prefix = "dps/registration/";

std::string state_key(std::string_view id) {
    return std::string(state_prefix) + to_lower(id);
}

error unauthorized(std::string why) {
    return error(errc::unauthorized, std::move(why));
}

const json::object* object_at(const json::object& o, std::string_view path) {
    const json::object* at = &o;
    while (!path.empty()) {
        auto dot = path.find('.');
        const auto* v = at->if_contains(path.substr(0, dot));
        if (!v || !v->is_object()) return nullptr;
        at = &v->get_object();
        path = dot == std::string_view::npos ? std::string_view() : path.substr(dot + 1);
    }
    return at;
}

std::string text_at(const json::object& o, std::string_view key) {
    const auto* v = o.if_contains(key);
    return v && v->is_string() ? std::string(v->get_string()) : std::string();
}

// Kept in a registration state but not shown: the hubs the registration has been assigned to
// (lower case, the latest last, at most 32), which tell a return to one of them apart from a move
// and where the device is after a registration that failed.
constexpr std::string_view assigned_hubs_field = "assignedHubsBefore";
constexpr std::size_t assigned_hubs_kept = 32;

// A stored state as the APIs show it.
void hide_internal(json::object& state) {
    state.erase("operationId");
    state.erase(assigned_hubs_field);
}

}  // namespace

json::value registration_payload(std::string_view body) {
    boost::system::error_code ec;
    auto v = json::parse(body, ec);
    if (ec || !v.is_object()) return nullptr;
    const auto* payload = v.get_object().if_contains("payload");
    return payload ? *payload : json::value();
}

std::string derive_device_key(std::string_view group_key, std::string_view registration_id) {
    auto raw = base64_decode(group_key);
    return base64_encode(hmac_sha256(raw ? *raw : std::string(group_key), registration_id));
}

struct registration_service::matched {
    json::object enrollment;
    enrollment_kind kind = enrollment_kind::individual;
    device_authentication authentication = device_authentication::sas;
    std::string primary_key, secondary_key;  // the device's own (derived for a group)
    std::string thumbprint;                  // an individual certificate's SHA-1
};

registration_service::registration_service(storage::kv_store& kv, enrollment_store& enrollments,
                                           linked_hub_store& hubs, std::string id_scope,
                                           assign_function assign, webhook_function webhook)
    : kv_(kv),
      enrollments_(enrollments),
      hubs_(hubs),
      id_scope_(std::move(id_scope)),
      assign_(std::move(assign)),
      webhook_(std::move(webhook)) {}

result<registration_service::matched> registration_service::authenticate(
    const registration_request& r, sys_time now) {
    if (!iequals(r.id_scope, id_scope_))
        return unauthorized("ID scope '" + r.id_scope + "' is not this provisioning service's.");
    if (auto ok = check_registration_id(r.registration_id, "registrationId"); !ok)
        return ok.error();
    if (r.authorization.empty() && r.certificate && !r.certificate->chain_der.empty())
        return authenticate_certificate(r, now);
    auto token = auth::parse_sas_token(r.authorization);
    if (!token) return unauthorized("The registration's SAS token is malformed or missing.");
    if (token->expiry <=
        std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count())
        return unauthorized("The registration's SAS token has expired.");
    const auto resource = percent_decode(token->resource).value_or(token->resource);
    if (!iequals(resource, id_scope_ + "/registrations/" + r.registration_id))
        return unauthorized("The SAS token's resource '" + resource + "' is not '" + id_scope_ +
                            "/registrations/" + r.registration_id + "'.");
    if (!token->key_name.empty() && token->key_name != "registration")
        return unauthorized("The SAS token's key name must be 'registration'.");

    auto try_keys = [&](const json::object& enrollment, enrollment_kind kind,
                        bool derive) -> std::optional<matched> {
        const auto* keys = object_at(enrollment, "attestation.symmetricKey");
        if (!keys) return std::nullopt;
        std::string primary = text_at(*keys, "primaryKey"),
                    secondary = text_at(*keys, "secondaryKey");
        if (derive) {
            primary = derive_device_key(primary, r.registration_id);
            secondary = derive_device_key(secondary, r.registration_id);
        }
        if (!auth::signature_matches(*token, primary) &&
            !auth::signature_matches(*token, secondary))
            return std::nullopt;
        return matched{enrollment, kind, device_authentication::sas, primary, secondary, {}};
    };
    auto individual = enrollments_.get(enrollment_kind::individual, r.registration_id);
    if (individual) {
        if (auto m = try_keys(*individual, enrollment_kind::individual, false)) return *m;
        return unauthorized("The SAS token was not signed with the enrollment's key.");
    }
    if (individual.error().code() != errc::not_found) return individual.error();
    // A group's device names no group: the one whose derived key verifies the signature is it.
    std::string after;
    for (;;) {
        auto page = enrollments_.query(enrollment_kind::group, "SELECT *", 100, after);
        if (!page) return page.error();
        for (const auto& g : page->items)
            if (auto m = try_keys(g, enrollment_kind::group, true)) return *m;
        if (page->continuation.empty()) break;
        after = page->continuation;
    }
    return unauthorized("No enrollment matches registration '" + r.registration_id +
                        "' and its key.");
}

result<registration_service::matched> registration_service::authenticate_certificate(
    const registration_request& r, sys_time now) {
    const auto& presented = *r.certificate;
    auto leaf = certificates::describe_certificate(base64_encode(presented.chain_der.front()));
    if (!leaf) return unauthorized("The client certificate does not parse.");
    if (!iequals(leaf->common_name, r.registration_id))
        return unauthorized("The certificate's CN '" + leaf->common_name +
                            "' is not the registration id '" + r.registration_id + "'.");
    if (leaf->not_after < now || leaf->not_before > now)
        return unauthorized("The client certificate is expired or not yet valid.");

    auto individual = enrollments_.get(enrollment_kind::individual, r.registration_id);
    if (individual) {
        if (const auto* certs = object_at(*individual, "attestation.x509.clientCertificates"))
            for (std::string which : {"primary", "secondary"})
                if (const auto* info = object_at(*certs, which + ".info"))
                    if (iequals(text_at(*info, "sha1Thumbprint"), leaf->sha1_thumbprint) ||
                        iequals(text_at(*info, "sha256Thumbprint"), leaf->sha256_thumbprint))
                        return matched{*individual,
                                       enrollment_kind::individual,
                                       device_authentication::self_signed,
                                       {},
                                       {},
                                       leaf->sha1_thumbprint};
        return unauthorized("The client certificate is not the enrollment's.");
    }
    if (individual.error().code() != errc::not_found) return individual.error();

    std::string after;
    std::optional<error> why;
    for (;;) {
        auto page = enrollments_.query(enrollment_kind::group, "SELECT *", 100, after);
        if (!page) return page.error();
        for (const auto& g : page->items) {
            const auto* x509 = object_at(g, "attestation.x509");
            if (!x509) continue;
            std::vector<std::string> anchors;
            if (const auto* signing = object_at(*x509, "signingCertificates")) {
                for (auto which : {"primary", "secondary"})
                    if (const auto* c = object_at(*signing, which))
                        anchors.push_back(text_at(*c, "certificate"));
            } else if (const auto* refs = object_at(*x509, "caReferences")) {
                for (auto which : {"primary", "secondary"}) {
                    const auto name = text_at(*refs, which);
                    if (name.empty() || !ca_lookup_) continue;
                    if (auto pem = ca_lookup_(name)) anchors.push_back(std::move(*pem));
                }
            }
            if (anchors.empty()) continue;
            auto verified = certificates::verify_chain_to(presented, anchors);
            if (verified)
                return matched{
                    g, enrollment_kind::group, device_authentication::certificate_authority, {}, {},
                    {}};
            if (!why) why = verified.error();
        }
        if (page->continuation.empty()) break;
        after = page->continuation;
    }
    return unauthorized("No enrollment matches the certificate of '" + r.registration_id + "'" +
                        (why ? ": " + why->message() : std::string(".")));
}

result<json::object> registration_service::register_device(const registration_request& r,
                                                           sys_time now) {
    auto m = authenticate(r, now);
    if (!m) return m.error();
    const auto& e = m->enrollment;
    const std::string group =
        m->kind == enrollment_kind::group ? text_at(e, "enrollmentGroupId") : std::string();
    const auto operation_id = "5." + hex_encode(random_bytes(8)) + "." + random_uuid();

    auto previous = kv_.get(state_key(r.registration_id));
    if (!previous) return previous.error();
    std::optional<json::object> before;
    if (*previous) {
        boost::system::error_code ec;
        auto v = json::parse((*previous)->value, ec);
        if (!ec && v.is_object()) before = std::move(v.get_object());
    }

    json::object state{{"registrationId", r.registration_id},
                       {"createdDateTimeUtc", before && before->contains("createdDateTimeUtc")
                                                  ? before->at("createdDateTimeUtc")
                                                  : json::value(format_iso8601(now))},
                       {"lastUpdatedDateTimeUtc", format_iso8601(now)},
                       {"operationId", operation_id}};
    if (before)
        if (const auto* h = before->if_contains(assigned_hubs_field))
            state[assigned_hubs_field] = *h;
    if (m->authentication == device_authentication::sas) {
        if (!group.empty()) state["symmetricKey"] = json::object{{"enrollmentGroupId", group}};
    } else {
        json::object x509;
        if (!group.empty()) x509["enrollmentGroupId"] = group;
        state["x509"] = std::move(x509);
    }

    if (text_at(e, "provisioningStatus") == "disabled") {
        state["status"] = "disabled";
        state["errorCode"] = 401003;
        state["errorMessage"] = "The enrollment is disabled.";
    } else {
        device_assignment a;
        a.device_id = text_at(e, "deviceId");
        if (a.device_id.empty()) a.device_id = r.registration_id;
        a.authentication = m->authentication;
        a.primary_thumbprint = m->thumbprint;
        a.secondary_thumbprint = m->thumbprint;
        a.primary_key = m->primary_key;
        a.secondary_key = m->secondary_key;
        if (const auto* caps = object_at(e, "capabilities"))
            if (const auto* edge = caps->if_contains("iotEdge"); edge && edge->is_bool())
                a.iot_edge = edge->get_bool();
        // The hubs this registration has been assigned to, the latest last. States written
        // before the history was kept know only their current hub.
        json::array hubs_before;
        if (before)
            if (const auto* h = before->if_contains(assigned_hubs_field); h && h->is_array())
                hubs_before = h->get_array();
        const bool assigned_now = before && text_at(*before, "status") == "assigned";
        if (hubs_before.empty() && assigned_now && !text_at(*before, "assignedHub").empty())
            hubs_before.emplace_back(to_lower(text_at(*before, "assignedHub")));
        // A registration that failed since leaves the device where it last was, with its data.
        const bool assigned_before = !hubs_before.empty();
        const std::string previous_hub = assigned_now ? text_at(*before, "assignedHub")
                                         : assigned_before && hubs_before.back().is_string()
                                             ? std::string(hubs_before.back().get_string())
                                             : std::string();
        auto was_assigned_to = [&](const std::string& host) {
            const auto lower = to_lower(host);
            return std::find_if(hubs_before.begin(), hubs_before.end(), [&](const json::value& h) {
                return h.is_string() && h.get_string() == lower;
            });
        };
        bool migrate = true;
        if (const auto* rp = object_at(e, "reprovisionPolicy"))
            if (const auto* v = rp->if_contains("migrateDeviceData"); v && v->is_bool())
                migrate = v->get_bool();
        auto failed = [&](const error& why) {
            state["status"] = "failed";
            state["errorCode"] = error_code(why);
            state["errorMessage"] = why.message();
        };
        auto hubs = hubs_.list();
        if (!hubs) return hubs.error();
        allocation_input in{e,
                            m->kind,
                            r.registration_id,
                            m->authentication != device_authentication::sas,
                            r.payload,
                            previous_hub,
                            assigned_now ? text_at(*before, "deviceId") : ""};
        auto chosen = allocate(in, *hubs, webhook_);
        if (!chosen) {
            failed(chosen.error());
        } else {
            a.hub = chosen->hub;
            const bool moved = assigned_before && !iequals(previous_hub, a.hub.host_name);
            // Back on a hub it was assigned to before (and left): Azure's
            // reprovisionedToInitialAssignment; the data policy applies as for any move.
            std::string substatus = "initialAssignment";
            if (moved && was_assigned_to(a.hub.host_name) != hubs_before.end())
                substatus = "reprovisionedToInitialAssignment";
            else if (assigned_before)
                substatus = migrate ? "deviceDataMigrated" : "deviceDataReset";
            const auto* twin = e.if_contains("initialTwin");
            if (chosen->initial_twin)
                a.initial_twin = std::move(chosen->initial_twin);
            else if ((!assigned_before || !migrate || moved) && twin && twin->is_object())
                a.initial_twin = twin->get_object();
            if (moved && migrate)
                for (const auto& h : *hubs)
                    if (iequals(h.host_name, previous_hub)) a.migrate_from = h;
            if (auto ok = assign_(a); !ok) {
                failed(ok.error());
            } else {
                state["status"] = "assigned";
                state["substatus"] = substatus;
                state["assignedHub"] = a.hub.host_name;
                state["deviceId"] = a.device_id;
                if (auto it = was_assigned_to(a.hub.host_name); it != hubs_before.end())
                    hubs_before.erase(it);
                hubs_before.emplace_back(to_lower(a.hub.host_name));
                if (hubs_before.size() > assigned_hubs_kept) hubs_before.erase(hubs_before.begin());
                state[assigned_hubs_field] = std::move(hubs_before);
                if (!chosen->payload.is_null()) state["payload"] = std::move(chosen->payload);
            }
        }
    }
    auto written = kv_.put(state_key(r.registration_id), json::serialize(state));
    if (!written) return written.error();
    if (text_at(state, "status") == "disabled") {
        hide_internal(state);
        return json::object{{"operationId", operation_id},
                            {"status", "disabled"},
                            {"registrationState", std::move(state)}};
    }
    return json::object{{"operationId", operation_id}, {"status", "assigning"}};
}

result<json::object> registration_service::operation_status(const registration_request& r,
                                                            std::string_view operation_id,
                                                            sys_time now) {
    if (auto m = authenticate(r, now); !m) return m.error();
    auto current = kv_.get(state_key(r.registration_id));
    if (!current) return current.error();
    boost::system::error_code ec;
    json::value v;
    if (*current) v = json::parse((*current)->value, ec);
    if (!*current || ec || !v.is_object() || text_at(v.get_object(), "operationId") != operation_id)
        return error(errc::not_found, "Operation '" + std::string(operation_id) +
                                          "' of registration '" + r.registration_id +
                                          "' does not exist.");
    auto state = std::move(v.get_object());
    hide_internal(state);
    state["etag"] = registry::etag_for((*current)->version);
    const std::string status = text_at(state, "status");
    return json::object{{"operationId", std::string(operation_id)},
                        {"status", status},
                        {"registrationState", std::move(state)}};
}

result<void> registration_service::check_credentials(const registration_request& r, sys_time now) {
    if (auto m = authenticate(r, now); !m) return m.error();
    return {};
}

result<json::object> registration_service::device_state(const registration_request& r,
                                                        sys_time now) {
    if (auto m = authenticate(r, now); !m) return m.error();
    return state(r.registration_id);
}

result<json::object> registration_service::state(std::string_view registration_id) {
    auto current = kv_.get(state_key(registration_id));
    if (!current) return current.error();
    if (!*current)
        return error(errc::not_found,
                     "Registration '" + std::string(registration_id) + "' does not exist.");
    boost::system::error_code ec;
    auto v = json::parse((*current)->value, ec);
    if (ec || !v.is_object())
        return error(errc::server_error, "A registration state is unreadable.");
    auto s = std::move(v.get_object());
    hide_internal(s);
    s["etag"] = registry::etag_for((*current)->version);
    return s;
}

result<void> registration_service::remove_state(std::string_view registration_id,
                                                std::string_view if_match) {
    auto current = state(registration_id);
    if (!current) return current.error();
    std::string match(if_match);
    if (match.size() >= 2 && match.front() == '"') match = match.substr(1, match.size() - 2);
    if (!match.empty() && match != "*" && match != text_at(*current, "etag"))
        return error(errc::precondition_failed, "The ETag does not match the registration's.");
    return kv_.remove(state_key(registration_id));
}

result<query_page> registration_service::states_of_group(std::string_view group_id, std::size_t max,
                                                         std::string_view continuation) {
    if (max == 0 || max > 1000) max = 1000;
    query_page out;
    std::string after = continuation.empty() ? std::string() : state_key(continuation);
    for (;;) {
        auto page = kv_.scan(state_prefix, after, 500);
        if (!page) return page.error();
        for (const auto& entry : *page) {
            boost::system::error_code ec;
            auto v = json::parse(entry.data.value, ec);
            if (ec || !v.is_object()) continue;
            const auto* key = object_at(v.get_object(), "symmetricKey");
            if (!key) key = object_at(v.get_object(), "x509");
            if (!key || !iequals(text_at(*key, "enrollmentGroupId"), group_id)) continue;
            if (out.items.size() == max) {
                out.continuation = out.items.back().at("registrationId").as_string().c_str();
                return out;
            }
            auto s = std::move(v.get_object());
            hide_internal(s);
            s["etag"] = registry::etag_for(entry.data.version);
            out.items.push_back(std::move(s));
        }
        if (page->size() < 500) break;
        after = page->back().key;
    }
    return out;
}

}  // namespace iothub::dps
