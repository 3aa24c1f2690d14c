#include "methods/methods.hpp"

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/json.hpp>

#include <atomic>
#include <charconv>
#include <map>
#include <set>

namespace iothub::methods {
namespace json = boost::json;
namespace asio = boost::asio;

namespace {

std::string identity_key(std::string_view d, std::string_view m) {
    return m.empty() ? std::string(d) : std::string(d) + "/" + std::string(m);
}

std::string describe(std::string_view d, std::string_view m) {
    return m.empty() ? "Device " + std::string(d)
                     : "Module " + std::string(m) + " of device " + std::string(d);
}

result<std::chrono::seconds> seconds_field(const json::object& o, std::string_view name,
                                           std::chrono::seconds fallback, std::chrono::seconds min,
                                           std::chrono::seconds max) {
    const auto* v = o.if_contains(name);
    if (!v || v->is_null()) return fallback;
    std::int64_t n = 0;
    if (v->is_int64()) {
        n = v->get_int64();
    } else if (v->is_uint64() && v->get_uint64() < 1'000'000) {
        n = static_cast<std::int64_t>(v->get_uint64());
    } else if (v->is_double() &&
               v->get_double() == static_cast<double>(static_cast<std::int64_t>(v->get_double()))) {
        n = static_cast<std::int64_t>(v->get_double());
    } else {
        return error(errc::argument_invalid, std::string(name) + " must be a whole number.");
    }
    if (n < min.count() || n > max.count())
        return error(errc::argument_invalid, std::string(name) + " must be between " +
                                                 std::to_string(min.count()) + " and " +
                                                 std::to_string(max.count()) + ".");
    return std::chrono::seconds(n);
}

}  // namespace

result<method_call> parse_call(const json::value& body, std::string device_id,
                               std::string module_id, const method_limits& limits) {
    if (!body.is_object())
        return error(errc::argument_invalid, "A method invocation must be a JSON object.");
    const auto& o = body.get_object();
    method_call c;
    c.device_id = std::move(device_id);
    c.module_id = std::move(module_id);
    const auto* name = o.if_contains("methodName");
    if (!name || !name->is_string() || name->get_string().empty())
        return error(errc::argument_invalid, "methodName is required and must be a string.");
    c.name = name->get_string();
    if (c.name.size() > 1024 || c.name.find_first_of("/?#") != std::string::npos ||
        c.name.find_first_of(std::string_view("\0", 1)) != std::string::npos)
        return error(errc::argument_invalid,
                     "methodName must be at most 1024 characters, without '/', '?' or '#'.");
    if (const auto* p = o.if_contains("payload")) c.payload = json::serialize(*p);
    if (c.payload.size() > limits.max_payload_bytes)
        return error(errc::message_too_large, "The method payload is " +
                                                  std::to_string(c.payload.size()) +
                                                  " bytes, over the limit of " +
                                                  std::to_string(limits.max_payload_bytes) + ".");
    auto response = seconds_field(o, "responseTimeoutInSeconds", std::chrono::seconds(30),
                                  limits.min_response_timeout, limits.max_response_timeout);
    if (!response) return response.error();
    c.response_timeout = *response;
    auto connect = seconds_field(o, "connectTimeoutInSeconds", std::chrono::seconds(0),
                                 std::chrono::seconds(0), limits.max_connect_timeout);
    if (!connect) return connect.error();
    c.connect_timeout = *connect;
    return c;
}

json::object to_json(const method_result& r) {
    return json::object{{"status", r.status}, {"payload", r.payload}};
}

namespace {

class asio_timeout_clock final : public timeout_clock,
                                 public std::enable_shared_from_this<asio_timeout_clock> {
  public:
    explicit asio_timeout_clock(asio::any_io_executor ex) : ex_(std::move(ex)) {}

    std::uint64_t schedule(std::chrono::milliseconds after, std::function<void()> fire) override {
        const auto id = next_.fetch_add(1);
        asio::post(ex_, [self = shared_from_this(), id, after, fire = std::move(fire)]() mutable {
            if (self->cancelled_.erase(id)) return;
            auto t = std::make_shared<asio::steady_timer>(self->ex_, after);
            self->timers_.emplace(id, t);
            t->async_wait(
                [self, id, t, fire = std::move(fire)](const boost::system::error_code& ec) {
                    self->timers_.erase(id);
                    if (!ec) fire();
                });
        });
        return id;
    }

    void cancel(std::uint64_t id) override {
        asio::post(ex_, [self = shared_from_this(), id] {
            auto it = self->timers_.find(id);
            if (it == self->timers_.end()) {
                self->cancelled_.insert(id);  // not started yet
                return;
            }
            it->second->cancel();
        });
    }

  private:
    asio::any_io_executor ex_;
    std::atomic<std::uint64_t> next_{1};
    // Touched on the executor only.
    std::map<std::uint64_t, std::shared_ptr<asio::steady_timer>> timers_;
    std::set<std::uint64_t> cancelled_;
};

}  // namespace

std::shared_ptr<timeout_clock> asio_timeouts(asio::any_io_executor ex) {
    return std::make_shared<asio_timeout_clock>(std::move(ex));
}

struct method_service::call_state {
    call_state(method_call c, completion d) : call(std::move(c)), done(std::move(d)) {}
    method_call call;
    completion done;
    const std::chrono::steady_clock::time_point since = std::chrono::steady_clock::now();
    std::string request_id;
    // Guarded by the service's mutex.
    bool delivered = false;
    bool finished = false;
    std::uint64_t armed = 0;  // which arming a firing belongs to
    std::uint64_t timer = 0;  // the current arming's timeout
};

method_service::method_service(connections::connection_table& connections,
                               asio::any_io_executor timers, method_limits limits)
    : method_service(connections, asio_timeouts(std::move(timers)), limits) {}

method_service::method_service(connections::connection_table& connections,
                               std::shared_ptr<timeout_clock> timeouts, method_limits limits)
    : connections_(connections), timeouts_(std::move(timeouts)), limits_(limits) {}

method_service::~method_service() {
    stop();
}

void method_service::invoke(method_call call, completion done) {
    // Not connected: an id the registry does not know is DeviceNotFound, as in Azure (a connected
    // identity exists, so the registry is asked only here).
    if (!connections_.find(call.device_id, call.module_id)) {
        if (registered_)
            if (auto known = registered_(call.device_id, call.module_id); !known)
                return done(known.error());
        if (elsewhere_ && elsewhere_(call, done)) return;
    }
    auto c = std::make_shared<call_state>(std::move(call), std::move(done));
    std::shared_ptr<connections::device_channel> channel;
    {
        std::lock_guard lock(mutex_);
        if (stopped_) {
            c->finished = true;
            c->done(error(errc::service_unavailable, "The hub is shutting down."));
            return;
        }
        char buf[24];
        auto [end, ec] = std::to_chars(buf, buf + sizeof buf, next_id_++, 16);
        c->request_id.assign(buf, end);
        // Checked under the lock so a connection that becomes ready concurrently either is seen
        // here or finds this call among the waiting (device_ready takes the same lock).
        channel = connections_.channel(c->call.device_id, c->call.module_id);
        if (channel && !channel->accepts_methods()) channel.reset();
        if (channel) {
            c->delivered = true;
            delivered_.emplace(c->request_id, c);
        } else if (c->call.connect_timeout.count() > 0) {
            waiting_.emplace(identity_key(c->call.device_id, c->call.module_id), c);
        }
    }
    if (channel) {
        arm(c, c->call.response_timeout);
        deliver(c, channel);
    } else if (c->call.connect_timeout.count() > 0) {
        arm(c, c->call.connect_timeout);
    } else {
        finish(c, error(errc::device_not_online,
                        describe(c->call.device_id, c->call.module_id) +
                            " is not online (not connected, or not subscribed to methods)."));
    }
}

void method_service::deliver(const std::shared_ptr<call_state>& c,
                             const std::shared_ptr<connections::device_channel>& channel) {
    channel->send_method_request(c->call.name, c->request_id, c->call.payload);
}

void method_service::arm(const std::shared_ptr<call_state>& c, std::chrono::seconds after) {
    std::uint64_t generation, previous;
    {
        std::lock_guard lock(mutex_);
        if (c->finished) return;
        generation = ++c->armed;
        previous = c->timer;
    }
    if (previous) timeouts_->cancel(previous);
    auto id = timeouts_->schedule(std::chrono::duration_cast<std::chrono::milliseconds>(after),
                                  [this, c, generation] { timed_out(c, generation); });
    std::lock_guard lock(mutex_);
    c->timer = id;
}

void method_service::timed_out(const std::shared_ptr<call_state>& c, std::uint64_t generation) {
    bool delivered;
    {
        std::lock_guard lock(mutex_);
        if (c->finished || generation != c->armed) return;  // settled or re-armed meanwhile
        delivered = c->delivered;
    }
    if (delivered)
        finish(c, error(errc::gateway_timeout,
                        describe(c->call.device_id, c->call.module_id) +
                            " did not answer method '" + c->call.name + "' within " +
                            std::to_string(c->call.response_timeout.count()) + " s."));
    else
        finish(c,
               error(errc::device_not_online,
                     describe(c->call.device_id, c->call.module_id) + " did not connect within " +
                         std::to_string(c->call.connect_timeout.count()) + " s."));
}

void method_service::finish(const std::shared_ptr<call_state>& c, result<method_result> r) {
    {
        std::lock_guard lock(mutex_);
        if (c->finished) return;
        c->finished = true;
        if (c->delivered) {
            delivered_.erase(c->request_id);
        } else {
            auto [from, to] =
                waiting_.equal_range(identity_key(c->call.device_id, c->call.module_id));
            for (auto it = from; it != to; ++it)
                if (it->second == c) {
                    waiting_.erase(it);
                    break;
                }
        }
    }
    std::uint64_t timer;
    {
        std::lock_guard lock(mutex_);
        timer = c->timer;
    }
    if (timer) timeouts_->cancel(timer);
    c->done(std::move(r));
}

bool method_service::respond(std::string_view device_id, std::string_view module_id,
                             std::string_view request_id, int status, std::string_view payload) {
    std::shared_ptr<call_state> c;
    {
        std::lock_guard lock(mutex_);
        auto it = delivered_.find(request_id);
        if (it == delivered_.end() || it->second->call.device_id != device_id ||
            it->second->call.module_id != module_id)
            return false;
        c = it->second;
    }
    if (payload.size() > limits_.max_payload_bytes) {
        finish(c, error(errc::message_too_large,
                        describe(device_id, module_id) + " answered with " +
                            std::to_string(payload.size()) + " bytes, over the limit of " +
                            std::to_string(limits_.max_payload_bytes) + "."));
        return true;
    }
    method_result r{status, nullptr};
    // An SDK sends JSON; anything else is passed on as a string rather than lost.
    auto first = payload.find_first_not_of(" \t\r\n");
    if (first != std::string_view::npos) {
        boost::system::error_code ec;
        auto v = json::parse(payload, ec);
        r.payload = ec ? json::value(json::string(payload)) : std::move(v);
    }
    finish(c, std::move(r));
    return true;
}

void method_service::device_ready(const std::string& device_id, const std::string& module_id) {
    std::vector<std::shared_ptr<call_state>> ready;
    {
        std::lock_guard lock(mutex_);
        auto [from, to] = waiting_.equal_range(identity_key(device_id, module_id));
        for (auto it = from; it != to; ++it) {
            it->second->delivered = true;
            delivered_.emplace(it->second->request_id, it->second);
            ready.push_back(it->second);
        }
        waiting_.erase(from, to);
    }
    if (ready.empty()) return;
    auto channel = connections_.channel(device_id, module_id);
    for (const auto& c : ready) {
        arm(c, c->call.response_timeout);
        // Gone again already: the call times out like any unanswered one.
        if (channel) deliver(c, channel);
    }
}

void method_service::device_ready_elsewhere(const std::string& device_id,
                                            const std::string& module_id) {
    if (!elsewhere_) return;
    std::vector<std::pair<method_call, completion>> moved;
    std::vector<std::uint64_t> timers;
    {
        std::lock_guard lock(mutex_);
        auto [from, to] = waiting_.equal_range(identity_key(device_id, module_id));
        for (auto it = from; it != to; ++it) {
            auto& c = *it->second;
            c.finished = true;  // here; it goes on as a new call with the time it has left
            if (c.timer) timers.push_back(c.timer);
            auto call = c.call;
            const auto waited = std::chrono::duration_cast<std::chrono::seconds>(
                std::chrono::steady_clock::now() - c.since);
            call.connect_timeout = std::max(call.connect_timeout - waited, std::chrono::seconds(1));
            moved.emplace_back(std::move(call), std::move(c.done));
        }
        waiting_.erase(from, to);
    }
    for (auto t : timers) timeouts_->cancel(t);
    // Through invoke: forwarded to the node holding the identity, or waiting here again should
    // that connection already be gone.
    for (auto& [call, done] : moved) invoke(std::move(call), std::move(done));
}

bool method_service::waiting_for(const std::string& device_id, const std::string& module_id) const {
    std::lock_guard lock(mutex_);
    return waiting_.count(identity_key(device_id, module_id)) > 0;
}

void method_service::stop() {
    std::vector<std::shared_ptr<call_state>> all;
    {
        std::lock_guard lock(mutex_);
        stopped_ = true;
        for (auto& [rid, c] : delivered_) all.push_back(c);
        for (auto& [key, c] : waiting_) all.push_back(c);
    }
    for (const auto& c : all)
        finish(c, error(errc::service_unavailable, "The hub is shutting down."));
}

std::size_t method_service::in_flight() const {
    std::lock_guard lock(mutex_);
    return delivered_.size() + waiting_.size();
}

}  // namespace iothub::methods
