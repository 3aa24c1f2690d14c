#include "dps/enrollments.hpp"

#include "certificates/ca_store.hpp"
#include "common/crypto.hpp"
#include "common/encoding.hpp"
#include "dps/errors.hpp"
#include "dps/json_fields.hpp"
#include "registry/identity.hpp"

#include <boost/json.hpp>

#include <array>

namespace iothub::dps {
namespace json = boost::json;

namespace {

constexpr std::size_t max_bulk = 10;
constexpr std::size_t key_bytes = 64;  // what DPS generates

error invalid(std::string what) {
    return error(errc::argument_invalid, std::move(what));
}

std::string prefix_of(enrollment_kind k) {
    return k == enrollment_kind::individual ? "dps/enrollment/" : "dps/group/";
}

std::string key_of(enrollment_kind k, std::string_view id) {
    return prefix_of(k) + to_lower(id);
}

std::string_view noun(enrollment_kind k) {
    return k == enrollment_kind::individual ? "Enrollment" : "Enrollment group";
}

result<std::string> string_field(const json::object& o, std::string_view name,
                                 std::string_view where, bool required = false) {
    const auto* v = member(o, name);
    if (!v) {
        if (required) return invalid(std::string(where) + " has no " + std::string(name) + ".");
        return std::string();
    }
    if (!v->is_string())
        return invalid(std::string(where) + ": " + std::string(name) + " must be a string.");
    return std::string(v->get_string());
}

result<bool> bool_field(const json::object& o, std::string_view name, std::string_view where,
                        bool fallback) {
    const auto* v = member(o, name);
    if (!v) return fallback;
    if (!v->is_bool())
        return invalid(std::string(where) + ": " + std::string(name) + " must be true or false.");
    return v->get_bool();
}

result<std::string> symmetric_key(const json::object& keys, std::string_view name) {
    auto given = string_field(keys, name, "attestation.symmetricKey");
    if (!given) return given.error();
    if (given->empty()) return base64_encode(random_bytes(key_bytes));
    auto raw = base64_decode(*given);
    if (!raw || raw->size() < 16 || raw->size() > 64)
        return invalid("attestation.symmetricKey." + std::string(name) +
                       " must be Base64 of 16 to 64 bytes.");
    return *given;
}

json::object certificate_json(const std::string& pem, const certificates::certificate_info& i) {
    return {{"certificate", pem},
            {"info",
             {{"subjectName", i.subject_name},
              {"sha1Thumbprint", i.sha1_thumbprint},
              {"sha256Thumbprint", i.sha256_thumbprint},
              {"issuerName", i.issuer_name},
              {"notBeforeUtc", format_iso8601(i.not_before)},
              {"notAfterUtc", format_iso8601(i.not_after)},
              {"serialNumber", i.serial_number},
              {"version", i.version}}}};
}

// {"primary": {"certificate": ...}, "secondary": ...}: each described from its certificate.
result<json::object> certificates_of(const json::object& x509, std::string_view name) {
    const auto* v = member(x509, name);
    if (!v || !v->is_object()) return invalid("attestation.x509 has no " + std::string(name) + ".");
    json::object out;
    for (auto which : {"primary", "secondary"}) {
        const auto* c = member(v->get_object(), which);
        if (!c) {
            if (std::string_view(which) == "primary")
                return invalid("attestation.x509." + std::string(name) + " has no primary.");
            continue;
        }
        if (!c->is_object())
            return invalid("attestation.x509." + std::string(name) + "." + which +
                           " must be an object.");
        auto pem = string_field(c->get_object(), "certificate",
                                "attestation.x509." + std::string(name) + "." + which, true);
        if (!pem) return pem.error();
        auto info = certificates::describe_certificate(*pem);
        if (!info)
            return invalid("attestation.x509." + std::string(name) + "." + which + ": " +
                           info.error().message());
        out[which] = certificate_json(*pem, *info);
    }
    return out;
}

result<json::object> attestation_of(enrollment_kind k, const json::object& doc) {
    const auto* a = member(doc, "attestation");
    if (!a || !a->is_object()) return invalid("The enrollment has no attestation.");
    auto type = string_field(a->get_object(), "type", "attestation", true);
    if (!type) return type.error();
    if (iequals(*type, "tpm"))
        return invalid("TPM attestation is not supported by this hub; use symmetricKey or x509.");
    if (iequals(*type, "symmetricKey")) {
        const auto* keys = member(a->get_object(), "symmetricKey");
        json::object given = keys && keys->is_object() ? keys->get_object() : json::object{};
        auto primary = symmetric_key(given, "primaryKey");
        if (!primary) return primary.error();
        auto secondary = symmetric_key(given, "secondaryKey");
        if (!secondary) return secondary.error();
        return json::object{
            {"type", "symmetricKey"},
            {"symmetricKey", {{"primaryKey", *primary}, {"secondaryKey", *secondary}}}};
    }
    if (iequals(*type, "x509")) {
        const auto* x = member(a->get_object(), "x509");
        if (!x || !x->is_object()) return invalid("attestation has type x509 but no x509.");
        const auto& xo = x->get_object();
        json::object out_x509;
        if (k == enrollment_kind::individual) {
            auto certs = certificates_of(xo, "clientCertificates");
            if (!certs) return certs.error();
            out_x509["clientCertificates"] = std::move(*certs);
        } else if (member(xo, "caReferences")) {
            const auto* refs = member(xo, "caReferences");
            if (!refs->is_object())
                return invalid("attestation.x509.caReferences must be an object.");
            auto primary =
                string_field(refs->get_object(), "primary", "attestation.x509.caReferences", true);
            if (!primary) return primary.error();
            json::object r{{"primary", *primary}};
            auto secondary =
                string_field(refs->get_object(), "secondary", "attestation.x509.caReferences");
            if (!secondary) return secondary.error();
            if (!secondary->empty()) r["secondary"] = *secondary;
            out_x509["caReferences"] = std::move(r);
        } else {
            auto certs = certificates_of(xo, "signingCertificates");
            if (!certs) return certs.error();
            out_x509["signingCertificates"] = std::move(*certs);
        }
        return json::object{{"type", "x509"}, {"x509", std::move(out_x509)}};
    }
    return invalid("Unknown attestation type '" + *type + "'; use symmetricKey or x509.");
}

// The document as stored: every field checked, defaults filled in, read-only fields set.
result<json::object> normalize(enrollment_kind k, std::string_view id, const json::object& doc,
                               const json::object* existing, sys_time now) {
    json::object out;
    out[id_field(k)] = std::string(id);
    auto attestation = attestation_of(k, doc);
    if (!attestation) return attestation.error();
    out["attestation"] = std::move(*attestation);
    const std::string where(noun(k));

    if (k == enrollment_kind::individual) {
        auto device = string_field(doc, "deviceId", where);
        if (!device) return device.error();
        if (!device->empty()) {
            if (auto ok = registry::validate_id(*device, "deviceId"); !ok) return ok.error();
            out["deviceId"] = *device;
        }
        if (const auto* info = member(doc, "optionalDeviceInformation")) {
            if (!info->is_object()) return invalid("optionalDeviceInformation must be an object.");
            out["optionalDeviceInformation"] = *info;
        }
    }
    auto hub = string_field(doc, "iotHubHostName", where);
    if (!hub) return hub.error();
    if (!hub->empty()) out["iotHubHostName"] = *hub;

    if (const auto* twin = member(doc, "initialTwin")) {
        if (!twin->is_object()) return invalid("initialTwin must be an object.");
        const auto& t = twin->get_object();
        json::object clean;
        if (const auto* tags = member(t, "tags")) {
            if (!tags->is_object()) return invalid("initialTwin.tags must be an object.");
            clean["tags"] = *tags;
        }
        if (const auto* props = member(t, "properties")) {
            if (!props->is_object()) return invalid("initialTwin.properties must be an object.");
            if (const auto* desired = member(props->get_object(), "desired")) {
                if (!desired->is_object())
                    return invalid("initialTwin.properties.desired must be an object.");
                clean["properties"] = json::object{{"desired", *desired}};
            }
        }
        out["initialTwin"] = std::move(clean);
    }

    auto status = string_field(doc, "provisioningStatus", where);
    if (!status) return status.error();
    if (status->empty() || iequals(*status, "enabled"))
        out["provisioningStatus"] = "enabled";
    else if (iequals(*status, "disabled"))
        out["provisioningStatus"] = "disabled";
    else
        return invalid("provisioningStatus is '" + *status + "'; use enabled or disabled.");

    json::object reprovision;
    const auto* rp = member(doc, "reprovisionPolicy");
    if (rp && !rp->is_object()) return invalid("reprovisionPolicy must be an object.");
    const json::object none;
    for (auto field : {"updateHubAssignment", "migrateDeviceData"}) {
        auto v = bool_field(rp ? rp->get_object() : none, field, "reprovisionPolicy", true);
        if (!v) return v.error();
        reprovision[field] = *v;
    }
    out["reprovisionPolicy"] = std::move(reprovision);

    auto allocation = string_field(doc, "allocationPolicy", where);
    if (!allocation) return allocation.error();
    constexpr std::array<std::string_view, 4> policies = {"hashed", "geoLatency", "static",
                                                          "custom"};
    std::string chosen = "hashed";
    if (!allocation->empty()) {
        bool known = false;
        for (auto p : policies)
            if (iequals(*allocation, p)) {
                chosen = std::string(p);
                known = true;
            }
        if (!known)
            return invalid("allocationPolicy is '" + *allocation +
                           "'; use hashed, geoLatency, static or custom.");
    }
    out["allocationPolicy"] = chosen;
    if (const auto* hubs = member(doc, "iotHubs")) {
        if (!hubs->is_array()) return invalid("iotHubs must be an array of host names.");
        for (const auto& h : hubs->get_array())
            if (!h.is_string()) return invalid("iotHubs must be an array of host names.");
        out["iotHubs"] = *hubs;
    }
    if (const auto* custom = member(doc, "customAllocationDefinition")) {
        if (!custom->is_object()) return invalid("customAllocationDefinition must be an object.");
        auto url =
            string_field(custom->get_object(), "webhookUrl", "customAllocationDefinition", true);
        if (!url) return url.error();
        const auto lower = to_lower(*url);
        if (!lower.starts_with("https://") && !lower.starts_with("http://"))
            return invalid("customAllocationDefinition.webhookUrl must be an http(s) URL.");
        auto version =
            string_field(custom->get_object(), "apiVersion", "customAllocationDefinition");
        if (!version) return version.error();
        out["customAllocationDefinition"] =
            json::object{{"webhookUrl", *url}, {"apiVersion", *version}};
    }
    if (chosen == "custom" && !out.contains("customAllocationDefinition"))
        return invalid("allocationPolicy custom needs customAllocationDefinition.webhookUrl.");

    json::object capabilities{{"iotEdge", false}};
    if (const auto* c = member(doc, "capabilities")) {
        if (!c->is_object()) return invalid("capabilities must be an object.");
        auto edge = bool_field(c->get_object(), "iotEdge", "capabilities", false);
        if (!edge) return edge.error();
        capabilities["iotEdge"] = *edge;
    }
    out["capabilities"] = std::move(capabilities);

    const auto* created = existing ? existing->if_contains("createdDateTimeUtc") : nullptr;
    out["createdDateTimeUtc"] = created ? *created : json::value(format_iso8601(now));
    out["lastUpdatedDateTimeUtc"] = format_iso8601(now);
    return out;
}

json::object shown(json::object stored, std::uint64_t version) {
    stored["etag"] = registry::etag_for(version);
    return stored;
}

std::string unquoted(std::string_view etag) {
    if (etag.size() >= 2 && etag.front() == '"' && etag.back() == '"')
        etag = etag.substr(1, etag.size() - 2);
    return std::string(etag);
}

error missing(enrollment_kind k, std::string_view id) {
    return error(errc::not_found,
                 std::string(noun(k)) + " '" + std::string(id) + "' does not exist.");
}

}  // namespace

std::string_view id_field(enrollment_kind k) {
    return k == enrollment_kind::individual ? "registrationId" : "enrollmentGroupId";
}

result<void> check_registration_id(std::string_view id, std::string_view what) {
    auto bad = [&] {
        return invalid(std::string(what) + " '" + std::string(id) +
                       "' is not valid: 1 to 128 letters, digits, '-', '.', '_' and ':', ending "
                       "with a letter, a digit or '-'.");
    };
    if (id.empty() || id.size() > 128) return bad();
    for (char c : id)
        if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '.' && c != '_' &&
            c != ':')
            return bad();
    const char last = id.back();
    if (!std::isalnum(static_cast<unsigned char>(last)) && last != '-') return bad();
    return {};
}

