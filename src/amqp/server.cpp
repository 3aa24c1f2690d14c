#include "amqp/server.hpp"

#include "amqp/addresses.hpp"
#include "amqp/cbs.hpp"
#include "amqp/detail/frame_padding.hpp"
#include "amqp/detail/sasl.hpp"
#include "amqp/detail/transfer_formats.hpp"
#include "amqp/event_hubs.hpp"
#include "amqp/message_codec.hpp"
#include "common/encoding.hpp"
#include "net/stream_listeners.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/json.hpp>
#include <proton/condition.h>
#include <proton/connection.h>
#include <proton/connection_driver.h>
#include <proton/delivery.h>
#include <proton/disposition.h>
#include <proton/event.h>
#include <proton/link.h>
#include <proton/session.h>
#include <proton/terminus.h>
#include <proton/transport.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <charconv>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <unordered_map>

namespace iothub::amqp {
namespace asio = boost::asio;
namespace beast = boost::beast;
using net::error_code;
using net::transport;

namespace {
class connection;
}

struct server::impl : std::enable_shared_from_this<server::impl> {
    runtime::shard_set& shards;
    services svc;
    server_settings settings;
    std::unique_ptr<net::stream_listeners> listeners;

    mutable std::mutex mutex;
    std::map<connection*, std::weak_ptr<connection>> live;
    bool stopping = false;

    // Event Hubs epoch receivers: per consumer group and partition, the highest epoch attached and
    // the link that holds it. A higher epoch takes over; a lower one, or a receiver without an
    // epoch while one is held, is refused.
    struct epoch_owner {
        std::int64_t epoch = 0;
        std::weak_ptr<connection> conn;
        std::uint64_t link_id = 0;
    };
    std::map<std::string, epoch_owner> epochs;

    impl(runtime::shard_set& s, services v, server_settings st) : shards(s), svc(v), settings(st) {}

    void start(std::unique_ptr<transport> t, asio::any_io_executor ex);
    void forget(connection* c) {
        std::lock_guard lock(mutex);
        live.erase(c);
    }
};

namespace {

// The AMQP condition a core error travels as (protocol.md 3.8).
const char* condition_for(errc code) {
    switch (code) {
        case errc::device_not_found:
        case errc::module_not_found:
        case errc::not_found:
            return "amqp:not-found";
        case errc::queue_depth_exceeded:
        case errc::quota_exceeded:
            return "amqp:resource-limit-exceeded";
        case errc::message_too_large:
        case errc::request_too_large:
            return "amqp:link:message-size-exceeded";
        case errc::unauthorized:
        case errc::device_disabled:
            return "amqp:unauthorized-access";
        case errc::throttled:
            return "com.microsoft:device-container-throttled";
        case errc::message_lock_lost:
            return "com.microsoft:message-lock-lost";
        case errc::precondition_failed:
            return "com.microsoft:precondition-failed";
        case errc::device_already_exists:
            return "com.microsoft:device-already-exists";
        case errc::bad_request:
        case errc::argument_invalid:
        case errc::argument_null:
        case errc::format_error:
            return "com.microsoft:argument-error";
        case errc::gateway_timeout:
            return "com.microsoft:timeout";
        default:
            return "amqp:internal-error";
    }
}

void set_condition(pn_condition_t* c, std::string_view name, std::string_view description) {
    pn_condition_set_name(c, std::string(name).c_str());
    pn_condition_set_description(c, std::string(description).c_str());
}

std::string terminus_address(pn_terminus_t* t) {
    const char* a = pn_terminus_get_address(t);
    return a ? a : "";
}

// A message-id kept past the message it came from, to answer with the same AMQP type.
struct saved_id {
    pn_type_t type = PN_NULL;
    std::string bytes;
    pn_uuid_t uuid{};
    std::uint64_t number = 0;

    static saved_id of(pn_atom_t a) {
        saved_id s;
        s.type = a.type;
        if (a.type == PN_STRING || a.type == PN_BINARY || a.type == PN_SYMBOL)
            s.bytes.assign(a.u.as_bytes.start ? a.u.as_bytes.start : "", a.u.as_bytes.size);
        else if (a.type == PN_UUID)
            s.uuid = a.u.as_uuid;
        else if (a.type == PN_ULONG)
            s.number = a.u.as_ulong;
        else
            s.type = PN_NULL;
        return s;
    }
    pn_atom_t atom() const {
        pn_atom_t a;
        a.type = type;
        if (type == PN_STRING || type == PN_BINARY || type == PN_SYMBOL)
            a.u.as_bytes = pn_bytes(bytes.size(), bytes.data());
        else if (type == PN_UUID)
            a.u.as_uuid = uuid;
        else if (type == PN_ULONG)
            a.u.as_ulong = number;
        return a;
    }
};

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

enum class role {
    cbs_in,
    cbs_out,
    d2c,
    c2d_out,
    methods_in,
    methods_out,
    twin_in,
    twin_out,
    service_c2d,
    feedback_out,
    file_notifications_out,
    management_in,
    management_out,
    event_hub_partition,
};

struct link_state {
    std::uint64_t id = 0;
    pn_link_t* link = nullptr;
    role what = role::cbs_in;
    std::string identity;  // "d" or "d/m" for device links
    std::string device_id;
    std::string module_id;
    std::string grant_key;  // the grant that authorized it
    // Receivers: deliveries the core has not answered yet.
    std::size_t unsettled = 0;
    std::vector<storage::event_record> batch;  // telemetry read in the current pass
    std::vector<pn_delivery_t*> batch_deliveries;
    struct pending_send {
        pn_delivery_t* delivery;
        result<c2d::message> message;
        std::string device_id;
    };
    std::deque<pending_send> sends;  // service C2D messages waiting to be enqueued, in order
    bool sending = false;
    // Receivers: the oversized delivery being read and dropped, and its bytes so far.
    pn_delivery_t* discarding = nullptr;
    std::uint64_t discarded = 0;
    // Senders: lock tokens of unsettled C2D or feedback deliveries.
    std::map<pn_delivery_t*, std::string> locks;
    // Senders: encoded replies waiting for credit.
    std::deque<std::string> outbox;
    // Event Hubs partition receivers.
    int partition = 0;
    std::uint64_t next_sequence = 0;
    bool reading = false;
    std::uint64_t watch = 0;
    std::string epoch_key;  // set when it holds an epoch
};

class connection;

// What the core pushes to one identity on this connection.
class identity_channel final : public connections::device_channel {
  public:
    identity_channel(std::weak_ptr<connection> c, asio::any_io_executor ex, std::string key)
        : conn_(std::move(c)), ex_(ex), key_(std::move(key)) {}
    bool wants_desired_updates() const override { return desired.load(); }
    void send_desired_update(std::string patch, std::uint64_t version) override;
    bool accepts_methods() const override { return methods.load(); }
    void send_method_request(std::string name, std::string request_id,
                             std::string payload) override;
    void c2d_available() override;

    std::atomic<bool> desired{false};
    std::atomic<bool> methods{false};

  private:
    std::weak_ptr<connection> conn_;
    asio::any_io_executor ex_;
    std::string key_;
};

struct identity_state {
    device_auth::device_principal principal;
    std::shared_ptr<connections::connection_table::entry> entry;
    std::shared_ptr<identity_channel> channel;
    std::shared_ptr<const storage::property_list> stamp;
    std::set<std::uint64_t> links;
    struct twin_op {
        std::string operation;
        std::string resource;
        saved_id correlation;
        std::string body;
    };
    std::deque<twin_op> twin_ops;  // one at a time, in arrival order
};

class connection final : public std::enable_shared_from_this<connection> {
  public:
    connection(std::shared_ptr<server::impl> srv, std::unique_ptr<transport> t,
               asio::any_io_executor ex)
        : srv_(std::move(srv)),
          svc_(srv_->svc),
          transport_(std::move(t)),
          ex_(ex),
          timer_(ex),
          scratch_(make_message()) {
        std::memset(&driver_, 0, sizeof driver_);
    }

    ~connection() {
        if (driver_.transport || driver_.connection) pn_connection_driver_destroy(&driver_);
        std::free(encode_buffer_.start);
    }

    asio::awaitable<void> run() {
        if (!setup()) co_return finish();
        auto self = shared_from_this();
        asio::co_spawn(
            ex_, [self]() -> asio::awaitable<void> { co_await self->tick_loop(); }, asio::detached);
        process();
        std::vector<char> in(64 * 1024);
        for (;;) {
            auto [ec, n] = co_await transport_->read_some(asio::buffer(in));
            if (ec) break;
            std::size_t off = 0;
            while (off < n && !closed_) {
                auto rb = pn_connection_driver_read_buffer(&driver_);
                if (rb.size == 0) break;
                auto k = std::min(rb.size, n - off);
                std::memcpy(rb.start, in.data() + off, k);
                formats_.feed(std::string_view(in.data() + off, k));
                pn_connection_driver_read_done(&driver_, k);
                off += k;
                process();
            }
            if (closed_ || pn_connection_driver_read_closed(&driver_)) break;
        }
        if (!closed_) {
            pn_connection_driver_read_close(&driver_);
            process();
        }
        finish();
    }

