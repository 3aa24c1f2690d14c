#include "dps/linked_hubs.hpp"

#include "auth/connection_string.hpp"
#include "auth/sas.hpp"
#include "common/encoding.hpp"
#include "common/time.hpp"
#include "dps/json_fields.hpp"
#include "http/client.hpp"

#include <boost/json.hpp>

#include <algorithm>
#include <chrono>
#include <optional>

namespace iothub::dps {
namespace json = boost::json;

namespace {

constexpr std::string_view prefix = "dps/linked-hub/";
constexpr std::string_view api_version = "api-version=2021-04-12";

error invalid(std::string what) {
    return error(errc::argument_invalid, std::move(what));
}

std::string key_of(std::string_view host) {
    return std::string(prefix) + to_lower(host);
}

json::object stored(const linked_hub& h) {
    json::object o{{"hostName", h.host_name},
                   {"connectionString", h.connection_string},
                   {"allocationWeight", h.allocation_weight},
                   {"applyAllocationPolicy", h.apply_allocation_policy}};
    if (!h.ca_file.empty()) o["caFile"] = h.ca_file;
    return o;
}

std::optional<linked_hub> from_stored(std::string_view text) {
    boost::system::error_code ec;
    auto v = json::parse(text, ec);
    if (ec || !v.is_object()) return std::nullopt;
    const auto& o = v.get_object();
    linked_hub h;
    h.host_name = text_member(o, "hostName");
    h.connection_string = text_member(o, "connectionString");
    h.ca_file = text_member(o, "caFile");
    if (const auto* w = o.if_contains("allocationWeight"); w && w->is_int64())
        h.allocation_weight = static_cast<int>(w->get_int64());
    if (const auto* a = o.if_contains("applyAllocationPolicy"); a && a->is_bool())
        h.apply_allocation_policy = a->get_bool();
    if (h.host_name.empty()) return std::nullopt;
    return h;
}

// Connections to linked hubs are kept between registrations, and a hub that could not be reached
// is not called again for a while: each call waits up to its deadline on the blocking pool, which
// the registry and the twins share, so a hub that has gone silent would otherwise hold a pool
// thread per registration for every call it makes.
http::client_pools& hub_connections() {
    static http::client_pools pools(std::chrono::seconds(10));
    return pools;
}

// One linked hub's service API, signed with its policy key.
class service_client {
  public:
    static result<service_client> open(const linked_hub& hub,
                                       const std::vector<std::filesystem::path>& own_ca) {
        auto cs = auth::connection_string::parse(hub.connection_string);
        if (!cs) return cs.error();
        http::client_options options;
        options.timeout = std::chrono::seconds(10);
        options.extra_ca_files = own_ca;
        if (!hub.ca_file.empty()) options.extra_ca_files.emplace_back(hub.ca_file);
        http::url origin{true, hub.host_name, 443, "/"};
        return service_client(hub.host_name, hub_connections().get(origin, options),
                              cs->get("SharedAccessKeyName").value_or(""),
                              cs->get("SharedAccessKey").value_or(""));
    }

    result<http::client_response> call(std::string_view method, const std::string& target,
                                       std::string_view body, std::string_view if_match = {}) {
        const auto expiry =
            std::chrono::duration_cast<std::chrono::seconds>(now().time_since_epoch()).count() +
            300;
        std::vector<std::pair<std::string, std::string>> headers{
            {"Authorization", auth::make_sas_token(host_, key_, expiry, policy_)},
            {"Content-Type", "application/json; charset=utf-8"},
            {"Accept", "application/json"}};
        if (!if_match.empty()) headers.emplace_back("If-Match", std::string(if_match));
        auto r = connections_->request(method, target, body, headers);
        if (!r)
            return error(errc::service_unavailable,
                         "Linked hub " + host_ + ": " + r.error().message());
        return r;
    }

    // A non-2xx answer as an error the registration reports.
    error failure(const http::client_response& r, std::string_view what) const {
        std::string message;
        boost::system::error_code ec;
        auto v = json::parse(r.body, ec);
        if (!ec && v.is_object())
            if (const auto* m = v.get_object().if_contains("Message"); m && m->is_string())
                message = std::string(m->get_string());
        if (message.empty()) message = r.body.substr(0, 200);
        const auto code = r.status == 401 || r.status == 403 ? errc::unauthorized
                          : r.status == 404                  ? errc::device_not_found
                          : r.status >= 500                  ? errc::service_unavailable
                                                             : errc::bad_request;
        return error(code, "Linked hub " + host_ + " refused to " + std::string(what) + " (HTTP " +
                               std::to_string(r.status) + "): " + message);
    }

