// The provisioning service from the command line, in the spirit of `az iot dps enrollment`,
// `enrollment-group`, `registration` and `linked-hub`: every command calls the provisioning
// service API of the running hub (signed with the provisioningserviceowner policy unless
// --policy or a connection string says otherwise), so the hub's rules (defaults, validation,
// ETags) stay in one place.
#include "auth/connection_string.hpp"
#include "auth/policy.hpp"
#include "cli/detail/command_support.hpp"
#include "common/crypto.hpp"
#include "common/encoding.hpp"

#include <iostream>

namespace iothub::cli::detail {
namespace {

const std::string api = "api-version=2021-10-01";

hub_access dps_access(const invocation& inv) {
    auto access = inv.access;
    if (access.policy.empty()) access.policy = std::string(auth::dps_policy_name);
    auto hub = resolve_access(access, true);
    if (!hub) throw failure{hub.error().message()};
    return std::move(*hub);
}

std::string item(std::string_view collection, std::string_view id, std::string_view tail = {}) {
    return "/" + std::string(collection) + "/" + percent_encode(id) + std::string(tail) + "?" + api;
}

// Every enrollment (or registration state) of a DPS query, up to `top`.
json::array query_all(const hub_access& hub, const std::string& path, std::size_t top) {
    return query_pages(hub, path + "?" + api, R"({"query":"SELECT *"})", 100, top);
}

// What the create commands of individual enrollments and groups share.
struct enrollment_options {
    std::string id, device_id, attestation, primary_key, secondary_key, certificate,
        secondary_certificate, ca_name, secondary_ca_name, status, tags, desired, allocation,
        webhook_url, webhook_api_version, reprovision, etag;
    std::vector<std::string> iot_hubs;
    bool edge = false, show_keys = false;
};

std::string read_certificate(const std::string& path) {
    return path.empty() ? std::string() : read_input(path);
}

json::object enrollment_body(const enrollment_options& o, bool group) {
    json::object doc;
    doc[group ? "enrollmentGroupId" : "registrationId"] = o.id;
    if (!o.device_id.empty()) {
        if (group) throw failure{"A group's devices are named by their registration ids."};
        doc["deviceId"] = o.device_id;
    }
    const bool x509 = o.attestation == "x509" || !o.certificate.empty() || !o.ca_name.empty();
    json::object attestation{{"type", x509 ? "x509" : "symmetricKey"}};
    if (x509) {
        json::object x;
        const auto primary = read_certificate(o.certificate);
        const auto secondary = read_certificate(o.secondary_certificate);
        auto certs = [&]() {
            json::object c{{"primary", {{"certificate", primary}}}};
            if (!secondary.empty()) c["secondary"] = json::object{{"certificate", secondary}};
            return c;
        };
        if (!o.ca_name.empty()) {
            if (!group) throw failure{"--ca-name is for enrollment groups."};
            json::object refs{{"primary", o.ca_name}};
            if (!o.secondary_ca_name.empty()) refs["secondary"] = o.secondary_ca_name;
            x["caReferences"] = std::move(refs);
        } else if (!primary.empty()) {
            x[group ? "signingCertificates" : "clientCertificates"] = certs();
        } else {
            throw failure{"X.509 attestation needs --certificate-path" +
                          std::string(group ? " or --ca-name." : ".")};
        }
        attestation["x509"] = std::move(x);
    } else if (!o.primary_key.empty() || !o.secondary_key.empty()) {
        json::object keys;
        if (!o.primary_key.empty()) keys["primaryKey"] = o.primary_key;
        if (!o.secondary_key.empty()) keys["secondaryKey"] = o.secondary_key;
        attestation["symmetricKey"] = std::move(keys);
    }
    doc["attestation"] = std::move(attestation);
    if (!o.status.empty()) doc["provisioningStatus"] = o.status;
    if (!o.tags.empty() || !o.desired.empty()) {
        json::object twin;
        if (!o.tags.empty()) twin["tags"] = json_argument(o.tags, "--initial-twin-tags");
        if (!o.desired.empty())
            twin["properties"] =
                json::object{{"desired", json_argument(o.desired, "--initial-twin-properties")}};
        doc["initialTwin"] = std::move(twin);
    }
    if (!o.allocation.empty()) doc["allocationPolicy"] = o.allocation;
    if (!o.iot_hubs.empty()) {
        json::array hubs;
        for (const auto& h : o.iot_hubs) hubs.emplace_back(h);
        doc["iotHubs"] = std::move(hubs);
    }
    if (!o.webhook_url.empty()) {
        json::object custom{{"webhookUrl", o.webhook_url}};
        if (!o.webhook_api_version.empty()) custom["apiVersion"] = o.webhook_api_version;
        doc["customAllocationDefinition"] = std::move(custom);
    }
    if (!o.reprovision.empty()) {
        const bool never = o.reprovision == "never";
        doc["reprovisionPolicy"] =
            json::object{{"updateHubAssignment", !never},
                         {"migrateDeviceData", o.reprovision != "reprovisionandresetdata"}};
    }
    if (o.edge) doc["capabilities"] = json::object{{"iotEdge", true}};
    return doc;
}

void add_enrollment_commands(CLI::App& dps, const std::shared_ptr<invocation>& inv,
                             const runner& run, bool group) {
    const std::string collection = group ? "enrollmentGroups" : "enrollments";
    const std::string id_option = group ? "--group-id" : "--registration-id";
    const std::string id_name = group ? "group-id" : "registration-id";
    auto o = std::make_shared<enrollment_options>();
    auto* g = dps.add_subcommand(group ? "group" : "enrollment",
                                 group ? "Enrollment groups: many devices sharing a key or a CA"
                                       : "Individual enrollments: one device each");
    g->require_subcommand(1);
    auto id_arg = [&](CLI::App* c) {
        c->add_option(id_name + "," + id_option, o->id,
                      group ? "Enrollment group id" : "Registration id")
            ->required();
    };

    auto* create =
        g->add_subcommand("create", "Create or replace one (keys generated unless given)");
    id_arg(create);
    if (!group)
        create->add_option("--device-id", o->device_id,
                           "Device id in the hub (default: the registration id)");
    create->add_option("--attestation-type", o->attestation, "symmetricKey (default) or x509")
        ->check(CLI::IsMember({"symmetricKey", "x509"}));
    create->add_option("--primary-key", o->primary_key, "Base64 symmetric key");
    create->add_option("--secondary-key", o->secondary_key, "Base64 symmetric key");
    create->add_option("--certificate-path", o->certificate,
                       group ? "PEM signing certificate (root or intermediate) of the group"
                             : "PEM client certificate of the device");
    create->add_option("--secondary-certificate-path", o->secondary_certificate,
                       "PEM secondary certificate");
    if (group) {
        create->add_option("--ca-name", o->ca_name,
                           "A verified CA certificate registered with the hub (iothub "
                           "certificate ...)");
        create->add_option("--secondary-ca-name", o->secondary_ca_name, "A second verified CA");
    }
    create->add_option("--provisioning-status", o->status, "enabled or disabled")
        ->check(CLI::IsMember({"enabled", "disabled"}));
    create->add_option("--initial-twin-tags", o->tags, "JSON object (or @file)");
    create->add_option("--initial-twin-properties", o->desired,
                       "Desired properties, a JSON object (or @file)");
    create->add_option("--allocation-policy", o->allocation, "hashed, static or custom")
        ->check(CLI::IsMember({"hashed", "static", "custom", "geoLatency"}));
    create->add_option("--iot-hubs", o->iot_hubs, "Linked hubs to choose from (host names)")
        ->delimiter(',');
    create->add_option("--webhook-url", o->webhook_url, "Custom allocation webhook");
    create->add_option("--api-version", o->webhook_api_version, "The webhook's API version");
    create
        ->add_option("--reprovision-policy", o->reprovision,
                     "reprovisionandmigratedata (default), reprovisionandresetdata or never")
        ->check(CLI::IsMember({"reprovisionandmigratedata", "reprovisionandresetdata", "never"}));
    create->add_flag("--edge-enabled", o->edge, "The device is an IoT Edge device");
    create->add_option("--etag", o->etag, "Replace only if the ETag still matches");
    create->final_callback([=] {
        run([=] {
            auto hub = dps_access(*inv);
            std::vector<std::pair<std::string, std::string>> headers{
                {"Content-Type", "application/json"}};
            if (!o->etag.empty()) headers.emplace_back("If-Match", o->etag);
            print(request_json(hub, "PUT", item(collection, o->id),
                               json::serialize(enrollment_body(*o, group)), headers));
        });
    });

    auto* show = g->add_subcommand("show", "Print one");
    id_arg(show);
    show->add_flag("--show-keys", o->show_keys, "Include the symmetric keys");
    show->final_callback([=] {
        run([=] {
            auto hub = dps_access(*inv);
            auto e = request_json(hub, "GET", item(collection, o->id));
            if (o->show_keys && e.is_object())
                e.get_object()["attestation"] =
                    request_json(hub, "POST", item(collection, o->id, "/attestationmechanism"));
            print(e);
        });
    });

    auto* list = g->add_subcommand("list", "Print all of them");
    list->add_option("--top", inv->top, "At most this many (default 1000)");
    list->final_callback([=] {
        run([=] { print(query_all(dps_access(*inv), "/" + collection + "/query", inv->top)); });
    });

    auto* remove = g->add_subcommand("delete", "Delete one (its devices stay in the hub)");
    id_arg(remove);
    remove->add_option("--etag", o->etag, "Delete only if the ETag still matches");
    remove->final_callback([=] {
        run([=] {
            std::vector<std::pair<std::string, std::string>> headers;
            if (!o->etag.empty()) headers.emplace_back("If-Match", o->etag);
            request_json(dps_access(*inv), "DELETE", item(collection, o->id), {}, headers);
        });
    });
}

void add_registration_commands(CLI::App& dps, const std::shared_ptr<invocation>& inv,
                               const runner& run) {
    struct options {
        std::string id, group;
    };
    auto o = std::make_shared<options>();
    auto* g = dps.add_subcommand("registration", "Device registration states");
    g->require_subcommand(1);
    auto* show = g->add_subcommand("show", "Print a device's registration state");
    show->add_option("registration-id,--registration-id", o->id, "Registration id")->required();
    show->final_callback([=] {
        run([=] { print(request_json(dps_access(*inv), "GET", item("registrations", o->id))); });
    });
    auto* list = g->add_subcommand("list", "Print the registration states of a group's devices");
    list->add_option("--group-id", o->group, "Enrollment group id")->required();
    list->add_option("--top", inv->top, "At most this many (default 1000)");
    list->final_callback([=] {
        run([=] {
            print(query_all(dps_access(*inv),
                            "/registrations/" + percent_encode(o->group) + "/query", inv->top));
        });
    });
    auto* remove = g->add_subcommand(
        "delete", "Delete a registration state (the device registers anew next time)");
    remove->add_option("registration-id,--registration-id", o->id, "Registration id")->required();
    remove->final_callback([=] {
        run([=] { request_json(dps_access(*inv), "DELETE", item("registrations", o->id)); });
    });
}

void add_linked_hub_commands(CLI::App& dps, const std::shared_ptr<invocation>& inv,
                             const runner& run) {
    struct options {
        std::string connection_string, host, apply, ca_file;
        int weight = 0;
    };
    auto o = std::make_shared<options>();
    auto* g =
        dps.add_subcommand("linked-hub", "The hubs devices are assigned to (this one always)");
    g->require_subcommand(1);
    auto* add = g->add_subcommand(
        "add", "Link a hub by its owner connection string, or change a link's weight");
    add->add_option("--connection-string", o->connection_string,
                    "The other hub's connection string (a policy with RegistryWrite)");
    add->add_option("--host", o->host, "A linked hub (or this one) whose settings change");
    add->add_option("--allocation-weight", o->weight, "Share of hashed allocation, 1 to 1000")
        ->check(CLI::Range(1, 1000));
    add->add_option("--apply-allocation-policy", o->apply,
                    "false: only enrollments naming the hub send devices there")
        ->transform(CLI::IsMember({"true", "false"}, CLI::ignore_case));
    add->add_option("--ca-file", o->ca_file,
                    "PEM CA certificates the other hub's certificate chains to (a path on the "
                    "hub's machine)");
    add->final_callback([=] {
        run([=] {
            std::string host = o->host;
            json::object body;
            if (!o->connection_string.empty()) {
                auto cs = auth::connection_string::parse(o->connection_string);
                if (!cs || !cs->get("HostName"))
                    throw failure{"--connection-string has no HostName."};
                host = *cs->get("HostName");
                body["connectionString"] = o->connection_string;
            }
            if (host.empty()) throw failure{"Name the hub: --connection-string or --host."};
            if (o->weight) body["allocationWeight"] = o->weight;
            if (!o->apply.empty()) body["applyAllocationPolicy"] = iequals(o->apply, "true");
            if (!o->ca_file.empty()) body["caFile"] = o->ca_file;
            print(request_json(dps_access(*inv), "PUT",
                               "/linkedHubs/" + percent_encode(host) + "?" + api,
                               json::serialize(body), {{"Content-Type", "application/json"}}));
        });
    });
    g->add_subcommand("list", "Print the linked hubs (keys not shown)")->final_callback([=] {
        run([=] { print(request_json(dps_access(*inv), "GET", "/linkedHubs?" + api)); });
    });
    auto* remove = g->add_subcommand("remove", "Unlink a hub (its devices stay there)");
    remove->add_option("host,--host", o->host, "The linked hub's host name")->required();
    remove->final_callback([=] {
        run([=] {
            request_json(dps_access(*inv), "DELETE",
                         "/linkedHubs/" + percent_encode(o->host) + "?" + api);
        });
    });
}

}  // namespace

void add_dps_commands(CLI::App& dps, const std::shared_ptr<invocation>& inv, const runner& run) {
    add_enrollment_commands(dps, inv, run, false);
    add_enrollment_commands(dps, inv, run, true);
    add_registration_commands(dps, inv, run);
    add_linked_hub_commands(dps, inv, run);

    struct derive_options {
        std::string group, registration_id, key;
    };
    auto o = std::make_shared<derive_options>();
    auto* derive = dps.add_subcommand("derive-key",
                                      "Print the key a device of a symmetric-key group signs with: "
                                      "Base64(HMAC-SHA256(group key, registration id))");
    derive->add_option("--group,--group-id", o->group,
                       "The group whose primary key to use (read from the hub)");
    derive->add_option("--key", o->key, "The group key itself (works offline)");
    derive->add_option("--registration-id", o->registration_id, "The device's registration id")
        ->required();
    derive->final_callback([=] {
        run([=] {
            std::string key = o->key;
            if (key.empty()) {
                if (o->group.empty()) throw failure{"Name the group (--group) or its key (--key)."};
                auto a = request_json(dps_access(*inv), "POST",
                                      item("enrollmentGroups", o->group, "/attestationmechanism"));
                const auto* k =
                    a.is_object() ? a.get_object().if_contains("symmetricKey") : nullptr;
                const auto* p =
                    k && k->is_object() ? k->get_object().if_contains("primaryKey") : nullptr;
                if (!p || !p->is_string())
                    throw failure{"Group " + o->group + " has no symmetric key."};
                key = std::string(p->get_string());
            }
            auto raw = base64_decode(key);
            if (!raw) throw failure{"The group key is not Base64."};
            std::cout << base64_encode(hmac_sha256(*raw, o->registration_id)) << "\n";
        });
    });
}

}  // namespace iothub::cli::detail