    // From any thread: ends the connection (the hub is stopping).
    void kick(std::string reason) {
        asio::post(ex_, [self = shared_from_this(), reason = std::move(reason)] {
            if (self->closed_) return;
            set_condition(pn_connection_condition(self->driver_.connection),
                          "amqp:connection:forced", reason);
            pn_connection_close(self->driver_.connection);
            self->process();
            self->abort_after(std::chrono::seconds(2));
        });
    }

    // --- called by identity channels, on this connection's executor ---------------------------
    void send_desired(const std::string& key, const std::string& patch, std::uint64_t version) {
        auto* ls = link_of(key, role::twin_out);
        if (!ls) return;
        auto* m = scratch_.get();
        pn_message_clear(m);
        put_long_property(pn_message_annotations(m), "version", static_cast<std::int64_t>(version),
                          true);
        set_data_body(m, patch);
        send(*ls, m);
        process();
    }

    void send_method(const std::string& key, const std::string& name, const std::string& rid,
                     const std::string& payload) {
        auto* ls = link_of(key, role::methods_out);
        if (!ls) return;
        auto* m = scratch_.get();
        pn_message_clear(m);
        pn_uuid_t u;
        if (auto a = uuid_atom(rid_to_uuid_text(rid), u)) pn_message_set_correlation_id(m, *a);
        put_string_property(pn_message_properties(m), "IoThub-methodname", name);
        set_data_body(m, payload);
        send(*ls, m);
        process();
    }

    void c2d_available(const std::string& key) {
        if (auto* ls = link_of(key, role::c2d_out)) pump_c2d(*ls);
        process();
    }

  private:
    // --- set-up and the byte pump ---------------------------------------------------------------
    bool setup() {
        pn_transport_t* t = pn_transport();
        pn_connection_t* c = pn_connection();
        if (!t || !c) return false;
        pn_transport_set_server(t);
        sasl_.offer_external = transport_->client_certificate().has_value();
        // SASL PLAIN carries a SAS token as the password: it authorizes like a put-token. The
        // check reads the registry on this thread; PLAIN is rare (DPS clients) and the read is a
        // point lookup.
        sasl_.check_plain = [this](const std::string& user, const std::string& password) {
            put_token_request r{"put-token", "servicebus.windows.net:sastoken", user, password};
            auto g = authorize_put_token(r, svc_.authenticator, svc_.policies, svc_.hosts,
                                         svc_.event_hub, iothub::now());
            if (!g) {
                spdlog::debug("{} {}: SASL PLAIN refused: {}", transport_->kind(),
                              transport_->peer(), g.error().message());
                return false;
            }
            add_grant(std::move(*g));
            return true;
        };
        detail::install_sasl(t, sasl_);
        pn_transport_set_max_frame(t, srv_->settings.max_frame_size);
        pn_transport_set_channel_max(t, 0x7fff);
        pn_transport_set_idle_timeout(
            t, static_cast<pn_millis_t>(srv_->settings.idle_timeout.count() * 1000));
        if (pn_connection_driver_init(&driver_, c, t) != 0) return false;
        pn_connection_set_container(c, svc_.hub_name.c_str());
        return pn_connection_driver_bind(&driver_) == 0;
    }

    void process() {
        if (in_process_) {
            again_ = true;
            return;
        }
        in_process_ = true;
        do {
            again_ = false;
            while (auto* e = pn_connection_driver_next_event(&driver_)) handle(e);
            flush_telemetry();
        } while (again_);
        in_process_ = false;
        if (closed_) return;
        schedule_tick();
        start_writing();
    }

    void start_writing() {
        if (writing_) return;
        auto b = pn_connection_driver_write_buffer(&driver_);
        if (b.size == 0) {
            if (pn_connection_driver_finished(&driver_)) end_transport();
            return;
        }
        writing_ = true;
        asio::co_spawn(
            ex_,
            [self = shared_from_this()]() -> asio::awaitable<void> { co_await self->write_loop(); },
            asio::detached);
    }

    asio::awaitable<void> write_loop() {
        for (;;) {
            auto b = pn_connection_driver_write_buffer(&driver_);
            if (b.size == 0) break;
            out_.clear();
            padder_.feed(std::string_view(b.start, b.size), out_);
            pn_connection_driver_write_done(&driver_, b.size);
            if (out_.empty()) continue;
            auto ec = co_await transport_->write(asio::buffer(out_));
            if (ec) {
                pn_connection_driver_write_close(&driver_);
                transport_->abort();
                break;
            }
        }
        writing_ = false;
        if (pn_connection_driver_finished(&driver_)) end_transport();
    }

    void end_transport() {
        if (ending_) return;
        ending_ = true;
        asio::co_spawn(
            ex_,
            [self = shared_from_this()]() -> asio::awaitable<void> {
                self->abort_after(std::chrono::seconds(2));
                co_await self->transport_->shutdown();
            },
            asio::detached);
    }

    void abort_after(std::chrono::seconds d) {
        auto t = std::make_shared<asio::steady_timer>(ex_, d);
        t->async_wait([t, self = shared_from_this()](error_code ec) {
            if (!ec) self->transport_->abort();
        });
    }

