#include "app/hub.hpp"

#include "amqp/server.hpp"
#include "auth/connection_string.hpp"
#include "c2d/c2d.hpp"
#include "certificates/ca_store.hpp"
#include "cluster/cluster.hpp"
#include "connections/activity.hpp"
#include "connections/connections.hpp"
#include "device_api/device_api.hpp"
#include "device_auth/device_auth.hpp"
#include "endpoints/blob_sink.hpp"
#include "endpoints/eventgrid.hpp"
#include "endpoints/eventhub_sink.hpp"
#include "endpoints/kafka_sink.hpp"
#include "endpoints/nats_sink.hpp"
#include "endpoints/webhook_sink.hpp"
#include "file_upload/file_upload.hpp"
#include "http/server.hpp"
#include "hub_events/hub_events.hpp"
#include "instance/instance.hpp"
#include "lifecycle/lifecycle.hpp"
#include "methods/methods.hpp"
#include "mqtt/server.hpp"
#include "registry/registry.hpp"
#include "routing/router.hpp"
#include "runtime/shards.hpp"
#include "service_api/c2d_api.hpp"
#include "service_api/certificates_api.hpp"
#include "service_api/cluster_api.hpp"
#include "service_api/dps_api.hpp"
#include "service_api/eventgrid_api.hpp"
#include "service_api/files_api.hpp"
#include "service_api/routing_api.hpp"
#include "service_api/service_api.hpp"
#include "service_api/telemetry_api.hpp"
#include "service_api/twins_api.hpp"
#include "session/device_session.hpp"
#include "storage/engine.hpp"
#include "telemetry/consumer_groups.hpp"
#include "telemetry/telemetry.hpp"
#include "tls/context.hpp"
#include "tls/dev_ca.hpp"
#include "twin/twin.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <csignal>
#include <fstream>
#include <future>
#include <iostream>
#include <sstream>
#include <thread>
#include <unistd.h>

