#include "session/device_session.hpp"

#include <boost/asio/post.hpp>
#include <boost/json.hpp>
#include <spdlog/spdlog.h>

#include <atomic>

namespace iothub::session {
namespace asio = boost::asio;

// What the core pushes to this identity (desired updates, method calls, "a C2D message is
// waiting"), from any thread: each call posts to the session's executor, where the session
// decides whether the device listens.
class device_session::channel final : public connections::device_channel {
  public:
    channel(std::weak_ptr<device_session> s, asio::any_io_executor ex)
        : session_(std::move(s)), ex_(std::move(ex)) {}

    bool wants_desired_updates() const override { return desired.load(); }
    bool accepts_methods() const override { return methods.load(); }

    void send_desired_update(std::string patch, std::uint64_t version) override {
        asio::post(ex_, [s = session_, patch = std::move(patch), version] {
            auto self = s.lock();
            if (self && self->is_open() && self->channel_->desired.load())
                self->port_->desired_update(patch, version);
        });
    }

    void send_method_request(std::string name, std::string request_id,
                             std::string payload) override {
        asio::post(ex_, [s = session_, name = std::move(name), rid = std::move(request_id),
                         payload = std::move(payload)] {
            auto self = s.lock();
            if (self && self->is_open() && self->channel_->methods.load())
                self->port_->method_request(name, rid, payload);
        });
    }

    void c2d_available() override {
        asio::post(ex_, [s = session_] {
            if (auto self = s.lock()) self->pump_c2d();
        });
    }

    std::atomic<bool> desired{false};
    std::atomic<bool> methods{false};