  private:
    service_client(std::string host, std::shared_ptr<http::client_pool> connections,
                   std::string policy, std::string key)
        : host_(std::move(host)),
          connections_(std::move(connections)),
          policy_(std::move(policy)),
          key_(std::move(key)) {}

    std::string host_;
    std::shared_ptr<http::client_pool> connections_;
    std::string policy_, key_;
};

std::string device_target(std::string_view what, std::string_view device_id) {
    return "/" + std::string(what) + "/" + percent_encode(device_id) + "?" +
           std::string(api_version);
}

}  // namespace

linked_hub_store::linked_hub_store(storage::kv_store& kv, std::string own_host_name)
    : kv_(kv), own_(std::move(own_host_name)) {}

result<std::vector<linked_hub>> linked_hub_store::list() {
    // Links are few (Azure allows 50 per DPS); one page holds them.
    auto entries = kv_.scan(prefix, {}, 1000);
    if (!entries) return entries.error();
    std::vector<linked_hub> out;
    linked_hub self{own_, {}, 1, true, {}};
    for (const auto& e : *entries) {
        auto h = from_stored(e.data.value);
        if (!h) continue;
        if (iequals(h->host_name, own_)) {
            self.allocation_weight = h->allocation_weight;
            self.apply_allocation_policy = h->apply_allocation_policy;
            continue;
        }
        out.push_back(std::move(*h));
    }
    std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
        return to_lower(a.host_name) < to_lower(b.host_name);
    });
    out.insert(out.begin(), std::move(self));
    return out;
}

result<linked_hub> linked_hub_store::put(const json::object& body, std::string_view host_name) {
    linked_hub h;
    const auto* cs = member(body, "connectionString");
    if (cs && !cs->is_string()) return invalid("connectionString must be a string.");
    if (cs) {
        auto parsed = auth::connection_string::parse(cs->get_string());
        if (!parsed) return invalid("connectionString does not parse: " + parsed.error().message());
        for (const auto* field : {"HostName", "SharedAccessKeyName", "SharedAccessKey"})
            if (parsed->get(field).value_or("").empty())
                return invalid("connectionString has no " + std::string(field) +
                               ": link a hub by a shared access policy's connection string.");
        if (!base64_decode(*parsed->get("SharedAccessKey")))
            return invalid("connectionString's SharedAccessKey is not Base64.");
        h.host_name = *parsed->get("HostName");
        if (!iequals(h.host_name, host_name))
            return invalid("The connection string is for " + h.host_name + ", not " +
                           std::string(host_name) + ".");
        h.connection_string = std::string(cs->get_string());
    } else {
        h.host_name = std::string(host_name);
    }
    if (h.host_name.empty()) return invalid("A linked hub needs a host name.");
    if (iequals(h.host_name, own_)) {
        h.host_name = own_;
        h.connection_string.clear();  // this hub assigns directly
    } else if (h.connection_string.empty()) {
        return invalid("Linking hub " + h.host_name + " needs its connectionString.");
    }
    if (const auto* w = member(body, "allocationWeight")) {
        if (!w->is_int64() || w->get_int64() < 1 || w->get_int64() > max_allocation_weight)
            return invalid("allocationWeight must be a whole number from 1 to " +
                           std::to_string(max_allocation_weight) + ".");
        h.allocation_weight = static_cast<int>(w->get_int64());
    }
    if (const auto* a = member(body, "applyAllocationPolicy")) {
        if (!a->is_bool()) return invalid("applyAllocationPolicy must be true or false.");
        h.apply_allocation_policy = a->get_bool();
    }
    if (const auto* f = member(body, "caFile")) {
        if (!f->is_string()) return invalid("caFile must be a path.");
        h.ca_file = std::string(f->get_string());
        std::error_code ec;
        if (!h.ca_file.empty() && !std::filesystem::is_regular_file(h.ca_file, ec))
            return invalid("caFile " + h.ca_file + " is not a readable file on the hub's machine.");
    }
    auto written = kv_.put(key_of(h.host_name), json::serialize(stored(h)));
    if (!written) return written.error();
    return h;
}