result<json::object> enrollment_store::put(enrollment_kind k, std::string_view id,
                                           const json::object& doc, std::string_view if_match,
                                           sys_time now) {
    if (auto ok = check_registration_id(id, id_field(k)); !ok) return ok.error();
    auto given = string_field(doc, id_field(k), noun(k));
    if (!given) return given.error();
    if (!given->empty() && !iequals(*given, id))
        return invalid(std::string(id_field(k)) + " '" + *given + "' in the body differs from '" +
                       std::string(id) + "' in the path.");
    const auto key = key_of(k, id);
    auto current = kv_.get(key);
    if (!current) return current.error();
    std::optional<json::object> existing;
    if (*current) {
        boost::system::error_code ec;
        auto v = json::parse((*current)->value, ec);
        if (!ec && v.is_object()) existing = std::move(v.get_object());
    }
    const auto match = unquoted(if_match);
    if (!match.empty()) {
        if (!*current) return missing(k, id);
        if (match != "*" && match != registry::etag_for((*current)->version))
            return error(errc::precondition_failed,
                         "The ETag does not match the " + to_lower(noun(k)) + "'s current one.");
    }
    auto stored = normalize(k, given->empty() ? id : std::string_view(*given), doc,
                            existing ? &*existing : nullptr, now);
    if (!stored) return stored.error();
    auto version = kv_.put(key, json::serialize(*stored),
                           *current ? storage::precondition::version((*current)->version)
                                    : storage::precondition::absent());
    if (!version) {
        if (version.error().code() == errc::precondition_failed)
            return error(errc::precondition_failed, std::string(noun(k)) + " '" + std::string(id) +
                                                        "' changed meanwhile; read it again.");
        return version.error();
    }
    return shown(std::move(*stored), *version);
}