  private:
    std::weak_ptr<device_session> session_;
    asio::any_io_executor ex_;
};

device_session::device_session(services& svc, asio::any_io_executor ex, device_port& port,
                               std::shared_ptr<telemetry_budget> budget)
    : svc_(svc), ex_(std::move(ex)), port_(&port), budget_(std::move(budget)) {}

device_session::~device_session() {
    if (!closed()) close("the connection ended");
}

// --- opening -----------------------------------------------------------------------------------

namespace {
struct authenticated {
    result<device_auth::device_principal> who;
    std::optional<std::string> record;
};

// Reads (or, for a clean session, removes) the persistent session record. Blocks.
std::optional<std::string> session_record(storage::kv_store& kv, const std::string& key,
                                          bool clean) {
    if (key.empty()) return std::nullopt;
    if (clean) {
        if (auto r = kv.remove(key); !r && r.error().code() != errc::not_found)
            spdlog::warn("session: cannot forget the session record {}: {}", key,
                         r.error().message());
        return std::nullopt;
    }
    auto got = kv.get(key);
    if (!got) {
        spdlog::warn("session: cannot read the session record {}: {}", key, got.error().message());
        return std::nullopt;
    }
    if (!*got) return std::nullopt;
    return std::move((*got)->value);
}
}  // namespace

// Azure counts every device connection (each identity on a gateway's AMQP connection too) against
// the hub's connect rate; a request-scoped HTTPS session is no connection.
std::optional<error> device_session::throttle(const options& o) const {
    if (!o.live || !svc_.connects || svc_.connects->try_acquire()) return std::nullopt;
    if (svc_.connects->report_due(connect_limiter::clock::now()))
        spdlog::info(
            "session: device connects over the hub's rate of {} per second are refused "
            "({} so far)",
            svc_.connects->per_second(), svc_.connects->refused());
    return error(errc::throttled, "The hub's device connect rate (" +
                                      std::to_string(svc_.connects->per_second()) +
                                      " per second) is exceeded; retry later.");
}

void device_session::open(device_auth::device_credentials credentials, options o) {
    if (auto refused = throttle(o)) {
        // From the executor, as authentication would answer: adapters hear nothing inside open().
        asio::post(ex_, [weak = weak_from_this(), e = std::move(*refused)] {
            auto self = weak.lock();
            if (self && !self->closed()) self->fail_open(e);
        });
        return;
    }
    // Copied before `o` moves into the completion: argument order is unspecified.
    auto key = o.record_key;
    const bool clean = o.clean;
    svc_.blocking.run(
        [&svc = svc_, credentials = std::move(credentials), key = std::move(key), clean] {
            authenticated a{svc.authenticator.authenticate(credentials, iothub::now()),
                            std::nullopt};
            if (a.who) a.record = session_record(svc.kv, key, clean);
            return a;
        },
        ex_,
        [weak = weak_from_this(), o = std::move(o)](authenticated a) mutable {
            auto self = weak.lock();
            if (!self || self->closed()) return;
            if (!a.who) return self->fail_open(a.who.error());
            self->opened(std::move(*a.who), std::move(o), std::move(a.record));
        });
}

void device_session::open(device_auth::device_principal who, options o) {
    if (auto refused = throttle(o)) return fail_open(*refused);
    if (o.record_key.empty()) return opened(std::move(who), std::move(o), std::nullopt);
    auto key = o.record_key;
    const bool clean = o.clean;
    svc_.blocking.run(
        [&kv = svc_.kv, key = std::move(key), clean] { return session_record(kv, key, clean); },
        ex_,
        [weak = weak_from_this(), who = std::move(who),
         o = std::move(o)](std::optional<std::string> record) mutable {
            auto self = weak.lock();
            if (!self || self->closed()) return;
            self->opened(std::move(who), std::move(o), std::move(record));
        });
}

void device_session::fail_open(const error& e) {
    auto* port = port_;
    state_ = state::closed;
    port_ = nullptr;
    port->opened(e);
}

void device_session::opened(device_auth::device_principal who, options o,
                            std::optional<std::string> record) {
    principal_ = std::move(who);
    options_ = std::move(o);
    channel_ = std::make_shared<channel>(weak_from_this(), ex_);
    if (options_.live)
        entry_ = svc_.connections.attach(
            principal_->device_id, principal_->module_id,
            [weak = weak_from_this(), ex = ex_](const std::string& reason) {
                asio::post(ex, [weak, reason] {
                    if (auto self = weak.lock()) self->end(reason);
                });
            },
            iothub::now(), channel_);
    if (!options_.model_id.empty())
        svc_.blocking.post([&twins = svc_.twins, who = *principal_, model = options_.model_id] {
            if (auto r = twins.set_model_id(who.device_id, who.module_id, model); !r)
                spdlog::warn("session: cannot record the model id of {}: {}", who.key(),
                             r.error().message());
        });
    state_ = state::open;
    port_->opened(device_port::opening{std::move(record)});
}

std::optional<sys_time> device_session::expiry() const {
    return principal_ ? principal_->expires : std::nullopt;
}

void device_session::renew(std::optional<sys_time> expires) {
    if (principal_) principal_->expires = expires;
}

void device_session::tick(sys_time now) {
    if (!is_open()) return;
    if (auto e = expiry(); e && now >= *e) end("the SAS token expired");
}

// --- the end ------------------------------------------------------------------------------------

void device_session::end(const std::string& reason) {
    if (closed()) return;
    auto* port = port_;
    close(reason);
    if (port) port->ended(reason);
}

void device_session::close(const std::string& reason) {
    if (closed()) return;
    const bool was_open = is_open();
    state_ = state::closed;
    port_ = nullptr;
    if (channel_) {
        channel_->desired = false;
        channel_->methods = false;
    }
    if (entry_) svc_.connections.detach(entry_, iothub::now());
    release_locks();
    twin_queue_.clear();
    if (was_open) spdlog::debug("session: {} closed: {}", principal_->key(), reason);
}

void device_session::release_locks() {
    if (c2d_locks_.empty()) return;
    // Only this session's locks: a newer connection of the same device may hold others already.
    svc_.blocking.post(
        [&c2d = svc_.c2d, device = principal_->device_id, tokens = std::move(c2d_locks_)] {
            const auto t = iothub::now();
            for (const auto& token : tokens)
                if (auto r = c2d.abandon(device, token, t); !r)
                    spdlog::debug("session: C2D lock of {} not abandoned: {}", device,
                                  r.error().message());
        });
    c2d_locks_.clear();
}

void device_session::touch() {
    if (!principal_) return;
    if (entry_)
        entry_->touch(iothub::now());
    else
        svc_.connections.touch(principal_->device_id, principal_->module_id, iothub::now());
}

// --- telemetry ----------------------------------------------------------------------------------

result<void> device_session::admit(storage::event_record message, std::uint64_t ticket) {
    if (!is_open()) return error(errc::server_error, "The session is not open.");
    if (auto ok = svc_.telemetry.check(message); !ok) return ok.error();
    std::vector<storage::event_record> one;
    one.push_back(std::move(message));
    return charge(one, ticket);
}

result<void> device_session::admit_batch(std::vector<storage::event_record> messages,
                                         std::uint64_t ticket) {
    if (!is_open()) return error(errc::server_error, "The session is not open.");
    if (auto ok = svc_.telemetry.check_batch(messages); !ok) return ok.error();
    return charge(messages, ticket);
}

result<void> device_session::charge(std::vector<storage::event_record>& messages,
                                    std::uint64_t ticket) {
    touch();
    std::size_t bytes = 0;
    for (auto& m : messages) {
        bytes += storage::event_size(m);
        admitted_.push_back(std::move(m));
    }
    budget_->charge(bytes);
    admitted_tickets_.push_back({ticket, bytes});
    if (!flush_posted_) {
        // Whatever else this handler admits (the rest of the read) goes in the same append.
        flush_posted_ = true;
        // A strong reference: what was admitted is stored even if the adapter lets go of the
        // session meanwhile (an MQTT will, admitted as the connection closes).
        asio::post(ex_, [self = shared_from_this()] { self->flush_telemetry(); });
    }
    return {};
}

void device_session::flush_telemetry() {
    flush_posted_ = false;
    if (admitted_.empty()) return;
    auto events = std::move(admitted_);
    auto tickets = std::move(admitted_tickets_);
    admitted_.clear();
    admitted_tickets_.clear();
    // Made on the first telemetry, once: a device that only listens never pays for it.
    if (!stamp_) stamp_ = telemetry::telemetry_service::stamp_for(*principal_);
    // Stored even when the session closed meanwhile (an MQTT will goes out at the close); only
    // the port is no longer told.
    svc_.telemetry.ingest(
        *principal_, stamp_, std::move(events),
        [weak = weak_from_this(), ex = ex_, budget = budget_, key = principal_->key(),
         tickets = std::move(tickets)](result<void> r) mutable {
            asio::post(ex, [weak, budget, key = std::move(key), tickets = std::move(tickets),
                            r = std::move(r)] {
                std::size_t bytes = 0;
                for (const auto& t : tickets) bytes += t.bytes;
                budget->release(bytes);
                if (!r)
                    spdlog::error("session: telemetry of {} not stored: {}", key,
                                  r.error().message());
                auto self = weak.lock();
                if (!self || !self->is_open()) return;
                std::vector<std::uint64_t> ids;
                ids.reserve(tickets.size());
                for (const auto& t : tickets) ids.push_back(t.ticket);
                self->port_->telemetry_stored(ids, r);
            });
        });
}

// --- twin ---------------------------------------------------------------------------------------

void device_session::twin(twin_request request) {
    if (!is_open()) return;
    touch();
    twin_queue_.push_back(std::move(request));
    if (!twin_running_) run_twin();
}

void device_session::run_twin() {
    // Requests that need no storage are answered in their turn; the first that does goes to the
    // blocking pool and the rest wait for it.
    while (is_open() && !twin_queue_.empty()) {
        auto& r = twin_queue_.front();
        switch (r.what) {
            case twin_request::verb::subscribe_desired:
            case twin_request::verb::unsubscribe_desired:
                listen_desired(r.what == twin_request::verb::subscribe_desired);
                twin_done(r.ticket, {200, "", std::nullopt});
                continue;
            case twin_request::verb::invalid: {
                boost::json::object body{{"errorCode", 400027}, {"message", r.body}};
                twin_done(r.ticket, {400, boost::json::serialize(body), std::nullopt});
                continue;
            }
            case twin_request::verb::get:
            case twin_request::verb::patch_reported:
                break;
        }
        twin_running_ = true;
        // The answer comes back here; the next request waits for it (arrival order).
        auto answered = [weak = weak_from_this(), ex = ex_,
                         ticket = r.ticket](twin::device_answer answer) {
            asio::post(ex, [weak, ticket, answer = std::move(answer)] {
                auto self = weak.lock();
                if (!self || !self->is_open()) return;
                self->twin_running_ = false;
                self->twin_done(ticket, answer);
                self->run_twin();
            });
        };
        // Reads on the blocking pool; a reported patch then completes when its commit is durable,
        // holding no thread meanwhile.
        svc_.blocking.post([&twins = svc_.twins, who = *principal_, r, answered] {
            if (r.what == twin_request::verb::get)
                return answered(twin::answer_get(twins, who.device_id, who.module_id));
            twin::answer_reported_patch(twins, who.device_id, who.module_id, r.body, r.if_version,
                                        answered);
        });
        return;
    }
}

void device_session::twin_done(std::uint64_t ticket, const twin::device_answer& answer) {
    twin_queue_.pop_front();
    port_->twin_answered(ticket, answer);
}

// --- what the device listens to -----------------------------------------------------------------

void device_session::listen_desired(bool on) {
    if (channel_) channel_->desired = on;
}

void device_session::listen_methods(bool on) {
    if (!channel_) return;
    const bool before = channel_->methods.exchange(on);
    // Calls waiting for this identity to become reachable are delivered now.
    if (on && !before && is_open())
        svc_.methods.device_ready(principal_->device_id, principal_->module_id);
}

void device_session::listen_c2d(bool on) {
    const bool before = c2d_listening_;
    c2d_listening_ = on && principal_ && principal_->module_id.empty();
    // Delivery starts after the reply the adapter is about to write (SUBACK, ATTACH): some
    // clients want that first.
    if (c2d_listening_ && !before)
        asio::post(ex_, [weak = weak_from_this()] {
            if (auto self = weak.lock()) self->pump_c2d();
        });
}

void device_session::pump_c2d() {
    if (!is_open() || !c2d_listening_) return;
    const auto t = iothub::now();
    while (is_open() && port_->c2d_room()) {
        auto d = svc_.c2d.receive(principal_->device_id, t);
        if (!d) return;
        c2d_locks_.insert(d->lock_token);
        port_->c2d_deliver(*d);
    }
}

void device_session::settle_c2d(const std::string& lock_token, c2d_outcome how,
                                std::function<void(result<void>)> done) {
    if (!principal_) return;
    c2d_locks_.erase(lock_token);
    touch();
    // One at a time, in the device's order, so its feedback records keep that order too. The
    // queue outlives the session: what the device settled is applied even if it goes.
    if (!settlements_) settlements_ = std::make_shared<settlement_queue>();
    settlements_->pending.push_back({lock_token, how, std::move(done)});
    if (settlements_->pending.size() == 1)
        settle_next(settlements_, svc_, ex_, principal_->device_id);
}

void device_session::settle_next(std::shared_ptr<settlement_queue> q, services& svc,
                                 asio::any_io_executor ex, std::string device) {
    if (q->pending.empty()) return;
    const auto& s = q->pending.front();
    svc.blocking.run(
        [&c2d = svc.c2d, device, lock_token = s.lock_token, how = s.how]() -> result<void> {
            const auto t = iothub::now();
            switch (how) {
                case c2d_outcome::complete:
                    return c2d.complete(device, lock_token, t);
                case c2d_outcome::reject:
                    return c2d.reject(device, lock_token, t);
                case c2d_outcome::abandon:
                    break;
            }
            return c2d.abandon(device, lock_token, t);
        },
        ex,
        [q, &svc, ex, device](result<void> r) mutable {
            // Lock lost: it timed out and the message went out again, which that copy settles.
            if (!r)
                spdlog::debug("session: C2D settlement for {} not applied: {}", device,
                              r.error().message());
            auto done = std::move(q->pending.front().done);
            q->pending.pop_front();
            if (done) done(std::move(r));
            settle_next(std::move(q), svc, std::move(ex), std::move(device));
        });
}

std::optional<c2d::delivery> device_session::take_c2d() {
    if (!is_open() || !principal_->module_id.empty()) return std::nullopt;
    touch();
    return svc_.c2d.receive(principal_->device_id, iothub::now());
}

bool device_session::method_response(std::string_view request_id, int status,
                                     std::string_view payload) {
    if (!is_open()) return false;
    touch();
    return svc_.methods.respond(principal_->device_id, principal_->module_id, request_id, status,
                                payload);
}

void device_session::save_record(std::string value) {
    if (options_.record_key.empty() || !is_open()) return;
    svc_.blocking.post([&kv = svc_.kv, key = options_.record_key, value = std::move(value)] {
        if (auto r = kv.put(key, value); !r)
            spdlog::warn("session: cannot record the session {}: {}", key, r.error().message());
    });
}

}  // namespace iothub::session
