#include "cli/commands.hpp"

#include "auth/connection_string.hpp"
#include "auth/sas.hpp"
#include "cli/amqp_client.hpp"
#include "cli/detail/command_support.hpp"
#include "cli/hub_client.hpp"
#include "common/crypto.hpp"
#include "common/encoding.hpp"
#include "common/time.hpp"
#include "file_upload/blob_containers.hpp"

#include <boost/json.hpp>

#include <condition_variable>
#include <fstream>
#include <iostream>
#include <mutex>

namespace iothub::cli {
namespace json = boost::json;
using namespace detail;
namespace {

std::string identity_path(const invocation& inv) {
    std::string p = "/devices/" + percent_encode(inv.device_id);
    if (!inv.module_id.empty()) p += "/modules/" + percent_encode(inv.module_id);
    return p + "?api-version=2021-04-12";
}

// Applies the identity flags to a device or module body; used by create and update alike.
void apply_flags(const invocation& inv, json::object& body, bool creating) {
    if (!inv.status.empty()) body["status"] = inv.status;
    if (!inv.status_reason.empty()) body["statusReason"] = inv.status_reason;
    if (inv.edge) body["capabilities"] = json::object{{"iotEdge", true}};
    const bool keys_given = !inv.primary_key.empty() || !inv.secondary_key.empty();
    const bool prints_given = !inv.primary_thumbprint.empty() || !inv.secondary_thumbprint.empty();
    if (!creating && !keys_given && !prints_given && inv.auth_method == "shared_private_key")
        return;
    json::object auth;
    if (inv.auth_method == "x509_thumbprint") {
        auth["type"] = "selfSigned";
        auth["x509Thumbprint"] = json::object{{"primaryThumbprint", inv.primary_thumbprint},
                                              {"secondaryThumbprint", inv.secondary_thumbprint}};
    } else if (inv.auth_method == "x509_ca") {
        auth["type"] = "certificateAuthority";
    } else {
        auth["type"] = "sas";
        auth["symmetricKey"] =
            json::object{{"primaryKey", inv.primary_key}, {"secondaryKey", inv.secondary_key}};
    }
    body["authentication"] = std::move(auth);
}

std::string connection_string_of(const hub_access& hub, const json::object& identity,
                                 const invocation& inv) {
    const auto& auth = identity.at("authentication").as_object();
    std::string type(auth.at("type").as_string());
    std::string cs = "HostName=" + hub.hostname + ";DeviceId=" + inv.device_id;
    if (!inv.module_id.empty()) cs += ";ModuleId=" + inv.module_id;
    if (type != "sas") return cs + ";x509=true";
    const auto& keys = auth.at("symmetricKey").as_object();
    const char* field = inv.key_type == "secondary" ? "secondaryKey" : "primaryKey";
    return cs + ";SharedAccessKey=" + std::string(keys.at(field).as_string());
}

void create(const invocation& inv) {
    auto hub = connect(inv);
    json::object body{{"deviceId", inv.device_id}};
    if (!inv.module_id.empty()) body["moduleId"] = inv.module_id;
    apply_flags(inv, body, true);
    print(request_json(hub, "PUT", identity_path(inv), json::serialize(body)));
}

void update(const invocation& inv) {
    auto hub = connect(inv);
    auto current = request_json(hub, "GET", identity_path(inv)).as_object();
    std::string etag = inv.etag.empty() ? std::string(current.at("etag").as_string()) : inv.etag;
    apply_flags(inv, current, false);
    // The ETag read above guards the write: a concurrent change makes this fail, not vanish.
    print(request_json(hub, "PUT", identity_path(inv), json::serialize(current),
                       {{"If-Match", "\"" + etag + "\""}}));
}

void renew_key(invocation inv) {
    auto hub = connect(inv);
    auto current = request_json(hub, "GET", identity_path(inv)).as_object();
    auto& auth = current.at("authentication").as_object();
    if (auth.at("type").as_string() != "sas")
        throw failure{"Only sas identities have keys to renew."};
    auto& keys = auth.at("symmetricKey").as_object();
    if (inv.renew == "primary" || inv.renew == "both") keys["primaryKey"] = generate_key();
    if (inv.renew == "secondary" || inv.renew == "both") keys["secondaryKey"] = generate_key();
    if (inv.renew == "swap") std::swap(keys["primaryKey"], keys["secondaryKey"]);
    std::string etag(current.at("etag").as_string());
    print(request_json(hub, "PUT", identity_path(inv), json::serialize(current),
                       {{"If-Match", "\"" + etag + "\""}}));
}

void sas_generate(const invocation& inv) {
    const std::int64_t expiry = unix_seconds(now()) + inv.duration;
    if (inv.duration <= 0) throw failure{"--duration must be positive."};
    if (!inv.device_id.empty()) {
        auto hub = connect(inv, inv.primary_key.empty());
        std::string key = inv.primary_key;
        if (key.empty()) {
            auto identity = request_json(hub, "GET", identity_path(inv)).as_object();
            const auto& auth = identity.at("authentication").as_object();
            if (auth.at("type").as_string() != "sas")
                throw failure{"The identity uses X.509, not keys; it signs no SAS tokens."};
            const auto& keys = auth.at("symmetricKey").as_object();
            key = std::string(
                keys.at(inv.key_type == "secondary" ? "secondaryKey" : "primaryKey").as_string());
        }
        std::string resource = hub.hostname + "/devices/" + inv.device_id;
        if (!inv.module_id.empty()) resource += "/modules/" + inv.module_id;
        std::cout << auth::make_sas_token(resource, key, expiry) << "\n";
        return;
    }
    auto hub = connect(inv, false);
    std::string policy = inv.policy_for_sas.empty() ? hub.policy : inv.policy_for_sas;
    std::string key;
    if (policy == hub.policy) key = hub.key;
    if (hub.local)
        for (const auto& p : hub.local->policies)
            if (p.name == policy)
                key = inv.key_type == "secondary" ? p.secondary_key : p.primary_key;
    if (key.empty())
        throw failure{"No key for policy '" + policy +
                      "': use a data directory or that policy's connection string."};
    std::cout << auth::make_sas_token(hub.hostname, key, expiry, policy) << "\n";
}

CLI::App* with_ids(CLI::App* cmd, invocation& inv, bool module) {
    cmd->add_option("device-id,-d,--device-id", inv.device_id, "Device id")->required();
    if (module) cmd->add_option("module-id,-m,--module-id", inv.module_id, "Module id")->required();
    return cmd;
}

void identity_flags(CLI::App* cmd, invocation& inv, bool device) {
    if (device) {
        cmd->add_option("--status", inv.status, "enabled or disabled")
            ->check(CLI::IsMember({"enabled", "disabled"}));
        cmd->add_option("--status-reason", inv.status_reason, "Why the status is what it is");
        cmd->add_flag("--edge", inv.edge, "Mark the device as an IoT Edge device");
    }
    cmd->add_option("--auth-method", inv.auth_method,
                    "shared_private_key, x509_thumbprint or x509_ca")
        ->check(CLI::IsMember({"shared_private_key", "x509_thumbprint", "x509_ca"}));
    cmd->add_option("--primary-key", inv.primary_key, "Base64 key (generated when omitted)");
    cmd->add_option("--secondary-key", inv.secondary_key, "Base64 key (generated when omitted)");
    cmd->add_option("--primary-thumbprint", inv.primary_thumbprint, "Hex SHA-1/SHA-256 thumbprint");
    cmd->add_option("--secondary-thumbprint", inv.secondary_thumbprint,
                    "Hex SHA-1/SHA-256 thumbprint");
}

void add_identity_commands(CLI::App& app, const std::shared_ptr<invocation>& inv,
                           const std::function<void(std::function<void()>)>& run, bool module) {
    const std::string noun = module ? "module" : "device";
    auto* group =
        app.add_subcommand(noun, module ? "Manage module identities" : "Manage device identities");
    group->require_subcommand(1);
    auto& st = *inv;

    auto* c = with_ids(group->add_subcommand("create", "Register a new " + noun), st, module);
    identity_flags(c, st, !module);
    c->final_callback([=] { run([=] { create(*inv); }); });

    auto* show = with_ids(group->add_subcommand("show", "Show a " + noun), st, module);
    show->final_callback(
        [=] { run([=] { print(request_json(connect(*inv), "GET", identity_path(*inv))); }); });

    auto* u =
        with_ids(group->add_subcommand(
                     "update", "Change a " + noun + " (read-modify-write guarded by its ETag)"),
                 st, module);
    identity_flags(u, st, !module);
    u->add_option("--etag", st.etag, "Only update if the ETag still matches");
    u->final_callback([=] { run([=] { update(*inv); }); });

    auto* d = with_ids(group->add_subcommand("delete", "Delete a " + noun), st, module);
    d->add_option("--etag", st.etag, "Only delete if the ETag still matches");
    d->final_callback([=] {
        run([=] {
            auto hub = connect(*inv);
            std::string match = inv->etag.empty() ? "*" : inv->etag;
            request_json(hub, "DELETE", identity_path(*inv), {},
                         {{"If-Match", "\"" + match + "\""}});
        });
    });

    auto* list = group->add_subcommand("list", module ? "List a device's modules" : "List devices");
    if (module) {
        list->add_option("device-id,-d,--device-id", st.device_id, "Device id")->required();
    } else {
        list->add_option("--top", st.top, "At most this many (1-1000)");
    }
    list->final_callback([=] {
        run([=] {
            auto hub = connect(*inv);
            std::string target =
                inv->module_id.empty() && !inv->device_id.empty()
                    ? "/devices/" + percent_encode(inv->device_id) +
                          "/modules?api-version=2021-04-12"
                    : "/devices?top=" + std::to_string(inv->top) + "&api-version=2021-04-12";
            print(request_json(hub, "GET", target));
        });
    });

    auto* cs = with_ids(
        group->add_subcommand("connection-string", "Print the " + noun + "'s connection string"),
        st, module);
    cs->add_option("--key-type", st.key_type, "primary or secondary")
        ->check(CLI::IsMember({"primary", "secondary"}));
    cs->final_callback([=] {
        run([=] {
            auto hub = connect(*inv);
            auto identity = request_json(hub, "GET", identity_path(*inv)).as_object();
            std::cout << connection_string_of(hub, identity, *inv) << "\n";
        });
    });

    auto* rk = with_ids(
        group->add_subcommand("renew-key", "Replace the " + noun + "'s keys with new random ones"),
        st, module);
    rk->add_option("--key", st.renew, "primary, secondary, both or swap")
        ->check(CLI::IsMember({"primary", "secondary", "both", "swap"}));
    rk->final_callback([=] { run([=] { renew_key(*inv); }); });
}

void add_certificate_commands(CLI::App& app, const std::shared_ptr<invocation>& inv,
                              const runner& run) {
    struct cert_options {
        std::string name, path;
        bool verified = false;
    };
    auto o = std::make_shared<cert_options>();
    auto* group =
        app.add_subcommand("certificate", "CA certificates for X.509 device authentication");
    group->require_subcommand(1);
    auto file = [](const std::string& path) {
        std::ifstream in(path);
        if (!in) throw failure{"Cannot read " + path + "."};
        return std::string((std::istreambuf_iterator<char>(in)), {});
    };
    auto target = [](const std::string& name, const std::string& action = {}) {
        return "/certificates/" + percent_encode(name) + action + "?api-version=2021-04-12";
    };

    auto* create = group->add_subcommand("create", "Register a CA certificate (PEM or DER file)");
    create->add_option("name,-n,--name", o->name, "Certificate name")->required();
    create->add_option("-p,--path", o->path, "The CA certificate file")->required();
    create->add_flag("--verified", o->verified, "Trust it without proof of possession");
    create->final_callback([=] {
        run([=] {
            json::object body{{"properties", json::object{{"certificate", file(o->path)},
                                                          {"isVerified", o->verified}}}};
            print(request_json(connect(*inv), "PUT", target(o->name), json::serialize(body)));
        });
    });
    auto* list = group->add_subcommand("list", "List the CA certificates");
    list->final_callback([=] {
        run([=] {
            print(request_json(connect(*inv), "GET", "/certificates?api-version=2021-04-12"));
        });
    });
    auto* show = group->add_subcommand("show", "Show a CA certificate");
    show->add_option("name,-n,--name", o->name, "Certificate name")->required();
    show->final_callback(
        [=] { run([=] { print(request_json(connect(*inv), "GET", target(o->name))); }); });
    auto* del = group->add_subcommand("delete", "Delete a CA certificate");
    del->add_option("name,-n,--name", o->name, "Certificate name")->required();
    del->final_callback(
        [=] { run([=] { request_json(connect(*inv), "DELETE", target(o->name)); }); });
    auto* code = group->add_subcommand(
        "generate-verification-code", "Start proof of possession: sign a certificate with this CN");
    code->add_option("name,-n,--name", o->name, "Certificate name")->required();
    code->final_callback([=] {
        run([=] {
            print(
                request_json(connect(*inv), "POST", target(o->name, "/generateVerificationCode")));
        });
    });
    auto* verify =
        group->add_subcommand("verify", "Finish proof of possession with the signed certificate");
    verify->add_option("name,-n,--name", o->name, "Certificate name")->required();
    verify->add_option("-p,--path", o->path, "The verification certificate file")->required();
    verify->final_callback([=] {
        run([=] {
            json::object body{{"certificate", file(o->path)}};
            print(request_json(connect(*inv), "POST", target(o->name, "/verify"),
                               json::serialize(body)));
        });
    });
}

std::string twin_path(const invocation& inv, std::string_view action = {}) {
    std::string p = "/twins/" + percent_encode(inv.device_id);
    if (!inv.module_id.empty()) p += "/modules/" + percent_encode(inv.module_id);
    return p + std::string(action) + "?api-version=2021-04-12";
}

std::vector<std::pair<std::string, std::string>> if_match(const invocation& inv) {
    return {{"If-Match", inv.etag.empty() ? "*" : "\"" + inv.etag + "\""}};
}

std::unique_ptr<amqp_service_client> open_amqp(const invocation& inv) {
    auto client = amqp_service_client::open(connect(inv), std::chrono::seconds(15));
    if (!client) throw failure{client.error().message()};
    return std::move(*client);
}

struct c2d_options {
    c2d_message message;
    std::string body_file;
    std::vector<std::string> properties;
    std::int64_t expiry = 0;
    int timeout = 30;
    std::size_t count = 0;
};

void c2d_send(const invocation& inv, c2d_options o) {
    auto& m = o.message;
    m.device_id = inv.device_id;
    if (!o.body_file.empty()) {
        std::ifstream in(o.body_file, std::ios::binary);
        if (!in) throw failure{"Cannot read " + o.body_file + "."};
        m.body.assign(std::istreambuf_iterator<char>(in), {});
    }
    for (const auto& p : o.properties) m.properties.push_back(key_value(p, "--property"));
    if (o.expiry < 0) throw failure{"--expiry must not be negative."};
    if (o.expiry) m.expiry_ms = (unix_seconds(now()) + o.expiry) * 1000;
    // The hub correlates feedback by message id, so every message gets one.
    if (m.message_id.empty()) m.message_id = random_uuid();
    auto client = open_amqp(inv);
    auto outcome = client->send(m, std::chrono::seconds(o.timeout));
    if (!outcome) throw failure{outcome.error().message()};
    if (!outcome->accepted) throw failure{describe_rejection(*outcome)};
    std::cout << m.message_id << "\n";
}

// Prints feedback records as JSON lines until `count` of them (0: no limit) or the timeout.
void c2d_feedback(const invocation& inv, const c2d_options& o) {
    auto client = open_amqp(inv);
    struct progress {
        std::mutex mutex;
        std::condition_variable more;
        std::size_t printed = 0;
        std::string bad;
    };
    auto p = std::make_shared<progress>();
    const std::size_t wanted = o.count;
    client->receive_feedback([p, wanted](const std::string& body) {
        boost::system::error_code ec;
        auto records = json::parse(body, ec);
        std::lock_guard lock(p->mutex);
        if (ec || !records.is_array()) {
            p->bad = "The hub sent a feedback message that is not a JSON array: " + body;
        } else {
            // A batch is printed whole: it is accepted, hence gone from the hub, once this returns.
            for (const auto& r : records.get_array()) std::cout << json::serialize(r) << "\n";
            std::cout.flush();
            p->printed += records.get_array().size();
        }
        p->more.notify_all();
        return p->bad.empty() && (wanted == 0 || p->printed < wanted);
    });
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(o.timeout);
    std::unique_lock lock(p->mutex);
    while (std::chrono::steady_clock::now() < deadline) {
        if (!p->bad.empty()) throw failure{p->bad};
        if (wanted && p->printed >= wanted) return;
        if (auto why = client->failure(); !why.empty()) throw failure{why};
        p->more.wait_for(lock, std::chrono::milliseconds(100));
    }
}

void add_c2d_commands(CLI::App& app, const std::shared_ptr<invocation>& inv, const runner& run) {
    auto* group = app.add_subcommand("c2d", "Cloud-to-device message queues");
    group->require_subcommand(1);
    auto o = std::make_shared<c2d_options>();
    auto& m = o->message;

    auto* send = group->add_subcommand(
        "send", "Send one message to a device's queue (AMQP) and print its message id");
    send->add_option("-d,--device,--device-id", inv->device_id, "Device id")->required();
    auto* body = send->add_option("--body", m.body, "Message body text");
    send->add_option("--body-file", o->body_file, "Read the body from this file")->excludes(body);
    send->add_option("--property", o->properties, "Application property key=value (repeatable)");
    send->add_option("--ack", m.ack, "Feedback wanted: none, positive, negative or full")
        ->check(CLI::IsMember({"none", "positive", "negative", "full"}));
    send->add_option("--message-id", m.message_id, "Message id (default: a random UUID)");
    send->add_option("--correlation-id", m.correlation_id, "Correlation id");
    send->add_option("--content-type", m.content_type, "Content type, e.g. application/json");
    send->add_option("--expiry", o->expiry, "Expire after this many seconds (default: the hub's)");
    send->add_option("--timeout", o->timeout, "Seconds to wait for the hub (default 30)")
        ->check(CLI::PositiveNumber);
    send->final_callback([=] { run([=] { c2d_send(*inv, *o); }); });

    auto* feedback = group->add_subcommand(
        "feedback", "Receive delivery feedback records and print each as a JSON line");
    feedback->add_option("-n,--count", o->count, "Stop after this many records (default: none)");
    feedback->add_option("-t,--timeout", o->timeout, "Stop after this many seconds (default 30)")
        ->check(CLI::PositiveNumber);
    feedback->final_callback([=] { run([=] { c2d_feedback(*inv, *o); }); });

    auto* purge = group->add_subcommand("purge", "Remove every message queued for a device");
    purge->add_option("-d,--device,--device-id", inv->device_id, "Device id")->required();
    purge->final_callback([=] {
        run([=] {
            print(request_json(
                connect(*inv), "DELETE",
                "/devices/" + percent_encode(inv->device_id) + "/commands?api-version=2021-04-12"));
        });
    });
}

void add_file_commands(CLI::App& app, const std::shared_ptr<invocation>& inv, const runner& run) {
    struct file_options {
        std::string blob, output;
    };
    auto o = std::make_shared<file_options>();
    auto* group = app.add_subcommand("file", "Files devices uploaded");
    group->require_subcommand(1);

    auto* list = group->add_subcommand(
        "list", "List uploaded files (device, blob name, size, time) as JSON");
    list->add_option("-d,--device,--device-id", inv->device_id, "Only this device's files");
    list->final_callback([=] {
        run([=] {
            std::string target = "/files?api-version=2021-04-12";
            if (!inv->device_id.empty()) target += "&deviceId=" + percent_encode(inv->device_id);
            print(request_json(connect(*inv), "GET", target));
        });
    });

    auto* download = group->add_subcommand("download", "Write an uploaded file's bytes");
    download->add_option("-d,--device,--device-id", inv->device_id, "Device id")->required();
    download->add_option("-b,--blob", o->blob, "Blob name as the device gave it")->required();
    download->add_option("-o,--output", o->output, "Write to this file (default: stdout)");
    download->final_callback([=] {
        run([=] {
            // Each segment is encoded on its own: the blob name's slashes stay path separators.
            std::string target = "/files/" + percent_encode(inv->device_id);
            std::string_view rest = o->blob;
            while (!rest.empty()) {
                auto slash = rest.find('/');
                target += "/" + percent_encode(rest.substr(0, slash));
                rest =
                    slash == std::string_view::npos ? std::string_view{} : rest.substr(slash + 1);
            }
            auto r = call(connect(*inv), "GET", target + "?api-version=2021-04-12");
            if (!r) throw failure{r.error().message()};
            if (r->status >= 300) throw failure{describe_failure(*r)};
            if (o->output.empty()) {
                std::cout.write(r->body.data(), static_cast<std::streamsize>(r->body.size()));
                std::cout.flush();
                return;
            }
            std::ofstream out(o->output, std::ios::binary | std::ios::trunc);
            out.write(r->body.data(), static_cast<std::streamsize>(r->body.size()));
            out.close();
            if (!out) throw failure{"Cannot write " + o->output + "."};
        });
    });
}

// Consumer groups of the telemetry stream, over /telemetry/consumergroups. Each group reads the
// stream independently; the Event Hubs-compatible endpoint accepts only groups that exist.
void add_consumer_group_commands(CLI::App& app, const std::shared_ptr<invocation>& inv,
                                 const runner& run) {
    auto name = std::make_shared<std::string>();
    auto* group = app.add_subcommand("consumer-group", "Consumer groups of the telemetry stream");
    group->require_subcommand(1);
    auto target = [](const std::string& n) {
        return "/telemetry/consumergroups/" + percent_encode(n) + "?api-version=2021-04-12";
    };
    auto named = [&](const char* verb, const char* what) {
        auto* c = group->add_subcommand(verb, what);
        c->add_option("name,-n,--name", *name, "Consumer group name")->required();
        return c;
    };
    auto* list = group->add_subcommand("list", "List the consumer groups ($Default included)");
    list->final_callback([=] {
        run([=] {
            print(request_json(connect(*inv), "GET",
                               "/telemetry/consumergroups?api-version=2021-04-12"));
        });
    });
    named("create", "Create a consumer group (the hub's limit: telemetry.max_consumer_groups)")
        ->final_callback(
            [=] { run([=] { print(request_json(connect(*inv), "PUT", target(*name), "{}")); }); });
    named("show", "Show a consumer group")->final_callback([=] {
        run([=] { print(request_json(connect(*inv), "GET", target(*name))); });
    });
    named("delete", "Delete a consumer group and its checkpoint ($Default cannot be deleted)")
        ->final_callback(
            [=] { run([=] { request_json(connect(*inv), "DELETE", target(*name)); }); });
}

void add_twin_commands(CLI::App& app, const std::shared_ptr<invocation>& inv, const runner& run) {
    struct twin_options {
        std::string tags, desired, json_body;
    };
    auto o = std::make_shared<twin_options>();
    auto* group = app.add_subcommand("twin", "Device and module twins");
    group->require_subcommand(1);
    auto ids = [&](CLI::App* c) {
        c->add_option("-d,--device-id", inv->device_id, "Device id")->required();
        c->add_option("-m,--module-id", inv->module_id, "Module id (for a module twin)");
        return c;
    };
    auto* show = ids(group->add_subcommand("show", "Show a twin"));
    show->final_callback(
        [=] { run([=] { print(request_json(connect(*inv), "GET", twin_path(*inv))); }); });

    // update merges; replace sets tags and desired properties to exactly what is given.
    for (bool replace : {false, true}) {
        auto* c = ids(group->add_subcommand(
            replace ? "replace" : "update",
            replace ? "Replace a twin's tags and desired properties"
                    : "Merge tags and desired properties into a twin (null deletes)"));
        c->add_option("--tags", o->tags, "Tags as JSON (or @file)");
        c->add_option("--desired", o->desired, "Desired properties as JSON (or @file)");
        c->add_option(
            "--json", o->json_body,
            "A whole twin patch {\"tags\":..,\"properties\":{\"desired\":..}} (or @file)");
        c->add_option("--etag", inv->etag, "Only if the twin's ETag is still this");
        c->final_callback([=] {
            run([=] {
                json::object body;
                if (!o->json_body.empty()) {
                    auto whole = json_argument(o->json_body, "--json");
                    if (!whole.is_object()) throw failure{"--json must be a JSON object."};
                    body = whole.get_object();
                }
                if (!o->tags.empty()) body["tags"] = json_argument(o->tags, "--tags");
                if (!o->desired.empty())
                    body["properties"] =
                        json::object{{"desired", json_argument(o->desired, "--desired")}};
                if (body.empty()) throw failure{"Give --tags, --desired or --json."};
                print(request_json(connect(*inv), replace ? "PUT" : "PATCH", twin_path(*inv),
                                   json::serialize(body), if_match(*inv)));
            });
        });
    }
}

void add_method_commands(CLI::App& app, const std::shared_ptr<invocation>& inv, const runner& run) {
    struct method_options {
        std::string name, payload = "null";
        int response_timeout = 30, connect_timeout = 0;
    };
    auto o = std::make_shared<method_options>();
    auto* group = app.add_subcommand("method", "Direct methods");
    group->require_subcommand(1);
    auto* invoke = group->add_subcommand("invoke", "Call a direct method and print the answer");
    invoke->add_option("-d,--device-id", inv->device_id, "Device id")->required();
    invoke->add_option("-m,--module-id", inv->module_id, "Module id (for a module's method)");
    invoke->add_option("-n,--name,--method-name", o->name, "Method name")->required();
    invoke->add_option("-p,--payload,--method-payload", o->payload, "JSON payload (or @file)");
    invoke->add_option("--timeout,--response-timeout", o->response_timeout,
                       "Seconds to wait for the answer (5-300)");
    invoke->add_option("--connect-timeout", o->connect_timeout,
                       "Seconds to wait for an offline device to connect (0-300)");
    invoke->final_callback([=] {
        run([=] {
            json::object body{{"methodName", o->name},
                              {"payload", json_argument(o->payload, "--payload")},
                              {"responseTimeoutInSeconds", o->response_timeout},
                              {"connectTimeoutInSeconds", o->connect_timeout}};
            print(request_json(connect(*inv), "POST", twin_path(*inv, "/methods"),
                               json::serialize(body)));
        });
    });
}

void add_query_command(CLI::App& app, const std::shared_ptr<invocation>& inv, const runner& run) {
    struct query_options {
        std::string text;
        std::size_t top = 0, page = 100;
    };
    auto o = std::make_shared<query_options>();
    auto* q = app.add_subcommand("query", "Query twins: SELECT ... FROM devices [WHERE ...]");
    q->add_option("query,-q,--query", o->text, "The query")->required();
    q->add_option("--top", o->top, "Stop after this many rows (default: all)");
    q->add_option("--page-size", o->page, "Rows per request (1-1000)")->check(CLI::Range(1, 1000));
    q->final_callback([=] {
        run([=] {
            print(query_pages(connect(*inv), "/devices/query?api-version=2021-04-12",
                              json::serialize(json::object{{"query", o->text}}), o->page, o->top));
        });
    });
}

}  // namespace

std::string pretty_json(const std::string& compact) {
    std::ostringstream out;
    detail::print_pretty(out, json::parse(compact), 0);
    return out.str();
}

void add_commands(CLI::App& app, int& exit_code) {
    auto inv = std::make_shared<invocation>();
    auto run = [&exit_code](std::function<void()> body) {
        try {
            body();
            exit_code = 0;
        } catch (const failure& f) {
            std::cerr << "error: " << f.message << "\n";
            exit_code = 1;
        }
    };
    app.add_option("--connection-string", inv->access.connection_string,
                   "Service connection string (else IOTHUB_CONNECTION_STRING, else --data-dir)");
    app.add_option("--data-dir", inv->access.data_dir,
                   "Data directory of a local hub (else IOTHUB_DATA_DIR, else ./iothub-data)");
    app.add_option("--policy", inv->access.policy,
                   "With --data-dir: the shared access policy to act as (default iothubowner)");
    app.add_option("--ca-file", inv->access.ca_file,
                   "CA certificate to trust (default: the data directory's, or IOTHUB_CA_FILE)");

    add_identity_commands(app, inv, run, false);
    add_identity_commands(app, inv, run, true);

    auto* sas = app.add_subcommand("sas", "Shared access signatures");
    sas->require_subcommand(1);
    auto* gen =
        sas->add_subcommand("generate", "Make a SAS token for a device, a module or a policy");
    gen->add_option("-d,--device-id", inv->device_id, "Device to sign for");
    gen->add_option("-m,--module-id", inv->module_id, "Module to sign for (with --device-id)");
    gen->add_option("--for-policy", inv->policy_for_sas, "Policy to sign for (service tokens)");
    gen->add_option("--key", inv->primary_key, "Sign with this key instead of fetching it");
    gen->add_option("--key-type", inv->key_type, "primary or secondary")
        ->check(CLI::IsMember({"primary", "secondary"}));
    gen->add_option("--duration", inv->duration, "Validity in seconds (default 3600)");
    gen->final_callback([=] { run([=] { sas_generate(*inv); }); });

    auto* cs = app.add_subcommand("connection-string",
                                  "Print a policy's service connection string (works offline)");
    cs->add_option("--key-type", inv->key_type, "primary or secondary")
        ->check(CLI::IsMember({"primary", "secondary"}));
    auto event_hubs = std::make_shared<bool>(false);
    cs->add_flag("--event-hubs", *event_hubs,
                 "Print the Event Hubs-compatible connection string (Endpoint=sb://...) instead");
    auto storage = std::make_shared<bool>(false);
    cs->add_flag("--storage", *storage,
                 "Print a Blob storage connection string (BlobEndpoint=...;SharedAccessSignature="
                 "...) that reads the containers routing writes, valid for a year")
        ->excludes("--event-hubs");
    auto dps = std::make_shared<bool>(false);
    cs->add_flag("--dps", *dps,
                 "Print the provisioning service's connection string (policy "
                 "provisioningserviceowner), for the provisioning service SDK")
        ->excludes("--event-hubs")
        ->excludes("--storage");
    cs->final_callback([=] {
        run([=] {
            auto hub = connect(*inv, false);
            if (!hub.local) throw failure{"connection-string reads a data directory (--data-dir)."};
            const std::string wanted = *dps ? std::string(auth::dps_policy_name) : hub.policy;
            bool found = false;
            for (const auto& p : hub.local->policies) {
                if (p.name != wanted) continue;
                found = true;
                const auto& key = inv->key_type == "secondary" ? p.secondary_key : p.primary_key;
                if (*storage) {
                    auth::access_policy signer = p;
                    signer.primary_key = key;
                    std::cout << "BlobEndpoint=https://" << hub.hostname
                              << "/;SharedAccessSignature="
                              << file_upload::sign_account_sas(
                                     signer, iothub::now() + std::chrono::hours(24 * 365))
                              << "\n";
                    continue;
                }
                std::cout << (*event_hubs
                                  ? auth::event_hubs_connection_string(hub.hostname, p.name, key)
                                  : auth::service_connection_string(hub.hostname, p.name, key))
                          << "\n";
            }
            if (!found && *dps)
                throw failure{
                    "This data directory has no provisioning service policy yet; start "
                    "the hub once (iothub serve) to add it."};
        });
    });

    auto* dps_group = app.add_subcommand("dps", "The Device Provisioning Service");
    dps_group->require_subcommand(1);
    dps_group->add_subcommand("id-scope", "Print the provisioning service's ID scope (offline)")
        ->final_callback([=] {
            run([=] {
                auto hub = connect(*inv, false);
                if (!hub.local) throw failure{"dps id-scope reads a data directory (--data-dir)."};
                if (hub.local->id_scope.empty())
                    throw failure{
                        "This data directory has no ID scope yet; start the hub once "
                        "(iothub serve) to give it one."};
                std::cout << hub.local->id_scope << "\n";
            });
        });
    add_dps_commands(*dps_group, inv, run);

    add_monitor_command(app, inv, run);
    add_consumer_group_commands(app, inv, run);
    add_certificate_commands(app, inv, run);
    add_twin_commands(app, inv, run);
    add_c2d_commands(app, inv, run);
    add_file_commands(app, inv, run);
    add_method_commands(app, inv, run);
    add_query_command(app, inv, run);
    add_routing_commands(app, inv, run);

    auto* stats = app.add_subcommand("stats", "Registry and connection statistics");
    stats->final_callback([=] {
        run([=] {
            auto hub = connect(*inv);
            json::object out{
                {"devices", request_json(hub, "GET", "/statistics/devices?api-version=2021-04-12")},
                {"service",
                 request_json(hub, "GET", "/statistics/service?api-version=2021-04-12")}};
            print(out);
        });
    });

    auto* cluster = app.add_subcommand("cluster", "Cluster mode");
    cluster->require_subcommand(1);
    auto* status = cluster->add_subcommand(
        "status",
        "The hub's nodes (alive or not, their connected devices), who holds each duty, "
        "and the JetStream streams (messages, leader, replicas)");
    status->final_callback([=] {
        run([=] {
            auto hub = connect(*inv);
            print(request_json(hub, "GET", "/cluster/status?api-version=2021-04-12"));
        });
    });
}

}  // namespace iothub::cli