result<json::object> enrollment_store::get(enrollment_kind k, std::string_view id) {
    auto current = kv_.get(key_of(k, id));
    if (!current) return current.error();
    if (!*current) return missing(k, id);
    boost::system::error_code ec;
    auto v = json::parse((*current)->value, ec);
    if (ec || !v.is_object())
        return error(errc::server_error,
                     std::string(noun(k)) + " '" + std::string(id) + "' is stored unreadably.");
    return shown(std::move(v.get_object()), (*current)->version);
}

result<void> enrollment_store::remove(enrollment_kind k, std::string_view id,
                                      std::string_view if_match) {
    const auto key = key_of(k, id);
    auto current = kv_.get(key);
    if (!current) return current.error();
    if (!*current) return missing(k, id);
    const auto match = unquoted(if_match);
    if (!match.empty() && match != "*" && match != registry::etag_for((*current)->version))
        return error(errc::precondition_failed,
                     "The ETag does not match the " + to_lower(noun(k)) + "'s current one.");
    auto r = kv_.remove(key, storage::precondition::version((*current)->version));
    if (!r && r.error().code() == errc::precondition_failed)
        return error(errc::precondition_failed, std::string(noun(k)) + " '" + std::string(id) +
                                                    "' changed meanwhile; read it again.");
    return r;
}