    // Proton's timers (idle timeout, heartbeats) and token expiry share one timer.
    void schedule_tick() {
        auto now_ms =
            static_cast<pn_timestamp_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                            std::chrono::steady_clock::now().time_since_epoch())
                                            .count());
        auto next = pn_transport_tick(driver_.transport, now_ms);
        auto deadline = std::chrono::steady_clock::time_point::max();
        if (next) deadline = std::chrono::steady_clock::time_point(std::chrono::milliseconds(next));
        if (auto e = earliest_expiry()) {
            auto until = *e - iothub::now();
            deadline = std::min(deadline,
                                std::chrono::steady_clock::now() +
                                    std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                        until + std::chrono::milliseconds(1)));
        }
        if (deadline != tick_at_) {
            tick_at_ = deadline;
            timer_.expires_at(deadline);
        }
    }

    asio::awaitable<void> tick_loop() {
        for (;;) {
            auto [ec] = co_await timer_.async_wait(net::as_tuple);
            if (closed_) co_return;
            if (ec) continue;  // re-armed
            tick_at_ = {};
            expire_grants();
            process();
        }
    }

    void finish() {
        if (closed_) return;
        closed_ = true;
        timer_.cancel();
        const auto t = iothub::now();
        for (auto& [key, id] : identities_) {
            if (id.entry) svc_.connections.detach(id.entry, t);
            id.channel->methods = false;
            id.channel->desired = false;
        }
        // Only what this connection holds goes back: a newer connection of the same device may
        // hold locks of its own already.
        std::vector<std::pair<std::string, std::string>> c2d_locks;  // device, token
        std::vector<std::string> feedback_locks;
        std::vector<std::string> file_locks;
        for (auto& [l, ls] : links_) {
            if (ls->what == role::c2d_out)
                for (auto& [d, token] : ls->locks) c2d_locks.emplace_back(ls->device_id, token);
            if (ls->what == role::feedback_out)
                for (auto& [d, token] : ls->locks) feedback_locks.push_back(token);
            if (ls->what == role::file_notifications_out)
                for (auto& [d, token] : ls->locks) file_locks.push_back(token);
        }
        if (!file_locks.empty())
            svc_.blocking.post([&files = svc_.files, file_locks] {
                for (const auto& token : file_locks) (void)files.abandon_notification(token);
            });
        if (file_watch_) svc_.files.unwatch_notifications(file_watch_);
        if (!c2d_locks.empty() || !feedback_locks.empty())
            svc_.blocking.post([&c2d = svc_.c2d, c2d_locks, feedback_locks, t] {
                for (const auto& [device, token] : c2d_locks) (void)c2d.abandon(device, token, t);
                for (const auto& token : feedback_locks) (void)c2d.abandon_feedback(token);
            });
        if (feedback_watch_) svc_.c2d.unwatch_feedback(feedback_watch_);
        for (auto& [l, ls] : links_)
            if (ls->what == role::event_hub_partition) close_partition(*ls);
        links_.clear();
        by_id_.clear();
        identities_.clear();
        transport_->abort();
        srv_->forget(this);
        spdlog::debug("{} {}: closed", transport_->kind(), transport_->peer());
    }

    // --- proton events --------------------------------------------------------------------------
    void handle(pn_event_t* e) {
        switch (pn_event_type(e)) {
            case PN_CONNECTION_REMOTE_OPEN:
                on_open();
                break;
            case PN_CONNECTION_REMOTE_CLOSE:
                pn_connection_close(pn_event_connection(e));
                break;
            case PN_SESSION_REMOTE_OPEN: {
                auto* s = pn_event_session(e);
                if (pn_session_state(s) & PN_LOCAL_UNINIT) pn_session_open(s);
                break;
            }
            case PN_SESSION_REMOTE_CLOSE:
                pn_session_close(pn_event_session(e));
                break;
            case PN_LINK_REMOTE_OPEN:
                on_attach(pn_event_link(e));
                break;
            case PN_LINK_REMOTE_CLOSE:
            case PN_LINK_REMOTE_DETACH: {
                auto* l = pn_event_link(e);
                forget_link(l);
                if (!(pn_link_state(l) & PN_LOCAL_CLOSED)) pn_link_close(l);
                break;
            }
            case PN_LINK_FLOW:
                on_flow(pn_event_link(e));
                break;
            case PN_DELIVERY:
                on_delivery(pn_event_delivery(e));
                break;
            case PN_TRANSPORT_ERROR: {
                auto* c = pn_transport_condition(pn_event_transport(e));
                spdlog::debug(
                    "{} {}: {}: {}", transport_->kind(), transport_->peer(),
                    pn_condition_get_name(c) ? pn_condition_get_name(c) : "error",
                    pn_condition_get_description(c) ? pn_condition_get_description(c) : "");
                break;
            }
            default:
                break;
        }
    }

    void on_open() { pn_connection_open(driver_.connection); }

    // --- links ----------------------------------------------------------------------------------
    void refuse(pn_link_t* l, std::string_view condition, std::string_view description) {
        spdlog::debug("{} {}: link '{}' refused: {}", transport_->kind(), transport_->peer(),
                      pn_link_name(l), description);
        set_condition(pn_link_condition(l), condition, description);
        pn_link_open(l);
        pn_link_close(l);
    }

    void on_attach(pn_link_t* l) {
        if (links_.size() >= srv_->settings.max_links_per_connection)
            return refuse(l, "amqp:resource-limit-exceeded", "Too many links on one connection.");
        const bool hub_sends = pn_link_is_sender(l);
        const auto address =
            terminus_address(hub_sends ? pn_link_remote_source(l) : pn_link_remote_target(l));
        auto a = classify_address(address);
        using k = node_address::kind;
        std::optional<role> r;
        switch (a.what) {
            case k::cbs:
                r = hub_sends ? role::cbs_out : role::cbs_in;
                break;
            case k::device_events:
                if (!hub_sends) r = role::d2c;
                break;
            case k::device_c2d:
                if (hub_sends) r = role::c2d_out;
                break;
            case k::device_methods:
                r = hub_sends ? role::methods_out : role::methods_in;
                break;
            case k::device_twin:
                r = hub_sends ? role::twin_out : role::twin_in;
                break;
            case k::service_c2d:
                if (!hub_sends) r = role::service_c2d;
                break;
            case k::service_feedback:
                if (hub_sends) r = role::feedback_out;
                break;
            case k::service_file_notifications:
                if (hub_sends) r = role::file_notifications_out;
                break;
            case k::eh_management:
                r = hub_sends ? role::management_out : role::management_in;
                break;
            case k::eh_partition:
                if (hub_sends) r = role::event_hub_partition;
                break;
            case k::unknown:
                break;
        }
        if (!r) {
            if (a.what == k::unknown)
                return refuse(l, "amqp:not-found", "Unknown address '" + address + "'.");
            return refuse(l, "amqp:not-allowed",
                          std::string("The hub does not ") +
                              (hub_sends ? "send from" : "receive on") + " '" + address + "'.");
        }
        auto ls = std::make_unique<link_state>();
        ls->id = next_link_id_++;
        ls->link = l;
        ls->what = *r;
        if (a.is_device()) {
            ls->device_id = a.device_id;
            ls->module_id = a.module_id;
            ls->identity = a.module_id.empty() ? a.device_id : a.device_id + "/" + a.module_id;
            auto g = device_grant(a.device_id, a.module_id);
            if (!g)
                return refuse(l, "amqp:unauthorized-access",
                              "No token for '" + ls->identity +
                                  "' on this connection: put one on $cbs first.");
            ls->grant_key = g->key();
            join_identity(*ls, *g->device);
        } else if (*r == role::event_hub_partition) {
            auto* g = service_grant();
            if (!g)
                return refuse(l, "amqp:unauthorized-access",
                              "Reading events needs a token of a policy with ServiceConnect.");
            ls->grant_key = g->key();
            if (auto refused = open_partition(*ls, a))
                return refuse(l, refused->first, refused->second);
        } else if (*r != role::cbs_in && *r != role::cbs_out && *r != role::management_in &&
                   *r != role::management_out) {
            auto* g = service_grant();
            if (!g)
                return refuse(l, "amqp:unauthorized-access",
                              "The service links need a token of a policy with ServiceConnect.");
            ls->grant_key = g->key();
        }

        pn_terminus_copy(pn_link_source(l), pn_link_remote_source(l));
        pn_terminus_copy(pn_link_target(l), pn_link_remote_target(l));
        pn_link_set_snd_settle_mode(l, pn_link_remote_snd_settle_mode(l));
        pn_link_set_rcv_settle_mode(l, pn_link_remote_rcv_settle_mode(l));
        if (!hub_sends) {
            const std::uint64_t limit = *r == role::service_c2d
                                            ? svc_.c2d.limits().max_message_bytes
                                            : svc_.telemetry.max_message_size();
            pn_link_set_max_message_size(l, limit + 16 * 1024);  // properties and framing
        }
        pn_link_open(l);
        auto* raw = ls.get();
        by_id_[raw->id] = raw;
        links_[l] = std::move(ls);
        if (!hub_sends) top_up(*raw);
        after_attach(*raw);
    }

    void after_attach(link_state& ls) {
        switch (ls.what) {
            case role::methods_in:
            case role::methods_out: {
                auto& id = identities_.at(ls.identity);
                bool both = link_of(ls.identity, role::methods_in) &&
                            link_of(ls.identity, role::methods_out);
                if (both && !id.channel->methods.exchange(true))
                    svc_.methods.device_ready(ls.device_id, ls.module_id);
                break;
            }
            case role::c2d_out:
                pump_c2d(ls);
                break;
            case role::event_hub_partition:
                pump_events(ls);
                break;
            case role::feedback_out:
                if (!feedback_watch_)
                    feedback_watch_ = svc_.c2d.watch_feedback([weak = weak_from_this(), ex = ex_] {
                        asio::post(ex, [weak] {
                            if (auto self = weak.lock()) self->pump_all_feedback();
                        });
                    });
                pump_feedback(ls);
                break;
            case role::file_notifications_out:
                if (!file_watch_)
                    file_watch_ =
                        svc_.files.watch_notifications([weak = weak_from_this(), ex = ex_] {
                            asio::post(ex, [weak] {
                                if (auto self = weak.lock()) self->pump_all_file_notifications();
                            });
                        });
                pump_file_notifications(ls);
                break;
            default:
                break;
        }
    }

    void forget_link(pn_link_t* l) {
        auto it = links_.find(l);
        if (it == links_.end()) return;
        auto ls = std::move(it->second);
        links_.erase(it);
        by_id_.erase(ls->id);
        if (ls->what == role::event_hub_partition) close_partition(*ls);
        const auto t = iothub::now();
        if (ls->what == role::c2d_out && !ls->locks.empty()) {
            std::vector<std::string> tokens;
            for (auto& [d, token] : ls->locks) tokens.push_back(token);
            svc_.blocking.post([&c2d = svc_.c2d, d = ls->device_id, tokens, t] {
                for (const auto& token : tokens) (void)c2d.abandon(d, token, t);
            });
        }
        if (ls->what == role::feedback_out && !ls->locks.empty()) {
            std::vector<std::string> tokens;
            for (auto& [d, token] : ls->locks) tokens.push_back(token);
            svc_.blocking.post([&c2d = svc_.c2d, tokens] {
                for (const auto& token : tokens) (void)c2d.abandon_feedback(token);
            });
        }
        if (ls->what == role::file_notifications_out && !ls->locks.empty()) {
            std::vector<std::string> tokens;
            for (auto& [d, token] : ls->locks) tokens.push_back(token);
            svc_.blocking.post([&files = svc_.files, tokens] {
                for (const auto& token : tokens) (void)files.abandon_notification(token);
            });
        }
        if (ls->identity.empty()) return;
        auto id = identities_.find(ls->identity);
        if (id == identities_.end()) return;
        if (ls->what == role::methods_in || ls->what == role::methods_out)
            id->second.channel->methods = false;
        if (ls->what == role::twin_out) id->second.channel->desired = false;
        id->second.links.erase(ls->id);
        if (id->second.links.empty()) {
            if (id->second.entry) svc_.connections.detach(id->second.entry, t);
            identities_.erase(id);
        }
    }

    link_state* link_of(const std::string& identity, role r) {
        auto id = identities_.find(identity);
        if (id == identities_.end()) return nullptr;
        for (auto lid : id->second.links) {
            auto it = by_id_.find(lid);
            if (it != by_id_.end() && it->second->what == r) return it->second;
        }
        return nullptr;
    }

    // The identity is live on this connection from its first link to its last.
    void join_identity(link_state& ls, const device_auth::device_principal& who) {
        auto [it, fresh] = identities_.try_emplace(ls.identity);
        auto& id = it->second;
        id.links.insert(ls.id);
        if (!fresh) return;
        id.principal = who;
        id.stamp = telemetry::telemetry_service::stamp_for(who);
        id.channel = std::make_shared<identity_channel>(weak_from_this(), ex_, ls.identity);
        id.entry = svc_.connections.attach(
            ls.device_id, ls.module_id,
            [weak = weak_from_this(), ex = ex_, key = ls.identity](const std::string& reason) {
                asio::post(ex, [weak, key, reason] {
                    if (auto self = weak.lock()) self->close_identity(key, reason);
                });
            },
            iothub::now(), id.channel);
        spdlog::debug("{} {}: {} attached", transport_->kind(), transport_->peer(), ls.identity);
    }

    // Another connection took the identity over, or its access was revoked. The token that
    // authorized it goes too: after a revocation (deleted, disabled, new keys) it must not attach
    // the identity's links again, and after a takeover the client puts a token again if it wants
    // the identity back.
    void close_identity(const std::string& key, const std::string& reason) {
        grants_.erase(key);
        auto id = identities_.find(key);
        if (id == identities_.end()) return;
        std::vector<pn_link_t*> doomed;
        for (auto lid : id->second.links)
            if (auto it = by_id_.find(lid); it != by_id_.end()) doomed.push_back(it->second->link);
        for (auto* l : doomed) {
            set_condition(pn_link_condition(l), "amqp:link:detach-forced", reason);
            forget_link(l);
            pn_link_close(l);
        }
        process();
    }

  public:
    // From any thread: the identity's access ended (deleted, disabled, new credentials); tokens
    // this connection holds for it (and for a device's modules) stop counting, links or not.
    void revoke(std::string device_id, std::string module_id) {
        asio::post(ex_, [self = shared_from_this(), device_id = std::move(device_id),
                         module_id = std::move(module_id)] {
            if (self->closed_) return;
            const auto key = module_id.empty() ? device_id : device_id + "/" + module_id;
            std::erase_if(self->grants_, [&](const auto& g) {
                return g.first == key || (module_id.empty() && g.first.rfind(key + "/", 0) == 0);
            });
        });
    }

  private:
    // --- authorization --------------------------------------------------------------------------
    void add_grant(grant g) {
        auto key = g.key();
        grants_[key] = std::move(g);
    }

    const grant* device_grant(const std::string& device_id, const std::string& module_id) {
        auto key = module_id.empty() ? device_id : device_id + "/" + module_id;
        if (auto it = grants_.find(key); it != grants_.end()) return &it->second;
        // X.509 devices authenticate with the TLS client certificate instead of CBS.
        if (auto cert = transport_->client_certificate()) {
            auto who = svc_.authenticator.authenticate({device_id, module_id, std::nullopt, *cert},
                                                       iothub::now());
            if (!who) return nullptr;
            grant g;
            g.device = std::move(*who);
            add_grant(std::move(g));
            return &grants_.at(key);
        }
        return nullptr;
    }

    const grant* service_grant() const {
        for (const auto& [key, g] : grants_)
            if (!g.device && g.rights.has(auth::right::service_connect)) return &g;
        return nullptr;
    }

    std::optional<sys_time> earliest_expiry() const {
        std::optional<sys_time> e;
        for (const auto& [key, g] : grants_)
            if (g.expires && (!e || *g.expires < *e)) e = g.expires;
        return e;
    }

    // A token that expires without renewal takes back what it authorized.
    void expire_grants() {
        const auto t = iothub::now();
        std::vector<std::string> gone;
        for (const auto& [key, g] : grants_)
            if (g.expires && *g.expires <= t) gone.push_back(key);
        for (const auto& key : gone) {
            grants_.erase(key);
            std::vector<pn_link_t*> doomed;
            for (auto& [l, ls] : links_)
                if (ls->grant_key == key) doomed.push_back(l);
            for (auto* l : doomed) {
                set_condition(pn_link_condition(l), "amqp:unauthorized-access",
                              "The token that authorized this link expired.");
                forget_link(l);
                pn_link_close(l);
            }
        }
    }

    // --- flow -----------------------------------------------------------------------------------
    // Keeps a receiver's credit plus its unanswered deliveries at the configured window, so a
    // client never has more than that many messages waiting on the core.
    void top_up(link_state& ls) {
        const auto window = static_cast<int>(srv_->settings.link_credit);
        int want = window - pn_link_credit(ls.link) - static_cast<int>(ls.unsettled);
        if (want > window / 2 || (want > 0 && pn_link_credit(ls.link) == 0))
            pn_link_flow(ls.link, want);
    }

    void on_flow(pn_link_t* l) {
        auto it = links_.find(l);
        if (it == links_.end()) return;
        auto& ls = *it->second;
        drain_outbox(ls);
        if (ls.what == role::c2d_out) pump_c2d(ls);
        if (ls.what == role::feedback_out) pump_feedback(ls);
        if (ls.what == role::file_notifications_out) pump_file_notifications(ls);
        if (ls.what == role::event_hub_partition) pump_events(ls);
    }

    // Sends `m` (or queues it for credit). Replies and notifications are small and few.
    void send(link_state& ls, pn_message_t* m) {
        if (pn_link_credit(ls.link) > 0 && ls.outbox.empty()) {
            send_now(ls, m, {});
            return;
        }
        pn_rwbytes_t buf{0, nullptr};
        auto n = pn_message_encode2(m, &buf);
        if (n >= 0) ls.outbox.emplace_back(buf.start, static_cast<std::size_t>(n));
        std::free(buf.start);
    }

    pn_delivery_t* send_now(link_state& ls, pn_message_t* m, std::string_view tag) {
        auto t = tag.empty() ? next_tag() : std::string(tag);
        auto* d = pn_delivery(ls.link, pn_dtag(t.data(), t.size()));
        if (pn_message_send(m, ls.link, &encode_buffer_) < 0) {
            spdlog::warn("{} {}: cannot encode a message: {}", transport_->kind(),
                         transport_->peer(), pn_error_text(pn_message_error(m)));
        }
        if (pn_link_snd_settle_mode(ls.link) == PN_SND_SETTLED) pn_delivery_settle(d);
        return d;
    }

    void drain_outbox(link_state& ls) {
        while (!ls.outbox.empty() && pn_link_credit(ls.link) > 0) {
            auto& bytes = ls.outbox.front();
            auto t = next_tag();
            auto* d = pn_delivery(ls.link, pn_dtag(t.data(), t.size()));
            pn_link_send(ls.link, bytes.data(), bytes.size());
            pn_link_advance(ls.link);
            if (pn_link_snd_settle_mode(ls.link) == PN_SND_SETTLED) pn_delivery_settle(d);
            ls.outbox.pop_front();
        }
    }

    std::string next_tag() {
        auto n = next_tag_++;
        return std::string(reinterpret_cast<const char*>(&n), sizeof n);
    }

    // --- deliveries -----------------------------------------------------------------------------
    void on_delivery(pn_delivery_t* d) {
        auto* l = pn_delivery_link(d);
        auto it = links_.find(l);
        if (it == links_.end()) {
            if (pn_link_is_receiver(l) && pn_delivery_readable(d) && !pn_delivery_partial(d)) {
                forget_format(d);
                pn_link_advance(l);
                pn_delivery_settle(d);
            }
            return;
        }
        auto& ls = *it->second;
        if (pn_link_is_sender(l)) return on_outcome(ls, d);
        // Proton counts credit down on every transfer but does not refuse one beyond it; a
        // client that sends without credit is cut off as the spec's error says.
        if (pn_link_credit(l) < 0) {
            set_condition(pn_link_condition(l), "amqp:link:transfer-limit-exceeded",
                          "A transfer arrived without link credit.");
            pn_delivery_settle(d);
            forget_link(l);
            pn_link_close(l);
            return;
        }
        if (!pn_delivery_readable(d)) return;
        const auto limit = pn_link_max_message_size(l);
        if (ls.discarding == d || (limit && pn_delivery_pending(d) > limit)) return discard(ls, d);
        if (pn_delivery_partial(d)) return;
        std::string bytes(pn_delivery_pending(d), '\0');
        pn_link_recv(l, bytes.data(), bytes.size());
        pn_link_advance(l);
        // Only device telemetry takes batches; a format the hub does not know is never read as
        // if it were a plain message.
        const auto format = forget_format(d);
        if (format == detail::batched_message_format && ls.what == role::d2c) {
            ++ls.unsettled;
            return on_telemetry_batch(ls, d, bytes);
        }
        if (format != detail::standard_message_format) {
            reject(d, "amqp:not-implemented",
                   "Message format " + std::to_string(format) + " is not supported on this link" +
                       (format == detail::batched_message_format
                            ? "; only device telemetry takes batched messages."
                            : "."));
            top_up(ls);
            return;
        }
        auto* m = scratch_.get();
        pn_message_clear(m);
        // Proton asserts (aborts the process) on an empty input instead of failing.
        if (bytes.empty() || pn_message_decode(m, bytes.data(), bytes.size()) != 0) {
            reject(d, "amqp:decode-error", "The message could not be decoded.");
            top_up(ls);
            return;
        }
        if (auto joined = joined_data_body(bytes)) set_data_body(m, *joined);
        ++ls.unsettled;
        switch (ls.what) {
            case role::cbs_in:
                on_cbs_request(ls, d, m);
                break;
            case role::d2c:
                on_telemetry(ls, d, m);
                break;
            case role::service_c2d:
                on_service_send(ls, d, m);
                break;
            case role::twin_in:
                on_twin_request(ls, d, m);
                break;
            case role::methods_in:
                on_method_response(ls, d, m);
                break;
            case role::management_in:
                on_management_request(ls, d, m);
                break;
            default:
                settle(ls, d, PN_ACCEPTED);
                break;
        }
    }

    // The message-format the delivery arrived with; the record of it goes.
    std::uint32_t forget_format(pn_delivery_t* d) {
        const auto tag = pn_delivery_tag(d);
        return formats_.take(pn_link_name(pn_delivery_link(d)),
                             std::string_view(tag.start, tag.size));
    }

    // A message over the link's size limit is read and dropped as it arrives, then rejected
    // with amqp:link:message-size-exceeded: the link stays up, as it does on Azure (the SDKs
    // report MessageTooLargeError and carry on; a detach makes the service SDK drop its
    // connection). Only a sender that keeps going far beyond the limit loses the link.
    void discard(link_state& ls, pn_delivery_t* d) {
        auto* l = ls.link;
        if (ls.discarding != d) {
            ls.discarding = d;
            ls.discarded = 0;
        }
        char sink[16 * 1024];
        for (;;) {
            auto n = pn_link_recv(l, sink, sizeof sink);
            if (n <= 0) break;
            ls.discarded += static_cast<std::uint64_t>(n);
        }
        if (ls.discarded > srv_->settings.max_discarded_message_bytes) {
            ls.discarding = nullptr;
            return too_large(ls, d);
        }
        if (pn_delivery_partial(d)) return;
        forget_format(d);
        pn_link_advance(l);
        ls.discarding = nullptr;
        reject(d, "amqp:link:message-size-exceeded",
               "The message is " + std::to_string(ls.discarded) +
                   " bytes encoded; the maximum is " + std::to_string(pn_link_max_message_size(l)) +
                   ".");
        top_up(ls);
    }

    void too_large(link_state& ls, pn_delivery_t* d) {
        set_condition(pn_link_condition(ls.link), "amqp:link:message-size-exceeded",
                      "The message exceeds the maximum size of " +
                          std::to_string(pn_link_max_message_size(ls.link)) + " bytes.");
        pn_delivery_settle(d);
        auto* l = ls.link;
        forget_link(l);
        pn_link_close(l);
    }

    void reject(pn_delivery_t* d, std::string_view condition, std::string_view description) {
        set_condition(pn_disposition_condition(pn_delivery_local(d)), condition, description);
        pn_delivery_update(d, PN_REJECTED);
        pn_delivery_settle(d);
    }

    void settle(link_state& ls, pn_delivery_t* d, std::uint64_t outcome) {
        if (!pn_delivery_settled(d)) pn_delivery_update(d, outcome);
        pn_delivery_settle(d);
        if (ls.unsettled) --ls.unsettled;
        top_up(ls);
    }

    void settle_error(link_state& ls, pn_delivery_t* d, const error& e) {
        reject(d, condition_for(e.code()), e.message());
        if (ls.unsettled) --ls.unsettled;
        top_up(ls);
    }

    // Runs `work` on the blocking pool, then `then` back on this connection, if the link is
    // still there.
    template <class Work, class Then>
    void off_shard(std::uint64_t link_id, Work work, Then then) {
        svc_.blocking.post([self = shared_from_this(), link_id, work = std::move(work),
                            then = std::move(then)]() mutable {
            auto r = work();
            asio::post(self->ex_,
                       [self, link_id, r = std::move(r), then = std::move(then)]() mutable {
                           if (self->closed_) return;
                           auto it = self->by_id_.find(link_id);
                           if (it == self->by_id_.end()) return;
                           then(*it->second, std::move(r));
                           self->process();
                       });
        });
    }

    // --- $cbs -----------------------------------------------------------------------------------
    void on_cbs_request(link_state& ls, pn_delivery_t* d, pn_message_t* m) {
        put_token_request r;
        r.operation = application_property(m, "operation").value_or("");
        r.type = application_property(m, "type").value_or("");
        r.audience = application_property(m, "name").value_or("");
        r.token = body_bytes(m).value_or("");
        auto id = saved_id::of(pn_message_get_id(m));
        const char* reply_to = pn_message_get_reply_to(m);
        std::string reply(reply_to ? reply_to : "");
        settle(ls, d, PN_ACCEPTED);
        svc_.blocking.post([self = shared_from_this(), r = std::move(r), id, reply] {
            auto g = authorize_put_token(r, self->svc_.authenticator, self->svc_.policies,
                                         self->svc_.hosts, self->svc_.event_hub, iothub::now());
            asio::post(self->ex_, [self, g = std::move(g), id, reply]() mutable {
                if (self->closed_) return;
                self->cbs_answer(std::move(g), id, reply);
                self->process();
            });
        });
    }

    void cbs_answer(result<grant> g, const saved_id& id, const std::string& reply_to) {
        int status = 200;
        std::string description = "OK";
        if (g) {
            add_grant(std::move(*g));
        } else {
            status = g.error().code() == errc::unauthorized ? 401 : 400;
            description = g.error().message();
            spdlog::debug("{} {}: put-token refused: {}", transport_->kind(), transport_->peer(),
                          description);
        }
        // The reply goes to the link named by reply-to (Event Hubs), else to the $cbs receiver
        // (the IoT SDKs say "cbs", which names no link).
        link_state* out = nullptr;
        for (auto& [l, ls] : links_) {
            if (ls->what != role::cbs_out) continue;
            if (!out) out = ls.get();
            if (reply_to == pn_link_name(l)) {
                out = ls.get();
                break;
            }
        }
        if (!out) return;
        auto* m = scratch_.get();
        pn_message_clear(m);
        if (id.type != PN_NULL) pn_message_set_correlation_id(m, id.atom());
        auto* props = pn_message_properties(m);
        put_int_property(props, "status-code", status);
        put_string_property(props, "status-description", description);
        send(*out, m);
    }

    // --- telemetry ------------------------------------------------------------------------------
    void on_telemetry(link_state& ls, pn_delivery_t* d, pn_message_t* m) {
        auto e = to_event(m);
        if (e) {
            if (auto ok = svc_.telemetry.check(*e); !ok) e = ok.error();
        }
        if (!e) return settle_error(ls, d, e.error());
        ls.batch.push_back(std::move(*e));
        ls.batch_deliveries.push_back(d);
    }

    // A batched message: every data section is a whole message, stored as if sent alone. The
    // batch is refused whole if any of them does not decode or breaks a limit; one disposition
    // settles it once all of them are durable.
    void on_telemetry_batch(link_state& ls, pn_delivery_t* d, std::string_view bytes) {
        auto sections = data_sections(bytes);
        if (!sections) {
            reject(d, "amqp:decode-error",
                   "The batched message could not be read: " + sections.error().message());
            if (ls.unsettled) --ls.unsettled;
            return top_up(ls);
        }
        std::vector<storage::event_record> events;
        events.reserve(sections->size());
        auto* m = scratch_.get();
        for (std::size_t i = 0; i < sections->size(); ++i) {
            const auto inner = (*sections)[i];
            pn_message_clear(m);
            const auto which = "Message " + std::to_string(i + 1) + " of " +
                               std::to_string(sections->size()) + " in the batch";
            // Checked before proton sees it: proton asserts (aborts the process) on an empty
            // input and reads some truncated sections without complaint.
            if (!well_formed_message(inner) ||
                pn_message_decode(m, inner.data(), inner.size()) != 0) {
                reject(d, "amqp:decode-error",
                       which + " could not be decoded; nothing of the batch was stored.");
                if (ls.unsettled) --ls.unsettled;
                return top_up(ls);
            }
            auto e = to_event(m);
            if (!e)
                return settle_error(ls, d,
                                    error(e.error().code(), which + ": " + e.error().message()));
            events.push_back(std::move(*e));
        }
        if (auto ok = svc_.telemetry.check_batch(events); !ok)
            return settle_error(ls, d, ok.error());
        for (auto& e : events) ls.batch.push_back(std::move(e));
        ls.batch_deliveries.push_back(d);
    }

    // The messages one read brought are appended together: one durable write, one completion.
    void flush_telemetry() {
        for (auto& [l, lsp] : links_) {
            auto& ls = *lsp;
            if (ls.batch.empty()) continue;
            auto id = identities_.find(ls.identity);
            if (id == identities_.end()) continue;
            id->second.entry->touch(iothub::now());
            auto deliveries = std::move(ls.batch_deliveries);
            ls.batch_deliveries.clear();
            auto batch = std::move(ls.batch);
            ls.batch.clear();
            svc_.telemetry.ingest(id->second.principal, id->second.stamp, std::move(batch),
                                  [self = shared_from_this(), link_id = ls.id,
                                   deliveries = std::move(deliveries)](result<void> r) mutable {
                                      asio::post(self->ex_, [self, link_id, r = std::move(r),
                                                             deliveries = std::move(deliveries)] {
                                          if (self->closed_) return;
                                          auto it = self->by_id_.find(link_id);
                                          if (it == self->by_id_.end()) return;
                                          for (auto* d : deliveries) {
                                              if (r)
                                                  self->settle(*it->second, d, PN_ACCEPTED);
                                              else
                                                  self->settle_error(*it->second, d, r.error());
                                          }
                                          if (!r)
                                              spdlog::error("{} {}: telemetry not stored: {}",
                                                            self->transport_->kind(),
                                                            self->transport_->peer(),
                                                            r.error().message());
                                          self->process();
                                      });
                                  });
        }
    }

    // --- service: send C2D ----------------------------------------------------------------------
    void on_service_send(link_state& ls, pn_delivery_t* d, pn_message_t* m) {
        auto msg = to_c2d_message(m);
        std::string device;
        if (msg) {
            const char* to = pn_message_get_address(m);
            auto target = c2d_target_device(to ? to : "");
            if (!target)
                msg = error(errc::argument_invalid,
                            "The message's 'to' must be /devices/{deviceId}/messages/devicebound.");
            else
                device = std::move(*target);
        }
        ls.sends.push_back({d, std::move(msg), std::move(device)});
        run_sends(ls);
    }

    // One link's messages are enqueued one batch at a time, in order, so a device receives them
    // in the order the service sent them.
    void run_sends(link_state& ls) {
        if (ls.sending || ls.sends.empty()) return;
        ls.sending = true;
        auto work = std::make_shared<std::deque<link_state::pending_send>>(std::move(ls.sends));
        ls.sends.clear();
        off_shard(
            ls.id,
            [&c2d = svc_.c2d, work] {
                // Messages that are already refused keep their error; the rest are enqueued
                // together, one sync for all of them.
                std::vector<result<void>> out(work->size());
                std::vector<c2d::c2d_service::outgoing> batch;
                std::vector<std::size_t> where;
                for (std::size_t i = 0; i < work->size(); ++i) {
                    auto& s = (*work)[i];
                    if (!s.message) {
                        out[i] = s.message.error();
                        continue;
                    }
                    batch.push_back({s.device_id, std::move(*s.message)});
                    where.push_back(i);
                }
                auto sent = c2d.send_many(std::move(batch), iothub::now());
                for (std::size_t j = 0; j < sent.size(); ++j) out[where[j]] = std::move(sent[j]);
                return out;
            },
            [this, work](link_state& ls, std::vector<result<void>> results) {
                for (std::size_t i = 0; i < results.size(); ++i) {
                    if (results[i])
                        settle(ls, (*work)[i].delivery, PN_ACCEPTED);
                    else
                        settle_error(ls, (*work)[i].delivery, results[i].error());
                }
                ls.sending = false;
                run_sends(ls);
            });
    }

    // --- device: receive C2D --------------------------------------------------------------------
    void pump_c2d(link_state& ls) {
        const auto t = iothub::now();
        while (pn_link_credit(ls.link) > 0) {
            auto next = svc_.c2d.receive(ls.device_id, t);
            if (!next) break;
            auto tag = guid_bytes(next->lock_token).value_or(next_tag());
            fill_delivery(scratch_.get(), *next, ls.device_id);
            auto* d = send_now(ls, scratch_.get(), tag);
            if (pn_link_snd_settle_mode(ls.link) == PN_SND_SETTLED) {
                // A receiver that takes messages pre-settled accepts them on arrival.
                svc_.blocking.post([&c2d = svc_.c2d, dev = ls.device_id, token = next->lock_token,
                                    t] { (void)c2d.complete(dev, token, t); });
                continue;
            }
            ls.locks[d] = next->lock_token;
        }
    }

    void pump_feedback(link_state& ls) {
        const auto t = iothub::now();
        while (pn_link_credit(ls.link) > 0) {
            auto batch = svc_.c2d.receive_feedback(t);
            if (!batch) break;
            auto tag = guid_bytes(batch->lock_token).value_or(next_tag());
            fill_feedback(scratch_.get(), *batch, svc_.hub_name);
            auto* d = send_now(ls, scratch_.get(), tag);
            if (pn_link_snd_settle_mode(ls.link) == PN_SND_SETTLED) {
                svc_.blocking.post([&c2d = svc_.c2d, token = batch->lock_token] {
                    (void)c2d.complete_feedback(token);
                });
                continue;
            }
            ls.locks[d] = batch->lock_token;
        }
    }

    void pump_all_feedback() {
        if (closed_) return;
        for (auto& [l, ls] : links_)
            if (ls->what == role::feedback_out) pump_feedback(*ls);
        process();
    }

    // One notification per message, locked like a feedback batch.
    void pump_file_notifications(link_state& ls) {
        const auto t = iothub::now();
        while (pn_link_credit(ls.link) > 0) {
            auto next = svc_.files.receive_notification(t);
            if (!next) break;
            auto tag = guid_bytes(next->lock_token).value_or(next_tag());
            fill_file_notification(scratch_.get(), next->notification.enqueued_time,
                                   file_upload::notification_json(next->notification),
                                   svc_.hub_name);
            auto* d = send_now(ls, scratch_.get(), tag);
            if (pn_link_snd_settle_mode(ls.link) == PN_SND_SETTLED) {
                svc_.blocking.post([&files = svc_.files, token = next->lock_token] {
                    (void)files.complete_notification(token);
                });
                continue;
            }
            ls.locks[d] = next->lock_token;
        }
    }

    void pump_all_file_notifications() {
        if (closed_) return;
        for (auto& [l, ls] : links_)
            if (ls->what == role::file_notifications_out) pump_file_notifications(*ls);
        process();
    }

    // A disposition from the peer on one of the hub's deliveries.
    void on_outcome(link_state& ls, pn_delivery_t* d) {
        if (!pn_delivery_updated(d)) return;
        const auto state = pn_delivery_remote_state(d);
        const bool final_state = state == PN_ACCEPTED || state == PN_REJECTED ||
                                 state == PN_RELEASED || state == PN_MODIFIED;
        if (!final_state && !pn_delivery_settled(d)) return;
        auto lock = ls.locks.find(d);
        if (lock != ls.locks.end()) {
            auto token = lock->second;
            ls.locks.erase(lock);
            const auto t = iothub::now();
            if (ls.what == role::c2d_out) {
                svc_.blocking.post([&c2d = svc_.c2d, dev = ls.device_id, token, state, t] {
                    result<void> r = state == PN_ACCEPTED   ? c2d.complete(dev, token, t)
                                     : state == PN_REJECTED ? c2d.reject(dev, token, t)
                                                            : c2d.abandon(dev, token, t);
                    if (!r)
                        spdlog::debug("c2d settlement for '{}' not applied: {}", dev,
                                      r.error().message());
                });
            } else if (ls.what == role::feedback_out) {
                svc_.blocking.post([&c2d = svc_.c2d, token, state] {
                    (void)(state == PN_ACCEPTED   ? c2d.complete_feedback(token)
                           : state == PN_REJECTED ? c2d.reject_feedback(token)
                                                  : c2d.abandon_feedback(token));
                });
            } else if (ls.what == role::file_notifications_out) {
                svc_.blocking.post([&files = svc_.files, token, state] {
                    (void)(state == PN_ACCEPTED   ? files.complete_notification(token)
                           : state == PN_REJECTED ? files.reject_notification(token)
                                                  : files.abandon_notification(token));
                });
            }
        }
        pn_delivery_settle(d);
    }

    // --- twin -----------------------------------------------------------------------------------
    void on_twin_request(link_state& ls, pn_delivery_t* d, pn_message_t* m) {
        identity_state::twin_op op;
        op.operation = annotation(m, "operation").value_or("");
        op.resource = annotation(m, "resource").value_or("");
        op.correlation = saved_id::of(pn_message_get_correlation_id(m));
        op.body = body_bytes(m).value_or("");
        settle(ls, d, PN_ACCEPTED);
        auto& id = identities_.at(ls.identity);
        id.twin_ops.push_back(std::move(op));
        if (id.twin_ops.size() == 1) run_twin_op(ls.identity);
    }

    void run_twin_op(const std::string& key) {
        auto it = identities_.find(key);
        if (it == identities_.end() || it->second.twin_ops.empty()) return;
        auto& id = it->second;
        auto op = id.twin_ops.front();
        constexpr std::string_view desired = "/notifications/twin/properties/desired";
        if (op.operation == "PUT" || op.operation == "DELETE") {
            if (op.resource == desired) {
                id.channel->desired = op.operation == "PUT";
                twin_reply(key, op, {200, "", std::nullopt});
            } else {
                twin_reply(key, op, bad_twin_request(op));
            }
            return twin_done(key);
        }
        if (op.operation != "GET" &&
            !(op.operation == "PATCH" && op.resource == "/properties/reported")) {
            twin_reply(key, op, bad_twin_request(op));
            return twin_done(key);
        }
        svc_.blocking.post([self = shared_from_this(), key, op, who = id.principal] {
            auto answer = op.operation == "GET"
                              ? twin::answer_get(self->svc_.twins, who.device_id, who.module_id)
                              : twin::answer_reported_patch(self->svc_.twins, who.device_id,
                                                            who.module_id, op.body);
            asio::post(self->ex_, [self, key, op, answer = std::move(answer)] {
                if (self->closed_) return;
                self->twin_reply(key, op, answer);
                self->twin_done(key);
                self->process();
            });
        });
    }

    static twin::device_answer bad_twin_request(const identity_state::twin_op& op) {
        boost::json::object body{{"errorCode", 400027},
                                 {"message", "Unsupported twin operation '" + op.operation +
                                                 "' on '" + op.resource + "'."}};
        return {400, boost::json::serialize(body), std::nullopt};
    }

    void twin_done(const std::string& key) {
        auto it = identities_.find(key);
        if (it == identities_.end()) return;
        if (!it->second.twin_ops.empty()) it->second.twin_ops.pop_front();
        if (!it->second.twin_ops.empty()) run_twin_op(key);
    }

    void twin_reply(const std::string& key, const identity_state::twin_op& op,
                    const twin::device_answer& answer) {
        auto* ls = link_of(key, role::twin_out);
        if (!ls) return;
        auto* m = scratch_.get();
        pn_message_clear(m);
        if (op.correlation.type != PN_NULL) pn_message_set_correlation_id(m, op.correlation.atom());
        auto* ann = pn_message_annotations(m);
        put_int_property(ann, "status", answer.status, true);
        if (answer.version)
            put_long_property(ann, "version", static_cast<std::int64_t>(*answer.version), true);
        set_data_body(m, answer.body);
        send(*ls, m);
    }

    // --- methods --------------------------------------------------------------------------------
    void on_method_response(link_state& ls, pn_delivery_t* d, pn_message_t* m) {
        auto rid = uuid_text_to_rid(id_text(pn_message_get_correlation_id(m)));
        auto status_text = application_property(m, "IoThub-status").value_or("");
        int status = 0;
        auto [p, ec] =
            std::from_chars(status_text.data(), status_text.data() + status_text.size(), status);
        auto body = body_bytes(m).value_or("");
        if (ec != std::errc{} || rid.empty()) {
            reject(d, "com.microsoft:argument-error",
                   "A method response needs a correlation-id and an integer IoThub-status.");
            if (ls.unsettled) --ls.unsettled;
            top_up(ls);
            return;
        }
        if (!svc_.methods.respond(ls.device_id, ls.module_id, rid, status, body))
            spdlog::debug("{} {}: method response for unknown request {}", transport_->kind(),
                          transport_->peer(), rid);
        settle(ls, d, PN_ACCEPTED);
    }

    // --- Event Hubs-compatible endpoint --------------------------------------------------------
    // Checks a partition receiver's address, consumer group, filter and epoch; the refusal's
    // condition and description when it cannot attach.
    std::optional<std::pair<std::string, std::string>> open_partition(link_state& ls,
                                                                      const node_address& a) {
        if (!iequals(a.entity, svc_.event_hub))
            return std::pair{std::string("amqp:not-found"),
                             "The event hub is '" + svc_.event_hub + "', not '" + a.entity + "'."};
        int partition = -1;
        auto [p, ec] =
            std::from_chars(a.partition.data(), a.partition.data() + a.partition.size(), partition);
        if (ec != std::errc{} || p != a.partition.data() + a.partition.size() || partition < 0 ||
            partition >= svc_.events.partition_count())
            return std::pair{std::string("amqp:not-found"),
                             "Partition '" + a.partition + "' does not exist; there are " +
                                 std::to_string(svc_.events.partition_count()) + "."};
        auto group = to_lower(a.consumer_group);
        if (group != "$default") {
            auto found = svc_.kv.get("cg/" + group);
            if (!found || !*found)
                return std::pair{std::string("amqp:not-found"),
                                 "Consumer group '" + a.consumer_group + "' does not exist."};
        }
        auto selector = selector_of(pn_terminus_filter(pn_link_remote_source(ls.link)));
        if (!selector)
            return std::pair{std::string(condition_for(selector.error().code())),
                             selector.error().message()};
        ls.partition = partition;
        // Where a receiver starts is fixed when it attaches, not when it first has credit: a
        // receiver "from the end" must still get what arrives before it grants credit.
        ls.next_sequence =
            svc_.events.resolve(partition, selector->value_or(storage::read_position::latest()));

        // Exclusive (epoch) receivers, per consumer group and partition, hub-wide.
        std::optional<std::int64_t> epoch;
        if (auto* props = pn_link_remote_properties(ls.link)) {
            pn_data_rewind(props);
            if (pn_data_next(props) && pn_data_type(props) == PN_MAP) {
                pn_data_enter(props);
                while (pn_data_next(props)) {
                    bool is_epoch = false;
                    if (pn_data_type(props) == PN_SYMBOL) {
                        auto b = pn_data_get_symbol(props);
                        is_epoch = std::string_view(b.start, b.size) == "com.microsoft:epoch";
                    }
                    if (!pn_data_next(props)) break;
                    if (is_epoch && pn_data_type(props) == PN_LONG) epoch = pn_data_get_long(props);
                }
                pn_data_exit(props);
            }
        }
        auto key = group + "/" + std::to_string(partition);
        std::shared_ptr<connection> displaced;
        std::uint64_t displaced_link = 0;
        {
            std::lock_guard lock(srv_->mutex);
            auto it = srv_->epochs.find(key);
            bool held = it != srv_->epochs.end() && !it->second.conn.expired();
            if (held && (!epoch || *epoch < it->second.epoch))
                return std::pair{std::string("amqp:link:stolen"),
                                 "A receiver with epoch " + std::to_string(it->second.epoch) +
                                     " owns partition " + std::to_string(partition) +
                                     " of consumer group '" + a.consumer_group + "'."};
            if (epoch) {
                if (held) {
                    displaced = it->second.conn.lock();
                    displaced_link = it->second.link_id;
                }
                srv_->epochs[key] = {*epoch, weak_from_this(), ls.id};
                ls.epoch_key = key;
            }
        }
        if (displaced) {
            auto reason = "A receiver with a higher epoch (" + std::to_string(*epoch) +
                          ") took over partition " + std::to_string(partition) + ".";
            asio::post(displaced->ex_, [displaced, displaced_link, reason] {
                displaced->close_link(displaced_link, "amqp:link:stolen", reason);
            });
        }
        return std::nullopt;
    }

    void close_link(std::uint64_t link_id, std::string_view condition, std::string_view why) {
        auto it = by_id_.find(link_id);
        if (it == by_id_.end() || closed_) return;
        auto* l = it->second->link;
        set_condition(pn_link_condition(l), condition, why);
        forget_link(l);
        pn_link_close(l);
        process();
    }

    void close_partition(link_state& ls) {
        if (ls.watch) svc_.events.unwatch(ls.watch);
        ls.watch = 0;
        if (ls.epoch_key.empty()) return;
        std::lock_guard lock(srv_->mutex);
        auto it = srv_->epochs.find(ls.epoch_key);
        if (it != srv_->epochs.end() && it->second.link_id == ls.id &&
            it->second.conn.lock().get() == this)
            srv_->epochs.erase(it);
    }

    // Reads as many events as the receiver has credit for (off the shard), sends them, and when
    // it has caught up waits for the partition to grow.
    void pump_events(link_state& ls) {
        if (ls.reading || closed_) return;
        const int credit = pn_link_credit(ls.link);
        if (credit <= 0) return;
        ls.reading = true;
        const auto max = static_cast<std::size_t>(std::min(credit, 256));
        off_shard(
            ls.id,
            // A reader behind retention gets the oldest events still kept: read() clamps.
            [&events = svc_.events, partition = ls.partition, from = ls.next_sequence, max]() {
                return events.read(partition, from, max);
            },
            [this, max](link_state& ls, result<std::vector<storage::stored_event>> r) {
                ls.reading = false;
                if (!r) {
                    spdlog::error("{} {}: reading partition {} failed: {}", transport_->kind(),
                                  transport_->peer(), ls.partition, r.error().message());
                    return;
                }
                for (const auto& e : *r) {
                    fill_event(scratch_.get(), e);
                    send_now(ls, scratch_.get(), {});
                    ls.next_sequence = e.sequence_number + 1;
                }
                if (r->size() == max) return pump_events(ls);
                if (ls.watch) svc_.events.unwatch(ls.watch);
                ls.watch = svc_.events.watch(ls.partition, ls.next_sequence,
                                             [weak = weak_from_this(), ex = ex_, id = ls.id] {
                                                 asio::post(ex, [weak, id] {
                                                     auto self = weak.lock();
                                                     if (!self || self->closed_) return;
                                                     auto it = self->by_id_.find(id);
                                                     if (it == self->by_id_.end()) return;
                                                     it->second->watch = 0;
                                                     self->pump_events(*it->second);
                                                     self->process();
                                                 });
                                             });
            });
    }

    // `$management` READ for the event hub or one partition (protocol.md 8).
    void on_management_request(link_state& ls, pn_delivery_t* d, pn_message_t* m) {
        auto operation = application_property(m, "operation").value_or("");
        auto type = application_property(m, "type").value_or("");
        auto name = application_property(m, "name").value_or("");
        auto partition_text = application_property(m, "partition").value_or("");
        auto security_token = application_property(m, "security_token");
        auto id = saved_id::of(pn_message_get_id(m));
        const char* reply_to_c = pn_message_get_reply_to(m);
        std::string reply_to(reply_to_c ? reply_to_c : "");
        settle(ls, d, PN_ACCEPTED);

        int status = 200;
        std::string description = "OK";
        auto* out = scratch_.get();
        pn_message_clear(out);
        bool allowed = service_grant() != nullptr;
        if (!allowed && security_token) {
            auto g = authorize_event_hubs_token(*security_token, svc_.policies, svc_.hosts,
                                                svc_.event_hub, iothub::now());
            allowed = g.has_value();
            if (!g) description = g.error().message();
        }
        if (!allowed) {
            status = 401;
            if (description == "OK") description = "Put a token of a policy with ServiceConnect.";
        } else if (operation != "READ") {
            status = 400;
            description = "Unsupported operation '" + operation + "'.";
        } else if (!iequals(name, svc_.event_hub)) {
            status = 404;
            description = "The event hub is '" + svc_.event_hub + "'.";
        } else if (type == "com.microsoft:eventhub") {
            fill_eventhub_info(out, svc_.event_hub, svc_.created, svc_.events.partition_count());
        } else if (type == "com.microsoft:partition") {
            int p = -1;
            auto [end, ec] = std::from_chars(partition_text.data(),
                                             partition_text.data() + partition_text.size(), p);
            if (ec != std::errc{} || p < 0 || p >= svc_.events.partition_count()) {
                status = 404;
                description = "Partition '" + partition_text + "' does not exist.";
            } else {
                fill_partition_info(out, svc_.event_hub, p, svc_.events.info(p));
            }
        } else {
            status = 400;
            description = "Unsupported type '" + type + "'.";
        }
        if (status != 200) pn_message_clear(out);
        if (id.type != PN_NULL) pn_message_set_correlation_id(out, id.atom());
        auto* props = pn_message_properties(out);
        put_int_property(props, "status-code", status);
        put_string_property(props, "status-description", description);
        // Answer on the link the client named in reply-to (its receiver's name or target), else
        // on any $management receiver: Debian's Python client sends no reply-to.
        link_state* target = nullptr;
        for (auto& [l, o] : links_) {
            if (o->what != role::management_out) continue;
            if (!target) target = o.get();
            if (reply_to == pn_link_name(l) ||
                reply_to == terminus_address(pn_link_remote_target(l))) {
                target = o.get();
                break;
            }
        }
        if (target) send(*target, out);
    }

    std::shared_ptr<server::impl> srv_;
    services& svc_;
    std::unique_ptr<transport> transport_;
    asio::any_io_executor ex_;
    asio::steady_timer timer_;
    std::chrono::steady_clock::time_point tick_at_{};
    pn_connection_driver_t driver_;
    detail::sasl_outcome sasl_;
    detail::performative_padder padder_;
    detail::transfer_formats formats_;
    message_ptr scratch_;
    pn_rwbytes_t encode_buffer_{0, nullptr};
    std::string out_;
    bool in_process_ = false;
    bool again_ = false;
    bool writing_ = false;
    bool ending_ = false;
    bool closed_ = false;
    std::uint64_t next_link_id_ = 1;
    std::uint64_t next_tag_ = 1;
    std::uint64_t feedback_watch_ = 0;
    std::uint64_t file_watch_ = 0;
    std::unordered_map<pn_link_t*, std::unique_ptr<link_state>> links_;
    std::unordered_map<std::uint64_t, link_state*> by_id_;
    std::map<std::string, identity_state> identities_;
    std::map<std::string, grant> grants_;
};