namespace iothub::app {
namespace {

struct prepared {
    instance::layout where;
    instance::hub_identity identity;
    std::vector<std::string> names;
    std::filesystem::path cert, key, ca;  // ca empty when the operator brought a certificate
};

result<prepared> prepare(const config::settings& s) {
    prepared p;
    p.where = instance::layout_for(s.data_dir);
    auto id = instance::open_identity(p.where, s.hostname);
    if (!id) return id.error();
    p.identity = std::move(*id);
    p.names.push_back(p.identity.hostname);
    for (const auto& a : s.aliases) p.names.push_back(a);
    if (!s.tls_cert.empty()) {
        p.cert = s.tls_cert;
        p.key = s.tls_key;
    } else {
        auto files = tls::ensure_dev_certificates(p.where.tls_dir, p.names);
        if (!files) return files.error();
        if (files->issued_server_cert)
            spdlog::info("issued a server certificate for {}", p.names.front());
        p.cert = files->server_cert;
        p.key = files->server_key;
        p.ca = files->ca_cert;
    }
    return p;
}

nats::connection_settings cluster_connection(const config::settings& s,
                                             const instance::layout& where) {
    nats::connection_settings c;
    c.servers = s.cluster_nats;
    c.name = "iothub " + std::filesystem::absolute(where.data_dir).string();
    c.credentials_file = s.cluster_credentials.string();
    c.user = s.cluster_user;
    c.password = s.cluster_password;
    c.token = s.cluster_token;
    c.ca_file = s.cluster_ca.string();
    c.cert_file = s.cluster_cert.string();
    c.key_file = s.cluster_key.string();
    return c;
}

result<std::unique_ptr<storage::engine>> open_storage(const config::settings& s,
                                                      const instance::layout& where) {
    storage::event_log_settings events;
    events.partitions = s.event_partitions;
    events.retention = {s.retention, s.retention_max_bytes};
    events.group_commit_delay = std::chrono::microseconds(s.group_commit_delay_us);
    if (!s.cluster_nats.empty()) {
        storage::jetstream_settings js;
        js.connection = cluster_connection(s, where);
        js.prefix = s.cluster_prefix;
        js.replicas =
            s.cluster_replicas ? s.cluster_replicas : (s.cluster_nats.size() >= 3 ? 3 : 1);
        js.timeout = std::chrono::milliseconds(s.cluster_timeout_ms);
        js.events = events;
        return storage::open_jetstream(js);
    }
    if (s.storage_engine == "memory") return storage::open_memory(events);
    storage::rocksdb_settings rs{
        where.storage_dir, s.storage_sync,
        static_cast<int>(std::max(2u, std::thread::hardware_concurrency())), events};
    auto e = storage::open_rocksdb(rs);
    if (!e && e.error().code() == errc::already_exists)
        return error(errc::server_error, "Another iothub is already using " +
                                             where.storage_dir.string() + " (" +
                                             e.error().message() + ").");
    return e;
}

void print_banner(const prepared& p, const config::settings& s, const bound_ports& ports) {
    const auto* owner = p.identity.policies.empty() ? nullptr : &p.identity.policies.front();
    std::ostream& out = std::cout;
    out << "iothub is running.\n"
        << "  host name       " << p.identity.hostname << "\n"
        << "  HTTPS           " << ports.https
        << "  (service and device REST, MQTT over WebSockets, /health)\n"
        << "  MQTT over TLS   " << ports.mqtt << "\n"
        << "  AMQP over TLS   " << ports.amqp << "  (devices, service C2D and feedback)\n";
    if (ports.mqtt_plain)
        out << "  MQTT (plain)    " << ports.mqtt_plain << "  (no TLS: local use only)\n";
    out << "  data directory  " << std::filesystem::absolute(s.data_dir).string() << "\n"
        << "  storage         ";
    if (!s.cluster_nats.empty()) {
        out << "JetStream cluster (";
        for (std::size_t i = 0; i < s.cluster_nats.size(); ++i)
            out << (i ? "," : "") << s.cluster_nats[i];
        out << "), prefix " << s.cluster_prefix << "\n";
    } else {
        out << s.storage_engine
            << (s.storage_engine == "rocksdb"
                    ? (s.storage_sync ? " (fsync on commit)" : " (no fsync)")
                    : " (nothing survives a restart)")
            << "\n";
    }
    if (owner)
        out << "\nService connection string (" << owner->name << "):\n  "
            << auth::service_connection_string(p.identity.hostname, owner->name, owner->primary_key)
            << "\n  (all policies: iothub connection-string --data-dir " << s.data_dir.string()
            << " --policy NAME)\n";
    if (!p.ca.empty()) {
        auto ca = std::filesystem::absolute(p.ca).string();
        out << "\nClients must trust the development CA " << ca << ":\n"
            << "  Node.js SDKs:  export NODE_EXTRA_CA_CERTS=" << ca << "\n"
            << "  Debian system: cp " << ca
            << " /usr/local/share/ca-certificates/iothub.crt && update-ca-certificates\n";
    }
    out << std::endl;
}

}  // namespace

// A device the provisioning service assigned here: created, or its keys brought to its
// attestation's (a disabled device stays disabled), and the initial twin applied when given.
// Blocks (the registration runs on the blocking pool).
result<void> assign_device(registry::device_registry& registry, twin::twin_service& twins,
                           const dps::device_assignment& a) {
    auto existing = registry.get_device(a.device_id);
    registry::identity_spec spec;
    registry::if_match condition;
    if (existing) {
        spec.fields = *existing;
        condition.what = registry::if_match::kind::etag;
        condition.etag = registry::etag_for(existing->version);
    } else if (existing.error().code() == errc::device_not_found) {
        spec.fields.device_id = a.device_id;
    } else {
        return existing.error();
    }
    spec.fields.auth = {};
    switch (a.authentication) {
        case dps::device_authentication::sas:
            spec.fields.auth.kind = registry::auth_kind::sas;
            spec.fields.auth.primary_key = a.primary_key;
            spec.fields.auth.secondary_key = a.secondary_key;
            break;
        case dps::device_authentication::self_signed:
            spec.fields.auth.kind = registry::auth_kind::self_signed;
            spec.fields.auth.primary_thumbprint = a.primary_thumbprint;
            spec.fields.auth.secondary_thumbprint = a.secondary_thumbprint;
            break;
        case dps::device_authentication::certificate_authority:
            spec.fields.auth.kind = registry::auth_kind::certificate_authority;
            break;
    }
    spec.fields.iot_edge = a.iot_edge;
    if (auto put = registry.put_device(spec, condition); !put) return put.error();
    if (!a.initial_twin) return {};
    auto body = dps::twin_patch(*a.initial_twin);
    if (body.empty()) return {};
    std::promise<result<boost::json::object>> applied;
    auto future = applied.get_future();
    twins.update(a.device_id, "", body, {},
                 [&applied](result<boost::json::object> r) { applied.set_value(std::move(r)); });
    auto r = future.get();
    if (!r) return r.error();
    return {};
}

// An assignment to this hub or to a linked one; a device moving between hubs with its data takes
// its twin's tags and desired properties along when the hub it leaves still answers.
result<void> carry_out_assignment(registry::device_registry& registry, twin::twin_service& twins,
                                  const dps::device_assignment& a,
                                  const std::vector<std::filesystem::path>& trust) {
    auto assignment = a;
    if (a.migrate_from) {
        auto twin = a.migrate_from->is_self()
                        ? twins.get(a.device_id, "")
                        : dps::twin_in_linked_hub(*a.migrate_from, a.device_id, trust);
        if (twin)
            assignment.initial_twin = dps::twin_patch(*twin);
        else
            spdlog::info(
                "provisioning: the twin of {} could not be read from {} ({}); the "
                "enrollment's initial twin is applied instead",
                a.device_id, a.migrate_from->host_name, twin.error().message());
    }
    if (assignment.hub.is_self()) return assign_device(registry, twins, assignment);
    return dps::assign_in_linked_hub(assignment.hub, assignment, trust);
}

// When the hub's data directory came to be, which Event Hubs clients see as the entity's
// creation time.
sys_time created_time(const instance::layout& where) {
    std::error_code ec;
    auto t = std::filesystem::last_write_time(where.identity_file, ec);
    if (ec) return now();
    return std::chrono::time_point_cast<sys_time::duration>(std::chrono::file_clock::to_sys(t));
}

struct hub::impl {
    config::settings settings;
    prepared paths;
    instance::directory_lock node_lock;  // cluster mode: one process per data directory
    std::unique_ptr<storage::engine> storage;
    // Contents of uploaded files and of routed storage containers: the node's files, or the
    // cluster's blob stream.
    std::unique_ptr<storage::blob_store> upload_blobs, routed_blobs;
    std::unique_ptr<registry::device_registry> registry;
    std::unique_ptr<auth::policy_set> policies;
    std::unique_ptr<auth::host_names> hosts;
    std::unique_ptr<runtime::shard_set> shards;
    std::unique_ptr<runtime::blocking_pool> blocking;
    std::unique_ptr<telemetry::telemetry_service> telemetry;
    std::unique_ptr<telemetry::consumer_groups> groups;
    std::unique_ptr<connections::connection_table> connections;
    std::unique_ptr<hub_events::publisher> hub_events;
    std::unique_ptr<routing::router> router;
    std::unique_ptr<cluster::duty> routing_duty;  // cluster mode: whether this node delivers
    // Cluster mode: whether this node expires C2D messages, feedback and notifications.
    std::unique_ptr<cluster::duty> sweep_duty;
    // Cluster mode: another node changed the routing and this one has not put it in force yet
    // (a failed attempt is retried every second).
    std::atomic<bool> routing_reload_pending{false};