result<json::object> enrollment_store::attestation(enrollment_kind k, std::string_view id) {
    auto e = get(k, id);
    if (!e) return e.error();
    const auto* a = e->if_contains("attestation");
    if (!a || !a->is_object())
        return error(errc::server_error, std::string(noun(k)) + " has no attestation.");
    return a->get_object();
}

result<query_page> enrollment_store::query(enrollment_kind k, std::string_view query_text,
                                           std::size_t max, std::string_view continuation) {
    // DPS's query language is SELECT * over the collection; a filter would be silently wrong.
    const std::string text = to_lower(query_text);
    if (!text.starts_with("select *") || text.find(" where ") != std::string::npos)
        return invalid(
            "Only 'SELECT * FROM " +
            std::string(k == enrollment_kind::individual ? "enrollments" : "enrollmentGroups") +
            "' is supported; the query was '" + std::string(query_text) + "'.");
    if (max == 0 || max > 1000) max = 1000;
    const auto prefix = prefix_of(k);
    auto page = kv_.scan(
        prefix, continuation.empty() ? std::string() : prefix + to_lower(continuation), max + 1);
    if (!page) return page.error();
    query_page out;
    for (std::size_t i = 0; i < page->size() && i < max; ++i) {
        boost::system::error_code ec;
        auto v = json::parse((*page)[i].data.value, ec);
        if (ec || !v.is_object()) continue;
        out.items.push_back(shown(std::move(v.get_object()), (*page)[i].data.version));
    }
    if (page->size() > max) out.continuation = (*page)[max - 1].key.substr(prefix.size());
    return out;
}