void identity_channel::send_desired_update(std::string patch, std::uint64_t version) {
    asio::post(ex_, [c = conn_, key = key_, patch = std::move(patch), version] {
        if (auto self = c.lock()) self->send_desired(key, patch, version);
    });
}

void identity_channel::send_method_request(std::string name, std::string request_id,
                                           std::string payload) {
    asio::post(ex_, [c = conn_, key = key_, name = std::move(name), rid = std::move(request_id),
                     payload = std::move(payload)] {
        if (auto self = c.lock()) self->send_method(key, name, rid, payload);
    });
}

void identity_channel::c2d_available() {
    asio::post(ex_, [c = conn_, key = key_] {
        if (auto self = c.lock()) self->c2d_available(key);
    });
}

}  // namespace

void server::impl::start(std::unique_ptr<transport> t, asio::any_io_executor ex) {
    auto c = std::make_shared<connection>(shared_from_this(), std::move(t), ex);
    {
        std::lock_guard lock(mutex);
        if (stopping) return;
        live.emplace(c.get(), c);
    }
    asio::co_spawn(
        ex, [c]() -> asio::awaitable<void> { co_await c->run(); }, asio::detached);
}

server::server(runtime::shard_set& shards, services svc, server_settings settings)
    : impl_(std::make_shared<impl>(shards, svc, settings)) {
    impl_->listeners = std::make_unique<net::stream_listeners>(
        shards, "amqp", settings.tls_handshake_timeout,
        [weak = std::weak_ptr<impl>(impl_)](std::unique_ptr<transport> t,
                                            asio::any_io_executor ex) {
            if (auto self = weak.lock()) self->start(std::move(t), ex);
        });
}

