#include "dps/allocation.hpp"

#include "common/crypto.hpp"
#include "common/encoding.hpp"
#include "dps/json_fields.hpp"
#include "http/client.hpp"

#include <boost/json.hpp>

#include <cmath>
#include <cstring>
#include <limits>

namespace iothub::dps {
namespace json = boost::json;

namespace {

error invalid(std::string what) {
    return error(errc::argument_invalid, std::move(what));
}

const linked_hub* find(const std::vector<linked_hub>& hubs, std::string_view host) {
    for (const auto& h : hubs)
        if (iequals(h.host_name, host)) return &h;
    return nullptr;
}

// Weighted rendezvous hashing: each hub scores -ln(u)/weight with u uniform in (0, 1) from a
// hash of (registration id, hub); the lowest score wins. Stable across restarts and nodes.
const linked_hub& hashed(std::string_view registration_id,
                         const std::vector<const linked_hub*>& candidates) {
    const linked_hub* best = candidates.front();
    double best_score = std::numeric_limits<double>::infinity();
    for (const auto* h : candidates) {
        const auto digest = sha256(to_lower(registration_id) + "\n" + to_lower(h->host_name));
        std::uint64_t bits = 0;
        std::memcpy(&bits, digest.data(), sizeof bits);
        const double u = (static_cast<double>(bits >> 11) + 0.5) / 9007199254740992.0;  // 2^53
        const double score = -std::log(u) / std::max(1, h->allocation_weight);
        if (score < best_score) {
            best_score = score;
            best = h;
        }
    }
    return *best;
}

json::object without_keys(const json::object& enrollment) {
    auto out = enrollment;
    if (const auto* a = out.if_contains("attestation"); a && a->is_object())
        out["attestation"] = json::object{{"type", text_member(a->get_object(), "type")}};
    return out;
}

result<allocation> custom(const allocation_input& in, const std::vector<const linked_hub*>& hubs,
                          const webhook_function& webhook) {
    const auto* definition = member(in.enrollment, "customAllocationDefinition");
    const auto url = definition && definition->is_object()
                         ? text_member(definition->get_object(), "webhookUrl")
                         : std::string();
    if (url.empty()) return invalid("The enrollment's custom allocation has no webhookUrl.");
    json::object context{{"registrationId", in.registration_id}};
    if (!in.current_hub.empty()) context["currentIotHubHostName"] = in.current_hub;
    if (!in.current_device_id.empty()) context["currentDeviceId"] = in.current_device_id;
    context[in.x509 ? "x509" : "symmetricKey"] = json::object();
    if (!in.payload.is_null()) context["payload"] = in.payload;
    json::array linked;
    for (const auto* h : hubs) linked.emplace_back(h->host_name);
    json::object request{
        {in.kind == enrollment_kind::individual ? "individualEnrollment" : "enrollmentGroup",
         without_keys(in.enrollment)},
        {"deviceRuntimeContext", std::move(context)},
        {"linkedHubs", std::move(linked)}};
    auto answer = webhook(url, request);
    if (!answer) return answer.error();
    const auto chosen = text_member(*answer, "iotHubHostName");
    if (chosen.empty()) return invalid("The custom allocation webhook answered no iotHubHostName.");
    allocation out;
    bool listed = false;
    for (const auto* h : hubs)
        if (iequals(h->host_name, chosen)) {
            out.hub = *h;
            listed = true;
        }
    if (!listed)
        return invalid("The custom allocation webhook chose " + chosen +
                       ", which is not one of the linked hubs it was offered.");
    if (const auto* twin = member(*answer, "initialTwin"); twin && twin->is_object())
        out.initial_twin = twin->get_object();
    if (const auto* payload = member(*answer, "payload")) out.payload = *payload;
    return out;
}

}  // namespace

webhook_function http_webhook(std::vector<std::filesystem::path> extra_ca) {
    // Connections to webhooks are kept between registrations; one that could not be reached is
    // not called for 10 s (registrations fail at once meanwhile rather than each holding a
    // blocking thread for the timeout).
    auto pools = std::make_shared<http::client_pools>(std::chrono::seconds(10));
    return [extra_ca = std::move(extra_ca), pools](
               std::string_view url, const json::object& request) -> result<json::object> {
        auto origin = http::parse_url(url);
        if (!origin) return origin.error();
        http::client_options options;
        options.timeout = std::chrono::seconds(15);
        options.extra_ca_files = extra_ca;
        auto r = pools->get(*origin, options)
                     ->request("POST", origin->target, json::serialize(request),
                               {{"Content-Type", "application/json; charset=utf-8"}});
        if (!r)
            return error(
                errc::service_unavailable,
                "The custom allocation webhook could not be reached: " + r.error().message());
        if (r->status != 200)
            return invalid("The custom allocation webhook answered HTTP " +
                           std::to_string(r->status) + ".");
        boost::system::error_code ec;
        auto v = json::parse(r->body, ec);
        if (ec || !v.is_object())
            return invalid(
                "The custom allocation webhook answered something other than a JSON "
                "object.");
        return std::move(v.get_object());
    };
}

result<allocation> allocate(const allocation_input& in, const std::vector<linked_hub>& hubs,
                            const webhook_function& webhook) {
    std::vector<const linked_hub*> candidates;
    std::vector<std::string> named;
    if (const auto* list = member(in.enrollment, "iotHubs"); list && list->is_array())
        for (const auto& h : list->get_array())
            if (h.is_string()) named.emplace_back(h.get_string());
    if (!named.empty()) {
        for (const auto& n : named)
            if (const auto* h = find(hubs, n)) candidates.push_back(h);
        if (candidates.empty()) return invalid("None of the enrollment's iotHubs is a linked hub.");
    } else {
        for (const auto& h : hubs)
            if (h.apply_allocation_policy) candidates.push_back(&h);
        if (candidates.empty())
            return invalid("No linked hub takes part in allocation (applyAllocationPolicy).");
    }

    bool update_assignment = true;
    if (const auto* rp = member(in.enrollment, "reprovisionPolicy"); rp && rp->is_object())
        if (const auto* v = member(rp->get_object(), "updateHubAssignment"); v && v->is_bool())
            update_assignment = v->get_bool();
    if (!update_assignment && !in.current_hub.empty())
        if (const auto* h = find(hubs, in.current_hub)) return allocation{*h, std::nullopt, {}};

    const auto policy = text_member(in.enrollment, "allocationPolicy");
    if (iequals(policy, "custom")) return custom(in, candidates, webhook);
    if (iequals(policy, "static")) {
        std::string host =
            named.empty() ? text_member(in.enrollment, "iotHubHostName") : named.front();
        if (host.empty()) {
            if (candidates.size() != 1)
                return invalid(
                    "Static allocation needs the enrollment to name its hub in iotHubs.");
            return allocation{*candidates.front(), std::nullopt, {}};
        }
        const auto* h = find(hubs, host);
        if (!h) return invalid("The enrollment's hub " + host + " is not linked.");
        return allocation{*h, std::nullopt, {}};
    }
    return allocation{hashed(in.registration_id, candidates), std::nullopt, {}};
}

}  // namespace iothub::dps