    // Puts another node's routing change in force here; a failure stays pending for the next
    // try. Blocks (on the blocking pool).
    void reload_routing() {
        if (!router || !routing_reload_pending.exchange(false)) return;
        if (auto r = router->reload(); !r) {
            spdlog::warn("routing: cannot follow a change yet: {}", r.error().message());
            routing_reload_pending = true;
        }
    }
    std::atomic<bool> expiring{true};
    std::unique_ptr<endpoints::event_grid> event_grid;
    // event_grid once started, for the cluster's follower (another thread).
    std::atomic<endpoints::event_grid*> event_grid_started{nullptr};
    std::unique_ptr<file_upload::blob_containers> blobs;
    std::unique_ptr<dps::enrollment_store> enrollments;
    std::unique_ptr<dps::linked_hub_store> linked_hubs;
    std::unique_ptr<dps::registration_service> registrations;
    std::unique_ptr<connections::activity_records> activity;
    std::unique_ptr<lifecycle::lifecycle_service> lifecycle;
    // Cluster mode; after the services it reaches, so it ends before them.
    std::unique_ptr<cluster::node> cluster;
    std::unique_ptr<certificates::ca_store> cas;
    std::unique_ptr<device_auth::device_authenticator> authenticator;
    std::unique_ptr<twin::twin_service> twins;
    std::unique_ptr<c2d::c2d_service> c2d;
    std::unique_ptr<file_upload::file_upload_service> files;
    std::unique_ptr<methods::method_service> methods;
    std::unique_ptr<session::connect_limiter> connects;
    std::unique_ptr<session::services> sessions;
    http::router routes;
    std::unique_ptr<http::server> https;
    std::unique_ptr<mqtt::server> mqtt;
    std::unique_ptr<amqp::server> amqp;
    bound_ports ports;
    std::atomic<bool> ready{false};
    bool stopped = false;
};

hub::hub(std::unique_ptr<impl> i) : impl_(std::move(i)) {}
hub::~hub() {
    stop();
}
const bound_ports& hub::ports() const {
    return impl_->ports;
}

result<std::unique_ptr<hub>> hub::start(const config::settings& s) {
    auto im = std::make_unique<impl>();
    im->settings = s;
    auto p = prepare(s);
    if (!p) return p.error();
    im->paths = std::move(*p);

    if (!s.cluster_nats.empty()) {
        auto lock = instance::lock_directory(im->paths.where);
        if (!lock) return lock.error();
        im->node_lock = std::move(*lock);
    }
    auto engine = open_storage(s, im->paths.where);
    if (!engine) return engine.error();
    im->storage = std::move(*engine);
    registry::registry_limits limits;
    limits.max_modules_per_device = s.max_modules_per_device;
    im->registry = std::make_unique<registry::device_registry>(im->storage->kv(), limits);
    im->policies = std::make_unique<auth::policy_set>(im->paths.identity.policies);
    im->hosts = std::make_unique<auth::host_names>(im->paths.names);

    auto tls_ctx = tls::make_server_context(im->paths.cert, im->paths.key);
    if (!tls_ctx) return tls_ctx.error();

    im->shards = std::make_unique<runtime::shard_set>(s.threads);
    im->blocking = std::make_unique<runtime::blocking_pool>(s.blocking_threads);
    im->telemetry = std::make_unique<telemetry::telemetry_service>(im->storage->events());
    im->groups =
        std::make_unique<telemetry::consumer_groups>(im->storage->kv(), s.max_consumer_groups);
    im->connections = std::make_unique<connections::connection_table>();
    // Hub events carry the hub's name as Azure does: the host name's first label.
    const auto hub_name = auth::event_hub_name(im->paths.identity.hostname);
    im->hub_events = std::make_unique<hub_events::publisher>(im->storage->hub_events(), hub_name);
    // Connected and disconnected, for every transport, from the one table that knows.
    im->connections->on_state_change(
        [im = im.get()](const std::string& d, const std::string& m, bool up) {
            im->hub_events->connection_state({d, m}, up);
            if (im->cluster) im->cluster->connection_state(d, m, up);
        });
    im->cas = std::make_unique<certificates::ca_store>(im->storage->kv());
    if (auto r = im->cas->load(); !r) return r.error();
    im->authenticator = std::make_unique<device_auth::device_authenticator>(
        *im->registry, *im->policies, *im->hosts,
        [cas = im->cas.get()](const auth::client_certificate& c) { return cas->verify_chain(c); });

    c2d::c2d_limits c2d_limits;
    c2d_limits.max_depth = s.c2d_max_depth;
    c2d_limits.max_delivery_count = s.c2d_max_delivery_count;
    c2d_limits.lock_timeout = s.c2d_lock_timeout;
    c2d_limits.default_ttl = s.c2d_default_ttl;
    c2d_limits.max_ttl = s.c2d_max_ttl;
    c2d_limits.max_message_bytes = s.c2d_max_message_bytes;
    im->c2d = std::make_unique<c2d::c2d_service>(im->storage->kv(), *im->registry, *im->connections,
                                                 c2d_limits);
    if (auto r = im->c2d->load(); !r)
        return error(r.error().code(), "C2D queues: " + r.error().message());
    file_upload::upload_settings file_settings;
    file_settings.host_name = im->paths.identity.hostname;
    file_settings.max_bytes = s.files_max_bytes;
    file_settings.sas_ttl = s.files_sas_ttl;
    if (auto* shared = im->storage->shared_blobs()) {
        im->upload_blobs = storage::prefixed_blobs(*shared, "files");
        im->routed_blobs = storage::prefixed_blobs(*shared, "routed");
    } else {
        auto files = storage::open_file_blobs(s.data_dir / "files");
        if (!files) return files.error();
        im->upload_blobs = std::move(*files);
        auto routed = storage::open_file_blobs(s.data_dir / "routed");
        if (!routed) return routed.error();
        im->routed_blobs = std::move(*routed);
    }
    im->files = std::make_unique<file_upload::file_upload_service>(
        im->storage->kv(), *im->upload_blobs, std::move(file_settings));
    if (auto r = im->files->load(); !r)
        return error(r.error().code(), "File upload: " + r.error().message());
    // The registry and twins show a device's queue depth as cloudToDeviceMessageCount.
    auto live = [conns = im->connections.get(), c2d = im->c2d.get()](const registry::identity& id) {
        auto state = conns->live(id);
        if (!id.is_module()) state.cloud_to_device_message_count = c2d->depth(id.device_id);
        return state;
    };

    twin::twin_limits twin_limits;
    twin_limits.tags_bytes = s.twin_tags_bytes;
    twin_limits.desired_bytes = s.twin_desired_bytes;
    twin_limits.reported_bytes = s.twin_reported_bytes;
    twin_limits.depth = s.twin_depth;
    im->twins = std::make_unique<twin::twin_service>(
        im->storage->kv(), *im->registry, im->storage->hub_events(), hub_name, twin_limits);
    im->twins->set_live(live);
    if (s.cluster_nats.empty()) im->twins->set_event_interest(&im->hub_events->interest());
    im->twins->set_offload(
        [pool = im->blocking.get()](std::function<void()> fn) { pool->post(std::move(fn)); });
    // A connected device hears about desired changes over whatever protocol it uses.
    // (In cluster mode the device may be connected to another node: the cluster hears too.)
    im->twins->on_desired([im = im.get()](const twin::desired_change& c) {
        if (!im->connections->deliver_desired(c.device_id, c.module_id,
                                              boost::json::serialize(c.patch), c.version) &&
            im->cluster)
            im->cluster->desired_changed(c);
    });
    im->methods = std::make_unique<methods::method_service>(*im->connections,
                                                            im->shards->at(0).get_executor());
    im->methods->set_registered(
        [reg = im->registry.get()](const std::string& d, const std::string& m) -> result<void> {
            auto found = m.empty() ? reg->get_device(d) : reg->get_module(d, m);
            if (!found) return found.error();
            return {};
        });

    // What follows a registry change (connections ended, state dropped) lives in one service.
    im->activity =
        std::make_unique<connections::activity_records>(*im->connections, im->storage->kv());
    if (auto r = im->activity->load(); !r)
        return error(r.error().code(), "lastActivityTime records: " + r.error().message());
    im->lifecycle = std::make_unique<lifecycle::lifecycle_service>(
        *im->registry, lifecycle::targets{*im->twins, *im->c2d, *im->connections, *im->activity,
                                          [pool = im->blocking.get()](std::function<void()> fn) {
                                              pool->post(std::move(fn));
                                          },
                                          im->hub_events.get()});

    if (!s.cluster_nats.empty()) {
        auto bus = cluster::connect_bus(cluster_connection(s, im->paths.where), s.cluster_prefix);
        if (!bus) return bus.error();
        im->cluster = std::make_unique<
            cluster::node>(cluster::services{im->storage->kv(),
                                             *im->connections,
                                             *im->c2d,
                                             *im->methods,
                                             *im->lifecycle,
                                             [pool = im->blocking.get()](std::function<void()> fn) {
                                                 pool->post(std::move(fn));
                                             },
                                             {{"routing/config",
                                               [im = im.get()](const storage::kv_change&) {
                                                   // Off the follower's thread: opening an
                                                   // endpoint's streams can take seconds.
                                                   im->routing_reload_pending = true;
                                                   im->blocking->post(
                                                       [im] { im->reload_routing(); });
                                               }},
                                              {"eventgrid/sub/",
                                               [im = im.get()](const storage::kv_change&) {
                                                   im->blocking->post([im] {
                                                       auto* grid = im->event_grid_started.load();
                                                       if (!grid) return;
                                                       if (auto r = grid->reload(); !r)
                                                           spdlog::warn(
                                                               "event grid: cannot follow a "
                                                               "change: {}",
                                                               r.error().message());
                                                   });
                                               }}}},
                           std::move(*bus));
        if (auto r = im->cluster->start(); !r) return r.error();
        im->methods->set_elsewhere(
            [node = im->cluster.get()](const methods::method_call& call,
                                       methods::method_service::completion& done) {
                return node->forward_method(call, done);
            });
        spdlog::info("cluster: this node is {}", im->cluster->id());
    }

    im->connects = std::make_unique<session::connect_limiter>(s.device_connects_per_second,
                                                              s.device_connects_burst);
    // The provisioning service assigns devices to this hub and to the hubs linked to it; every
    // protocol's clients reach it. Linked hubs and allocation webhooks are trusted like the
    // routing endpoints: the system's CAs, the development CA here, routing.trusted_ca_file.
    im->enrollments = std::make_unique<dps::enrollment_store>(im->storage->kv());
    im->linked_hubs =
        std::make_unique<dps::linked_hub_store>(im->storage->kv(), im->paths.identity.hostname);
    std::vector<std::filesystem::path> outgoing_trust;
    if (std::error_code ec;
        std::filesystem::is_regular_file(im->paths.where.tls_dir / "ca.pem", ec))
        outgoing_trust.push_back(im->paths.where.tls_dir / "ca.pem");
    if (!s.routing_trusted_ca_file.empty()) outgoing_trust.push_back(s.routing_trusted_ca_file);
    im->registrations = std::make_unique<dps::registration_service>(
        im->storage->kv(), *im->enrollments, *im->linked_hubs, im->paths.identity.id_scope,
        [registry = im->registry.get(), twins = im->twins.get(),
         outgoing_trust](const dps::device_assignment& a) -> result<void> {
            return carry_out_assignment(*registry, *twins, a, outgoing_trust);
        },
        dps::http_webhook(outgoing_trust));
    im->registrations->set_ca_lookup(
        [cas = im->cas.get()](std::string_view name) -> result<std::string> {
            auto ca = cas->get(std::string(name));
            if (!ca) return ca.error();
            if (!ca->verified)
                return error(errc::unauthorized,
                             "CA certificate '" + std::string(name) + "' is not verified.");
            return ca->pem;
        });
    im->sessions = std::make_unique<session::services>(session::services{
        *im->authenticator, *im->connections, *im->telemetry, *im->twins, *im->methods, *im->c2d,
        im->storage->kv(), *im->blocking, im->connects.get(), im->registrations.get()});
    auto* ready = &im->ready;
    im->routes.add("GET", "/health", [ready](http::request&, http::responder done) {
        if (ready->load())
            return done(http::response::json(200, boost::json::object{{"status", "ok"}}));
        done(http::error_response(error(errc::service_unavailable, "The hub is starting.")));
    });
    service_api::context api{*im->registry, *im->policies, *im->hosts};
    api.live = live;
    api.connected_devices = [conns = im->connections.get()] { return conns->connected_devices(); };
    service_api::add_routes(im->routes, std::move(api));
    service_api::add_twin_routes(im->routes, {*im->policies, *im->hosts, *im->twins, *im->methods});
    service_api::add_c2d_routes(im->routes, {*im->policies, *im->hosts, *im->c2d});
    service_api::add_certificate_routes(im->routes, {*im->policies, *im->hosts, *im->cas});
    service_api::add_dps_routes(im->routes, {*im->policies, *im->hosts, *im->enrollments,
                                             *im->registrations, *im->linked_hubs});
    service_api::add_cluster_routes(
        im->routes, {*im->policies, *im->hosts, [im = im.get()]() -> result<boost::json::value> {
                         if (!im->cluster) return boost::json::object{{"mode", "embedded"}};
                         auto s = im->cluster->status();
                         if (!s) return s.error();
                         auto described = im->storage->describe();
                         if (!described.empty()) (*s)["streams"] = boost::json::parse(described);
                         return boost::json::value(std::move(*s));
                     }});

    // Routing: where device messages and hub events go beyond the built-in stream.
    routing::router_settings rs;
    rs.hub_name = hub_name;
    rs.limits.max_endpoints = s.routing_max_endpoints;
    rs.limits.max_routes = s.routing_max_routes;
    rs.limits.max_enrichments = s.routing_max_enrichments;
    rs.dead_after = s.routing_dead_after;
    // Every node ingests, one node's workers deliver: the shared ingest log is the way.
    rs.route_on_append = s.routing_decide_on_append && !im->cluster;
    // In cluster mode every node raises every hub event: a subscription or route another node
    // took reaches this one only a moment later, and events raised meanwhile would be lost.
    if (!im->cluster) rs.hub_event_interest = &im->hub_events->interest();
    im->blobs =
        std::make_unique<file_upload::blob_containers>(im->storage->kv(), *im->routed_blobs);
    // Receivers with a private CA: the operator names it. An external event hub may also be
    // another iothub on this machine, whose certificate the development CA here signed.
    http::client_options http_options;
    endpoints::eventhub_sink_options eventhub_options;
    if (!s.routing_trusted_ca_file.empty()) {
        std::error_code ec;
        if (!std::filesystem::is_regular_file(s.routing_trusted_ca_file, ec))
            return error(errc::argument_invalid,
                         "routing.trusted_ca_file: " + s.routing_trusted_ca_file.string() +
                             " is not a readable file.");
        http_options.extra_ca_files.push_back(s.routing_trusted_ca_file);
        eventhub_options.extra_ca_files.push_back(s.routing_trusted_ca_file);
    }
    if (std::error_code ec;
        std::filesystem::is_regular_file(im->paths.where.tls_dir / "ca.pem", ec))
        eventhub_options.extra_ca_files.push_back(im->paths.where.tls_dir / "ca.pem");
    endpoints::nats_sink_options nats_options;
    nats_options.hub_name = hub_name;
    if (!s.cluster_nats.empty()) {
        nats_options.cluster = cluster_connection(s, im->paths.where);
        nats_options.reserved_prefix = s.cluster_prefix;
    }
    rs.sinks =
        [kv = &im->storage->kv(), blobs = im->blobs.get(), hub_name, http_options, eventhub_options,
         nats_options](const routing::endpoint& e) -> result<std::unique_ptr<routing::sink>> {
        switch (e.kind) {
            case routing::endpoint_kind::storage_container:
                if (e.connection_string.empty())
                    return endpoints::make_blob_sink(e, *blobs, *kv, hub_name);
                break;
            case routing::endpoint_kind::event_hub:
                if (!e.connection_string.empty())
                    return endpoints::make_eventhub_sink(e, *kv, eventhub_options);
                break;
            case routing::endpoint_kind::webhook:
                return endpoints::make_webhook_sink(e, *kv, http_options);
            case routing::endpoint_kind::kafka:
                return endpoints::make_kafka_sink(e, *kv);
            case routing::endpoint_kind::nats:
                return endpoints::make_nats_sink(e, *kv, nats_options);
            default:
                break;
        }
        return error(errc::bad_request, "Delivery to " + std::string(routing::to_string(e.kind)) +
                                            " endpoints with a connection string is not "
                                            "built into this hub yet.");
    };
    im->router = std::make_unique<routing::router>(
        *im->storage, *im->telemetry,
        [twins = im->twins.get()](std::string_view d,
                                  std::string_view m) -> std::optional<boost::json::object> {
            auto t = twins->get(d, m);
            if (!t) return std::nullopt;
            return std::move(*t);
        },
        rs);
    std::optional<routing::routing_config> initial_routing;
    if (!s.routing_file.empty() && !s.routing_document.empty())
        return error(errc::argument_invalid,
                     "Give the routing document either in the configuration file's [routing] "
                     "table or in routing.file, not both.");
    if (!s.routing_document.empty()) {
        auto parsed = routing::parse(s.routing_document, rs.limits);
        if (!parsed) return error(parsed.error().code(), "[routing]: " + parsed.error().message());
        initial_routing = std::move(*parsed);
    }
    if (!s.routing_file.empty()) {
        std::ifstream in(s.routing_file);
        if (!in) return error(errc::argument_invalid, "Cannot read " + s.routing_file.string());
        std::stringstream text;
        text << in.rdbuf();
        auto parsed = routing::parse(text.str(), rs.limits);
        if (!parsed)
            return error(parsed.error().code(),
                         s.routing_file.string() + ": " + parsed.error().message());
        initial_routing = std::move(*parsed);
    }
    // In cluster mode one node at a time delivers (the routing duty); every node follows the
    // configuration, which decides where device messages go.
    if (im->cluster) im->router->set_delivering(false);
    if (auto r = im->router->start(std::move(initial_routing)); !r)
        return error(r.error().code(), "Routing: " + r.error().message());
    if (im->cluster) {
        im->routing_duty = std::make_unique<cluster::duty>(
            im->storage->kv(), im->cluster->id(), "routing", std::chrono::seconds(6),
            [router = im->router.get()](bool held) { router->set_delivering(held); });
        im->routing_duty->start();
        im->expiring = false;
        im->sweep_duty = std::make_unique<cluster::duty>(
            im->storage->kv(), im->cluster->id(), "sweeps", std::chrono::seconds(6),
            [expiring = &im->expiring](bool held) { *expiring = held; });
        im->sweep_duty->start();
    }
    service_api::add_routing_routes(im->routes,
                                    {*im->policies, *im->hosts, *im->router, rs.limits});
    im->event_grid = std::make_unique<endpoints::event_grid>(im->storage->kv(), *im->router,
                                                             hub_name, http_options);
    if (auto r = im->event_grid->start(); !r)
        return error(r.error().code(), "Event Grid subscriptions: " + r.error().message());
    im->event_grid_started = im->event_grid.get();
    service_api::add_event_grid_routes(im->routes, {*im->policies, *im->hosts, *im->event_grid});
    device_api::add_routes(im->routes, {*im->authenticator, *im->sessions,
                                        device_api::default_max_batch_bytes, im->files.get()});
    service_api::add_file_routes(im->routes, {*im->policies, *im->hosts, *im->files});
    auto& timers = im->shards->at(0);
    service_api::add_telemetry_routes(
        im->routes,
        {*im->policies, *im->hosts, im->storage->events(), *im->groups,
         [pool = im->blocking.get()](std::function<void()> fn) { pool->post(std::move(fn)); },
         [&timers](std::chrono::milliseconds delay, std::function<void()> fn) {
             auto t = std::make_shared<boost::asio::steady_timer>(timers, delay);
             t->async_wait([t, fn = std::move(fn)](const boost::system::error_code&) { fn(); });
         }});
    // Last: `/{container}` must not shadow any API path.
    device_api::add_blob_read_routes(im->routes, {*im->blobs, *im->policies});

    im->mqtt = std::make_unique<mqtt::server>(*im->shards, *im->sessions, mqtt::server_settings{});

    im->amqp = std::make_unique<amqp::server>(
        *im->shards,
        amqp::services{*im->authenticator, *im->policies, *im->hosts, *im->c2d,
                       im->paths.identity.hostname, im->storage->events(), *im->groups,
                       auth::event_hub_name(im->paths.identity.hostname),
                       created_time(im->paths.where), *im->files,
                       [router = im->router.get()](std::string_view name) {
                           return router->hosted_event_hub(name);
                       }},
        *im->sessions);

    // A token held on an AMQP connection stops counting when its identity's access ends, even
    // for an identity that has no links open at the moment.
    im->lifecycle->on_access_ended(
        [amqp = im->amqp.get()](const std::string& d, const std::string& m) {
            amqp->revoke(d, m);
        });

    http::server_settings hs;
    hs.max_body = s.max_request_body;
    im->https =
        std::make_unique<http::server>(*im->shards, *im->blocking, *tls_ctx, im->routes, hs);
    im->https->add_websocket_protocol(
        "mqtt", [m = im->mqtt.get()](auto stream, auto request, std::string subprotocol,
                                     std::string early) {
            m->accept_websocket(std::move(stream), std::move(request), std::move(subprotocol),
                                std::move(early));
        });
    im->https->add_websocket_protocol(
        "AMQPWSB10", [a = im->amqp.get()](auto stream, auto request, std::string subprotocol,
                                          std::string early) {
            a->accept_websocket(std::move(stream), std::move(request), std::move(subprotocol),
                                std::move(early));
        });
    auto https_port = im->https->listen(s.bind_address, s.https_port);
    if (!https_port)
        return error(https_port.error().code(), "HTTPS: " + https_port.error().message());
    im->ports.https = *https_port;
    auto mqtt_port = im->mqtt->listen(s.bind_address, s.mqtt_port, *tls_ctx);
    if (!mqtt_port) return error(mqtt_port.error().code(), "MQTT: " + mqtt_port.error().message());
    im->ports.mqtt = *mqtt_port;
    auto amqp_port = im->amqp->listen(s.bind_address, s.amqp_port, *tls_ctx);
    if (!amqp_port) return error(amqp_port.error().code(), "AMQP: " + amqp_port.error().message());
    im->ports.amqp = *amqp_port;
    if (s.mqtt_plain_enabled) {
        auto plain = im->mqtt->listen(s.bind_address, s.mqtt_plain_port, nullptr);
        if (!plain) return error(plain.error().code(), "plain MQTT: " + plain.error().message());
        im->ports.mqtt_plain = *plain;
    }

    // Retention runs off the shards, every tenth of the retention period (100 ms to 1 min).
    boost::asio::co_spawn(
        timers,
        [engine = im->storage.get(), pool = im->blocking.get(), &timers,
         interval = std::clamp<std::chrono::milliseconds>(
             std::chrono::duration_cast<std::chrono::milliseconds>(s.retention) / 10,
             std::chrono::milliseconds(100),
             std::chrono::minutes(1))]() -> boost::asio::awaitable<void> {
            boost::asio::steady_timer t(timers);
            for (;;) {
                t.expires_after(interval);
                auto [ec] =
                    co_await t.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
                if (ec) co_return;
                pool->post([engine] { engine->enforce_retention(now()); });
            }
        },
        boost::asio::detached);

    // C2D and file-notification locks time out and messages expire on the second, as near as
    // Azure shows; lastActivityTime is written behind every five seconds.
    boost::asio::co_spawn(
        timers,
        [c2d = im->c2d.get(), files = im->files.get(), activity = im->activity.get(),
         pool = im->blocking.get(), expiring = &im->expiring, im = im.get(),
         &timers]() -> boost::asio::awaitable<void> {
            boost::asio::steady_timer t(timers);
            for (unsigned tick = 1;; ++tick) {
                t.expires_after(std::chrono::seconds(1));
                auto [ec] =
                    co_await t.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
                if (ec) co_return;
                const bool expire = expiring->load();
                pool->post([c2d, expire] { c2d->sweep(now(), expire); });
                pool->post([files, expire] { files->sweep(now(), expire); });
                if (im->routing_reload_pending.load()) pool->post([im] { im->reload_routing(); });
                if (tick % 5 == 0)
                    pool->post([activity] {
                        if (auto r = activity->flush(); !r)
                            spdlog::warn("lastActivityTime not recorded: {}", r.error().message());
                    });
            }
        },
        boost::asio::detached);

    im->shards->start();
    instance::runtime_info running;
    running.hostname = im->paths.identity.hostname;
    running.https_port = im->ports.https;
    running.mqtt_port = im->ports.mqtt;
    running.amqp_port = im->ports.amqp;
    running.mqtt_plain_port = im->ports.mqtt_plain;
    running.pid = static_cast<long>(::getpid());
    if (auto r = instance::write_runtime(im->paths.where, running); !r)
        spdlog::warn("cannot record runtime.json: {}", r.error().message());
    im->ready = true;
    print_banner(im->paths, s, im->ports);
    return std::unique_ptr<hub>(new hub(std::move(im)));
}

void block_stop_signals() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    std::signal(SIGPIPE, SIG_IGN);
}