server::~server() {
    begin_stop();
}

result<std::uint16_t> server::listen_tls(const std::string& address, std::uint16_t port,
                                         std::shared_ptr<asio::ssl::context> tls) {
    return impl_->listeners->listen(address, port, std::move(tls));
}

result<std::uint16_t> server::listen_plain(const std::string& address, std::uint16_t port) {
    return impl_->listeners->listen(address, port, nullptr);
}

void server::accept_websocket(beast::ssl_stream<beast::tcp_stream> stream,
                              beast::http::request<beast::http::string_body> request,
                              std::string subprotocol) {
    impl_->listeners->accept_websocket(std::move(stream), std::move(request),
                                       std::move(subprotocol));
}

void server::begin_stop() {
    std::vector<std::shared_ptr<connection>> conns;
    {
        std::lock_guard lock(impl_->mutex);
        if (impl_->stopping) return;
        impl_->stopping = true;
        for (auto& [raw, weak] : impl_->live)
            if (auto c = weak.lock()) conns.push_back(std::move(c));
    }
    impl_->listeners->close();
    for (auto& c : conns) c->kick("the hub is shutting down");
}

void server::revoke(const std::string& device_id, const std::string& module_id) {
    std::vector<std::shared_ptr<connection>> conns;
    {
        std::lock_guard lock(impl_->mutex);
        for (auto& [raw, weak] : impl_->live)
            if (auto c = weak.lock()) conns.push_back(std::move(c));
    }
    for (auto& c : conns) c->revoke(device_id, module_id);
}

std::size_t server::active_connections() const {
    std::lock_guard lock(impl_->mutex);
    return impl_->live.size();
}

}  // namespace iothub::amqp