result<json::object> enrollment_store::bulk(enrollment_kind k, const json::object& request,
                                            sys_time now) {
    auto mode = string_field(request, "mode", "The bulk operation", true);
    if (!mode) return mode.error();
    const auto* list =
        member(request, k == enrollment_kind::individual ? "enrollments" : "enrollmentGroups");
    if (!list) list = member(request, "enrollments");
    if (!list || !list->is_array()) return invalid("The bulk operation has no enrollments array.");
    if (list->get_array().size() > max_bulk)
        return invalid("A bulk operation takes at most " + std::to_string(max_bulk) +
                       " enrollments; it has " + std::to_string(list->get_array().size()) + ".");
    const bool create = iequals(*mode, "create"), update = iequals(*mode, "update"),
               if_match = iequals(*mode, "updateIfMatchETag"), del = iequals(*mode, "delete");
    if (!create && !update && !if_match && !del)
        return invalid("Bulk mode '" + *mode +
                       "' is unknown; use create, update, "
                       "updateIfMatchETag or delete.");
    json::array errors;
    for (const auto& item : list->get_array()) {
        std::string id;
        result<void> outcome;
        if (!item.is_object()) {
            outcome = invalid("Each enrollment must be an object.");
        } else {
            const auto& o = item.get_object();
            auto given = string_field(o, id_field(k), noun(k), true);
            if (!given) {
                outcome = given.error();
            } else {
                id = *given;
                auto etag = string_field(o, "etag", noun(k));
                const std::string match = etag ? *etag : std::string();
                if (del) {
                    outcome = remove(k, id, match);
                } else if (create) {
                    auto exists = kv_.get(key_of(k, id));
                    if (!exists)
                        outcome = exists.error();
                    else if (*exists)
                        outcome = error(errc::already_exists,
                                        std::string(noun(k)) + " '" + id + "' already exists.");
                    else if (auto r = put(k, id, o, "", now); !r)
                        outcome = r.error();
                } else if (auto r = put(k, id, o, if_match ? match : std::string(), now); !r) {
                    outcome = r.error();
                }
            }
        }
        if (!outcome)
            errors.push_back(json::object{{id_field(k), id},
                                          {"errorCode", error_code(outcome.error())},
                                          {"errorStatus", outcome.error().message()}});
    }
    return json::object{{"isSuccessful", errors.empty()}, {"errors", std::move(errors)}};
}

}  // namespace iothub::dps