void hub::wait_for_signal() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    int sig = 0;
    while (sigwait(&set, &sig) != 0) {
    }
    spdlog::info("received {}, shutting down", sig == SIGINT ? "SIGINT" : "SIGTERM");
}

void hub::stop() {
    auto& im = *impl_;
    if (im.stopped) return;
    im.stopped = true;
    im.ready = false;
    im.https->begin_stop();
    im.mqtt->begin_stop();
    im.amqp->begin_stop();
    im.methods->stop();  // calls waiting for devices end now rather than hold the shutdown
    // Requests in flight get the grace period to finish; idle connections are already closed.
    auto open = [&] {
        return im.https->active_connections() + im.mqtt->active_connections() +
               im.amqp->active_connections();
    };
    auto deadline = std::chrono::steady_clock::now() + im.settings.shutdown_grace;
    if (auto busy = open())
        spdlog::info("waiting for {} connections to finish (https {}, mqtt {}, amqp {})", busy,
                     im.https->active_connections(), im.mqtt->active_connections(),
                     im.amqp->active_connections());
    while (open() > 0 && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    if (auto left = open())
        spdlog::warn("{} connections still open after the grace period; closing them", left);
    im.shards->stop();
    im.blocking->stop();
    im.https.reset();
    im.mqtt.reset();
    im.amqp.reset();
    if (auto r = im.activity->flush(); !r)
        spdlog::warn("lastActivityTime not recorded: {}", r.error().message());
    im.routing_duty.reset();  // given up at once: another node delivers from here on
    im.sweep_duty.reset();
    im.cluster.reset();  // before the services it follows changes into
    im.lifecycle.reset();
    if (im.router) im.router->stop();  // its workers write cursors: before storage goes
    im.event_grid_started = nullptr;
    im.event_grid.reset();  // after the taps that deliver for it
    im.c2d.reset();         // before the storage it writes to
    im.files.reset();
    if (auto r = im.storage->flush(); !r)
        spdlog::error("storage flush failed: {}", r.error().message());
    im.registry.reset();
    im.storage.reset();
    instance::remove_runtime(im.paths.where);
    spdlog::info("stopped");
}

result<void> initialise(const config::settings& s) {
    auto p = prepare(s);
    if (!p) return p.error();
    std::cout << "Initialised " << std::filesystem::absolute(s.data_dir).string() << " for "
              << p->identity.hostname << "\n";
    if (!p->ca.empty())
        std::cout << "CA certificate: " << std::filesystem::absolute(p->ca).string() << "\n";
    return {};
}

void configure_logging(const std::string& level) {
    auto logger = spdlog::stderr_color_mt("iothub");
    logger->set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %^%l%$ %v", spdlog::pattern_time_type::utc);
    spdlog::set_default_logger(logger);
    spdlog::set_level(spdlog::level::from_str(level));
}

}  // namespace iothub::app
