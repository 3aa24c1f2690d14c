#include "amqp/detail/connection.hpp"

#include <proton/connection.h>
#include <proton/disposition.h>
#include <proton/event.h>
#include <proton/sasl_plugin.h>
#include <proton/session.h>
#include <proton/transport.h>
#include <spdlog/spdlog.h>

#include <cstring>

namespace iothub::amqp::detail {
namespace asio = boost::asio;

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
        case errc::service_unavailable:
            return "com.microsoft:server-busy";
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

saved_id saved_id::of(pn_atom_t a) {
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

pn_atom_t saved_id::atom() const {
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

// --- lifecycle ----------------------------------------------------------------------------------

connection::connection(std::shared_ptr<server_state> srv, net::connection_io& io)
    : srv_(std::move(srv)),
      io_(io),
      budget_(std::make_shared<session::telemetry_budget>(srv_->settings.max_unstored_bytes)) {
    std::memset(&driver_, 0, sizeof driver_);
    budget_->on_freed = [h = io.handle()] {
        if (auto c = h.lock()) c->wake();
    };
    cbs_ = make_cbs_links(*this);
    devices_ = make_device_links(*this);
    service_ = make_service_links(*this);
    event_hubs_ = make_event_hub_links(*this);
    event_hub_sends_ = make_event_hub_send_links(*this);
    dps_ = make_dps_links(*this);
}

connection::~connection() {
    // Families first: they may still look at links.
    cbs_.reset();
    devices_.reset();
    service_.reset();
    event_hubs_.reset();
    event_hub_sends_.reset();
    dps_.reset();
    if (driver_.transport || driver_.connection) pn_connection_driver_destroy(&driver_);
}

std::string connection::describe() const {
    return std::string(io_.stream().kind()) + " " + io_.stream().peer();
}

void connection::start() {
    if (!setup()) {
        spdlog::error("{}: cannot set up the AMQP driver", describe());
        setup_failed_ = true;
        return;
    }
    process();
}

bool connection::setup() {
    pn_transport_t* t = pn_transport();
    pn_connection_t* c = pn_connection();
    if (!t || !c) return false;
    pn_transport_set_server(t);
    sasl_.offer_external = io_.stream().client_certificate().has_value();
    // SASL PLAIN carries a SAS token as the password; it is checked off the network thread and
    // the outcome sent when the answer comes (check_plain).
    sasl_.defer_plain = true;
    install_sasl(t, sasl_);
    pn_transport_set_max_frame(t, srv_->settings.max_frame_size);
    pn_transport_set_channel_max(t, 0x7fff);
    pn_transport_set_idle_timeout(
        t, static_cast<pn_millis_t>(srv_->settings.idle_timeout.count() * 1000));
    if (pn_connection_driver_init(&driver_, c, t) != 0) return false;
    pn_connection_set_container(c, srv_->svc.hub_name.c_str());
    return pn_connection_driver_bind(&driver_) == 0;
}

void connection::received(std::string_view bytes) {
    while (!bytes.empty() && !closed_ && !setup_failed_) {
        auto rb = pn_connection_driver_read_buffer(&driver_);
        if (rb.size == 0) break;
        const auto k = std::min(rb.size, bytes.size());
        std::memcpy(rb.start, bytes.data(), k);
        formats_.feed(bytes.substr(0, k));
        pn_connection_driver_read_done(&driver_, k);
        bytes.remove_prefix(k);
        process();
    }
    check_plain();
}

void connection::stream_ended(const std::string& reason) {
    if (stream_gone_) return;
    stream_gone_ = true;
    spdlog::debug("{}: {}", describe(), reason);
    if (setup_failed_) return;
    pn_connection_driver_read_close(&driver_);
    pn_connection_driver_write_close(&driver_);
    process();
}

void connection::stop(const std::string& reason) {
    if (setup_failed_ || stream_gone_) return;
    set_condition(pn_connection_condition(driver_.connection), "amqp:connection:forced", reason);
    pn_connection_close(driver_.connection);
    process();
}

void connection::take_output(std::string& out) {
    if (setup_failed_) return;
    for (;;) {
        auto b = pn_connection_driver_write_buffer(&driver_);
        if (b.size == 0) break;
        padder_.feed(std::string_view(b.start, b.size), out);
        pn_connection_driver_write_done(&driver_, b.size);
    }
}

bool connection::wants_read() const {
    return !finished() &&
           !pn_connection_driver_read_closed(const_cast<pn_connection_driver_t*>(&driver_)) &&
           !budget_->spent() && !sasl_.checking;
}

bool connection::finished() const {
    auto* d = const_cast<pn_connection_driver_t*>(&driver_);
    if (setup_failed_ || stream_gone_ || pn_connection_driver_finished(d)) return true;
    // The peer closed the connection and the hub answered: nothing more will come or go.
    return pn_connection_driver_read_closed(d) &&
           (pn_connection_state(d->connection) & PN_LOCAL_CLOSED) &&
           pn_connection_driver_write_buffer(d).size == 0;
}

net::steady::time_point connection::deadline() const {
    auto due = next_tick_;
    if (auto e = earliest_expiry()) {
        auto until = *e - iothub::now() + std::chrono::milliseconds(1);
        due = std::min(
            due, net::steady::now() + std::chrono::duration_cast<net::steady::duration>(until));
    }
    return due;
}

void connection::on_deadline() {
    if (setup_failed_ || closed_) return;
    expire_grants();
    process();
}

void connection::closed() {
    if (closed_) return;
    closed_ = true;
    for (auto* f : {cbs_.get(), devices_.get(), service_.get(), event_hubs_.get(),
                    event_hub_sends_.get(), dps_.get()})
        f->closing();
    links_.clear();
    by_id_.clear();
    spdlog::debug("{}: closed", describe());
}

void connection::wake() {
    if (closed_) return;
    process();
    io_.wake();
}

void connection::defer(std::function<void()> fn) {
    asio::post(io_.executor(), [weak = io_.handle(), this, fn = std::move(fn)] {
        auto alive = weak.lock();
        if (!alive || closed_) return;
        fn();
        wake();
    });
}

// --- proton events ------------------------------------------------------------------------------

void connection::process() {
    if (setup_failed_ || closed_) return;
    if (in_process_) {
        again_ = true;
        return;
    }
    in_process_ = true;
    do {
        again_ = false;
        while (auto* e = pn_connection_driver_next_event(&driver_)) handle(e);
    } while (again_);
    in_process_ = false;
    return_scratch();
    // Proton's own timers (idle timeout, heartbeats).
    const auto now_ms = static_cast<pn_timestamp_t>(
        std::chrono::duration_cast<std::chrono::milliseconds>(net::steady::now().time_since_epoch())
            .count());
    const auto next = pn_transport_tick(driver_.transport, now_ms);
    next_tick_ = next ? net::steady::time_point(std::chrono::milliseconds(next))
                      : net::steady::time_point::max();
}

namespace {
// The messages a shard's connections borrow (one each while processing), kept for the next.
std::vector<message_ptr>& scratch_pool() {
    thread_local std::vector<message_ptr> pool;
    return pool;
}
}  // namespace

pn_message_t* connection::scratch() {
    if (!scratch_) {
        auto& pool = scratch_pool();
        if (pool.empty()) {
            scratch_ = make_message();
        } else {
            scratch_ = std::move(pool.back());
            pool.pop_back();
        }
    }
    return scratch_.get();
}

void connection::return_scratch() {
    if (!scratch_) return;
    pn_message_clear(scratch_.get());
    auto& pool = scratch_pool();
    if (pool.size() < 4)
        pool.push_back(std::move(scratch_));
    else
        scratch_.reset();
}

void connection::handle(pn_event_t* e) {
    switch (pn_event_type(e)) {
        case PN_CONNECTION_REMOTE_OPEN:
            pn_connection_open(driver_.connection);
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
            spdlog::debug("{}: {}: {}", describe(),
                          pn_condition_get_name(c) ? pn_condition_get_name(c) : "error",
                          pn_condition_get_description(c) ? pn_condition_get_description(c) : "");
            break;
        }
        default:
            break;
    }
}

// SASL PLAIN: the password is a SAS token, authorized like a put-token, off the network thread;
// nothing else is read until the outcome is known (the client waits for it anyway). A
// provisioning client's username is `{idScope}/registrations/{id}`: the provisioning service
// checks its SAS instead, per link.
void connection::check_plain() {
    if (!sasl_.plain_pending || sasl_.checking || setup_failed_) return;
    sasl_.checking = true;
    sasl_.plain_pending = false;
    if (auto a = classify_address(sasl_.username); a.what == node_address::kind::dps_registration)
        return accept_provisioning_login(std::move(a));
    put_token_request r{"put-token", "servicebus.windows.net:sastoken", sasl_.username,
                        sasl_.password};
    srv_->sessions.blocking.run(
        [r, &svc = srv_->svc] {
            return authorize_put_token(r, svc.authenticator, svc.policies, svc.hosts, svc.event_hub,
                                       iothub::now());
        },
        io_.executor(),
        [weak = io_.handle(), this](result<grant> g) {
            auto alive = weak.lock();
            if (!alive || closed_ || stream_gone_) return;
            sasl_.checking = false;
            if (g) {
                add_grant(std::move(*g));
            } else {
                spdlog::debug("{}: SASL PLAIN refused: {}", describe(), g.error().message());
            }
            finish_plain(driver_.transport, sasl_, static_cast<bool>(g));
            wake();
        });
}

// A provisioning login is taken as it is and checked when a link attaches: refused there, the
// device SDK reports the service's unauthorized-access, where a failed SASL outcome only gives it
// a connection that went away.
void connection::accept_provisioning_login(node_address a) {
    sasl_.checking = false;
    provisioning_ = provisioning_login{a.id_scope, a.registration_id, sasl_.password};
    finish_plain(driver_.transport, sasl_, true);
    wake();
}

// --- links --------------------------------------------------------------------------------------

link_family* connection::family_of(role r) {
    switch (r) {
        case role::cbs_in:
        case role::cbs_out:
            return cbs_.get();
        case role::d2c:
        case role::c2d_out:
        case role::methods_in:
        case role::methods_out:
        case role::twin_in:
        case role::twin_out:
            return devices_.get();
        case role::service_c2d:
        case role::feedback_out:
        case role::file_notifications_out:
            return service_.get();
        case role::management_in:
        case role::management_out:
        case role::event_hub_partition:
            return event_hubs_.get();
        case role::event_hub_send:
            return event_hub_sends_.get();
        case role::dps_requests:
        case role::dps_responses:
            return dps_.get();
    }
    return nullptr;
}

link_state* connection::link(std::uint64_t id) {
    auto it = by_id_.find(id);
    return it == by_id_.end() ? nullptr : it->second;
}

link_state* connection::link_of(const std::string& identity, role r) {
    for (auto& [l, ls] : links_)
        if (ls->what == r && ls->identity == identity && pn_link_state(l) & PN_LOCAL_ACTIVE)
            return ls.get();
    return nullptr;
}

void connection::refuse(pn_link_t* l, std::string_view condition, std::string_view description) {
    spdlog::debug("{}: link '{}' refused: {}", describe(), pn_link_name(l), description);
    set_condition(pn_link_condition(l), condition, description);
    pn_link_open(l);
    pn_link_close(l);
}

void connection::on_attach(pn_link_t* l) {
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
        case k::eh_entity:
            if (!hub_sends) r = role::event_hub_send;
            break;
        case k::dps_registration:
            r = hub_sends ? role::dps_responses : role::dps_requests;
            break;
        case k::unknown:
            break;
    }
    if (!r) {
        // A receiver from a bare name asks for no node the hub has.
        if (a.what == k::unknown || a.what == k::eh_entity)
            return refuse(l, "amqp:not-found", "Unknown address '" + address + "'.");
        return refuse(l, "amqp:not-allowed",
                      std::string("The hub does not ") + (hub_sends ? "send from" : "receive on") +
                          " '" + address + "'.");
    }
    auto owned = std::make_unique<link_state>();
    auto& ls = *owned;
    ls.id = next_link_id_++;
    ls.link = l;
    ls.what = *r;
    if (a.is_device()) {
        ls.device_id = a.device_id;
        ls.module_id = a.module_id;
        ls.identity = a.module_id.empty() ? a.device_id : a.device_id + "/" + a.module_id;
    }
    by_id_[ls.id] = &ls;
    links_[l] = std::move(owned);
    auto decision = family_of(ls.what)->attach(ls, a);
    finish_attach(ls.id, decision);
}

void connection::finish_attach(std::uint64_t link_id, const attach_decision& d) {
    auto* ls = link(link_id);
    if (!ls || closed_) return;
    switch (d.what) {
        case attach_decision::kind::later:
            return;
        case attach_decision::kind::refuse: {
            auto* l = ls->link;
            forget_link(l);
            return refuse(l, d.condition, d.description);
        }
        case attach_decision::kind::open:
            return open_link(*ls);
    }
}

void connection::open_link(link_state& ls) {
    auto* l = ls.link;
    pn_terminus_copy(pn_link_source(l), pn_link_remote_source(l));
    pn_terminus_copy(pn_link_target(l), pn_link_remote_target(l));
    pn_link_set_snd_settle_mode(l, pn_link_remote_snd_settle_mode(l));
    pn_link_set_rcv_settle_mode(l, pn_link_remote_rcv_settle_mode(l));
    const bool hub_sends = pn_link_is_sender(l);
    if (ls.what == role::event_hub_send) {
        pn_link_set_max_message_size(l, event_hub_send_max_bytes);
    } else if (!hub_sends) {
        const std::uint64_t limit = ls.what == role::service_c2d
                                        ? srv_->svc.c2d.limits().max_message_bytes
                                        : srv_->sessions.telemetry.max_message_size();
        pn_link_set_max_message_size(l, limit + 16 * 1024);  // properties and framing
    }
    pn_link_open(l);
    if (!hub_sends) top_up(ls);
    family_of(ls.what)->opened(ls);
}

void connection::forget_link(pn_link_t* l) {
    auto it = links_.find(l);
    if (it == links_.end()) return;
    auto owned = std::move(it->second);
    links_.erase(it);
    by_id_.erase(owned->id);
    family_of(owned->what)->detached(*owned);
}

void connection::close_link(std::uint64_t link_id, std::string_view condition,
                            std::string_view why) {
    auto* ls = link(link_id);
    if (!ls || closed_) return;
    auto* l = ls->link;
    set_condition(pn_link_condition(l), condition, why);
    forget_link(l);
    pn_link_close(l);
}

// --- flow ---------------------------------------------------------------------------------------

// Keeps a receiver's credit plus its unanswered deliveries at the configured window, so a client
// never has more than that many messages waiting on the core.
void connection::top_up(link_state& ls) {
    const auto window = static_cast<int>(srv_->settings.link_credit);
    int want = window - pn_link_credit(ls.link) - static_cast<int>(ls.unsettled);
    if (want > window / 2 || (want > 0 && pn_link_credit(ls.link) == 0))
        pn_link_flow(ls.link, want);
}

void connection::on_flow(pn_link_t* l) {
    auto it = links_.find(l);
    if (it == links_.end()) return;
    auto& ls = *it->second;
    drain_outbox(ls);
    family_of(ls.what)->flow(ls);
}

void connection::send(link_state& ls, pn_message_t* m) {
    if (pn_link_credit(ls.link) > 0 && ls.outbox.empty()) {
        send_now(ls, m, {});
        return;
    }
    pn_rwbytes_t buf{0, nullptr};
    auto n = pn_message_encode2(m, &buf);
    if (n >= 0) ls.outbox.emplace_back(buf.start, static_cast<std::size_t>(n));
    std::free(buf.start);
}

pn_delivery_t* connection::send_now(link_state& ls, pn_message_t* m, std::string_view tag) {
    auto t = tag.empty() ? next_tag() : std::string(tag);
    auto* d = pn_delivery(ls.link, pn_dtag(t.data(), t.size()));
    // Encoding is done within the call: one buffer per thread serves its connections.
    struct encode_buffer {
        pn_rwbytes_t bytes{0, nullptr};
        ~encode_buffer() { std::free(bytes.start); }
    };
    thread_local encode_buffer buffer;
    if (pn_message_send(m, ls.link, &buffer.bytes) < 0)
        spdlog::warn("{}: cannot encode a message: {}", describe(),
                     pn_error_text(pn_message_error(m)));
    if (pn_link_snd_settle_mode(ls.link) == PN_SND_SETTLED) pn_delivery_settle(d);
    return d;
}

void connection::drain_outbox(link_state& ls) {
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

std::string connection::next_tag() {
    auto n = next_tag_++;
    return std::string(reinterpret_cast<const char*>(&n), sizeof n);
}

// --- deliveries ---------------------------------------------------------------------------------

namespace {
void reject_delivery(pn_delivery_t* d, std::string_view condition, std::string_view description) {
    set_condition(pn_disposition_condition(pn_delivery_local(d)), condition, description);
    pn_delivery_update(d, PN_REJECTED);
    pn_delivery_settle(d);
}
}  // namespace

void connection::on_delivery(pn_delivery_t* d) {
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
    // Proton counts credit down on every transfer but does not refuse one beyond it; a client
    // that sends without credit is cut off as the spec's error says.
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
    // Only device telemetry and Event Hubs producers send batches; a format the hub does not know
    // is never read as if it were a plain message.
    const auto format = forget_format(d);
    if (format == batched_message_format &&
        (ls.what == role::d2c || ls.what == role::event_hub_send)) {
        ++ls.unsettled;
        return family_of(ls.what)->batch(ls, d, bytes);
    }
    if (format != standard_message_format) {
        reject_delivery(d, "amqp:not-implemented",
                        "Message format " + std::to_string(format) +
                            " is not supported on this link" +
                            (format == batched_message_format
                                 ? "; only device telemetry and event hubs take batched messages."
                                 : "."));
        return top_up(ls);
    }
    auto* m = scratch();
    pn_message_clear(m);
    // Proton asserts (aborts the process) on an empty input instead of failing.
    if (bytes.empty() || pn_message_decode(m, bytes.data(), bytes.size()) != 0) {
        reject_delivery(d, "amqp:decode-error", "The message could not be decoded.");
        return top_up(ls);
    }
    // Proton keeps only a body's last data section; a body of several is all of them.
    if (auto joined = joined_data_body(bytes)) set_data_body(m, *joined);
    ++ls.unsettled;
    family_of(ls.what)->message(ls, d, m);
}

std::uint32_t connection::forget_format(pn_delivery_t* d) {
    const auto tag = pn_delivery_tag(d);
    return formats_.take(pn_link_name(pn_delivery_link(d)), std::string_view(tag.start, tag.size));
}

// A message over the link's size limit is read and dropped as it arrives, then rejected with
// amqp:link:message-size-exceeded: the link stays up, as it does on Azure (the SDKs report
// MessageTooLargeError and carry on; a detach makes the service SDK drop its connection). Only a
// sender that keeps going far beyond the limit loses the link.
void connection::discard(link_state& ls, pn_delivery_t* d) {
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
        set_condition(pn_link_condition(l), "amqp:link:message-size-exceeded",
                      "The message exceeds the maximum size of " +
                          std::to_string(pn_link_max_message_size(l)) + " bytes.");
        pn_delivery_settle(d);
        forget_link(l);
        pn_link_close(l);
        return;
    }
    if (pn_delivery_partial(d)) return;
    forget_format(d);
    pn_link_advance(l);
    ls.discarding = nullptr;
    reject_delivery(d, "amqp:link:message-size-exceeded",
                    "The message is " + std::to_string(ls.discarded) +
                        " bytes encoded; the maximum is " +
                        std::to_string(pn_link_max_message_size(l)) + ".");
    top_up(ls);
}

void connection::on_outcome(link_state& ls, pn_delivery_t* d) {
    if (!pn_delivery_updated(d)) return;
    const auto state = pn_delivery_remote_state(d);
    const bool final_state = state == PN_ACCEPTED || state == PN_REJECTED || state == PN_RELEASED ||
                             state == PN_MODIFIED;
    if (!final_state && !pn_delivery_settled(d)) return;
    family_of(ls.what)->outcome(ls, d, state);
    pn_delivery_settle(d);
}

void connection::settle(link_state& ls, pn_delivery_t* d, std::uint64_t outcome) {
    if (!pn_delivery_settled(d)) pn_delivery_update(d, outcome);
    pn_delivery_settle(d);
    if (ls.unsettled) --ls.unsettled;
    top_up(ls);
}

void connection::settle_error(link_state& ls, pn_delivery_t* d, const error& e) {
    reject(ls, d, condition_for(e.code()), e.message());
}

void connection::reject(link_state& ls, pn_delivery_t* d, std::string_view condition,
                        std::string_view description) {
    reject_delivery(d, condition, description);
    if (ls.unsettled) --ls.unsettled;
    top_up(ls);
}

std::optional<std::vector<storage::event_record>> connection::decode_batch(
    link_state& ls, pn_delivery_t* d, std::string_view bytes, std::string_view noun,
    const std::function<result<storage::event_record>(pn_message_t*)>& convert) {
    auto sections = data_sections(bytes);
    if (!sections) {
        reject(ls, d, "amqp:decode-error",
               "The batched message could not be read: " + sections.error().message());
        return std::nullopt;
    }
    std::vector<storage::event_record> events;
    events.reserve(sections->size());
    auto* m = scratch();
    for (std::size_t i = 0; i < sections->size(); ++i) {
        const auto inner = (*sections)[i];
        const auto which = std::string(noun) + " " + std::to_string(i + 1) + " of " +
                           std::to_string(sections->size()) + " in the batch";
        pn_message_clear(m);
        // Checked before proton sees it: proton asserts (aborts the process) on an empty input
        // and reads some truncated sections without complaint.
        if (!well_formed_message(inner) || pn_message_decode(m, inner.data(), inner.size()) != 0) {
            reject(ls, d, "amqp:decode-error",
                   which + " could not be decoded; nothing of the batch was stored.");
            return std::nullopt;
        }
        auto e = convert(m);
        if (!e) {
            settle_error(ls, d, error(e.error().code(), which + ": " + e.error().message()));
            return std::nullopt;
        }
        events.push_back(std::move(*e));
    }
    return events;
}

// --- authorization ------------------------------------------------------------------------------

void connection::add_grant(grant g) {
    auto key = g.key();
    grants_[key] = std::move(g);
}

const grant* connection::grant_for(const std::string& key) const {
    auto it = grants_.find(key);
    return it == grants_.end() ? nullptr : &it->second;
}

const grant* connection::service_grant() const {
    for (const auto& [key, g] : grants_)
        if (!g.device && g.rights.has(auth::right::service_connect)) return &g;
    return nullptr;
}

const grant* connection::event_hub_grant(std::string_view entity) const {
    for (const auto& [key, g] : grants_)
        if (g.allows_sending_to(entity)) return &g;
    return nullptr;
}

void connection::drop_grant(const std::string& key) {
    grants_.erase(key);
}

void connection::revoke(const std::string& device_id, const std::string& module_id) {
    const auto key = module_id.empty() ? device_id : device_id + "/" + module_id;
    std::erase_if(grants_, [&](const auto& g) {
        return g.first == key || (module_id.empty() && g.first.rfind(key + "/", 0) == 0);
    });
}

std::optional<sys_time> connection::earliest_expiry() const {
    std::optional<sys_time> e;
    for (const auto& [key, g] : grants_)
        if (g.expires && (!e || *g.expires < *e)) e = g.expires;
    return e;
}

// A token that expires without renewal takes back what it authorized.
void connection::expire_grants() {
    const auto t = iothub::now();
    std::vector<std::string> gone;
    for (const auto& [key, g] : grants_)
        if (g.expires && *g.expires <= t) gone.push_back(key);
    for (const auto& key : gone) {
        grants_.erase(key);
        std::vector<std::uint64_t> doomed;
        for (auto& [l, ls] : links_)
            if (ls->grant_key == key) doomed.push_back(ls->id);
        for (auto id : doomed)
            close_link(id, "amqp:unauthorized-access",
                       "The token that authorized this link expired.");
    }
}

}  // namespace iothub::amqp::detail