result<void> linked_hub_store::remove(std::string_view host_name) {
    if (iequals(host_name, own_))
        return invalid("This hub (" + own_ +
                       ") is always linked; set its applyAllocationPolicy "
                       "to false to keep hashed allocation away from it.");
    auto r = kv_.remove(key_of(host_name), storage::precondition::exists());
    if (!r && r.error().code() == errc::not_found)
        return error(errc::not_found, "Hub " + std::string(host_name) + " is not linked.");
    return r;
}

json::object describe(const linked_hub& h) {
    json::object o{{"hostName", h.host_name},
                   {"allocationWeight", h.allocation_weight},
                   {"applyAllocationPolicy", h.apply_allocation_policy},
                   {"self", h.is_self()}};
    if (!h.is_self()) {
        auto cs = auth::connection_string::parse(h.connection_string);
        if (cs) {
            cs->set("SharedAccessKey", "****");
            o["connectionString"] = cs->to_string();
        }
    }
    if (!h.ca_file.empty()) o["caFile"] = h.ca_file;
    return o;
}

result<void> assign_in_linked_hub(const linked_hub& hub, const device_assignment& a,
                                  const std::vector<std::filesystem::path>& own_ca) {
    auto client = service_client::open(hub, own_ca);
    if (!client) return client.error();
    const auto target = device_target("devices", a.device_id);
    auto current = client->call("GET", target, {});
    if (!current) return current.error();
    json::object device{{"deviceId", a.device_id}};
    std::string if_match;
    if (current->status == 200) {
        boost::system::error_code ec;
        auto v = json::parse(current->body, ec);
        if (ec || !v.is_object())
            return error(errc::service_unavailable,
                         "Linked hub " + hub.host_name + " answered a device that does not parse.");
        device = std::move(v.get_object());
        const auto* etag = device.if_contains("etag");
        if_match = etag && etag->is_string() ? std::string(etag->get_string()) : "*";
        if (if_match.front() != '"' && if_match != "*") if_match = "\"" + if_match + "\"";
    } else if (current->status != 404) {
        return client->failure(*current, "read device " + a.device_id);
    }
    json::object authentication;
    switch (a.authentication) {
        case device_authentication::sas:
            authentication = {{"type", "sas"},
                              {"symmetricKey",
                               {{"primaryKey", a.primary_key}, {"secondaryKey", a.secondary_key}}}};
            break;
        case device_authentication::self_signed:
            authentication = {{"type", "selfSigned"},
                              {"x509Thumbprint",
                               {{"primaryThumbprint", a.primary_thumbprint},
                                {"secondaryThumbprint", a.secondary_thumbprint}}}};
            break;
        case device_authentication::certificate_authority:
            authentication = {{"type", "certificateAuthority"}};
            break;
    }
    device["authentication"] = std::move(authentication);
    device["capabilities"] = json::object{{"iotEdge", a.iot_edge}};
    auto put = client->call("PUT", target, json::serialize(device), if_match);
    if (!put) return put.error();
    if (put->status != 200 && put->status != 201)
        return client->failure(*put, "write device " + a.device_id);
    if (!a.initial_twin) return {};
    const auto patch = twin_patch(*a.initial_twin);
    if (patch.empty()) return {};
    auto twin =
        client->call("PATCH", device_target("twins", a.device_id), json::serialize(patch), "*");
    if (!twin) return twin.error();
    if (twin->status != 200) return client->failure(*twin, "update the twin of " + a.device_id);
    return {};
}

result<json::object> twin_in_linked_hub(const linked_hub& hub, std::string_view device_id,
                                        const std::vector<std::filesystem::path>& own_ca) {
    auto client = service_client::open(hub, own_ca);
    if (!client) return client.error();
    auto r = client->call("GET", device_target("twins", device_id), {});
    if (!r) return r.error();
    if (r->status != 200) return client->failure(*r, "read the twin of " + std::string(device_id));
    boost::system::error_code ec;
    auto v = json::parse(r->body, ec);
    if (ec || !v.is_object())
        return error(errc::service_unavailable,
                     "Linked hub " + hub.host_name + " answered a twin that does not parse.");
    return std::move(v.get_object());
}

}  // namespace iothub::dps
