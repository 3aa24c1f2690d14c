#include "cluster/cluster.hpp"

#include <boost/json.hpp>
#include <spdlog/spdlog.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <thread>

namespace iothub::cluster {
namespace {

namespace json = boost::json;

constexpr std::string_view presence_prefix = "presence/";

constexpr std::string_view node_prefix = "node/";
constexpr std::string_view activity_prefix = "activity/";
// A node whose heartbeat (every 5 s) has not arrived for this long is gone.
constexpr std::chrono::seconds node_silence{15};

// presence/<d>[/<m>] -> (d, m)
std::pair<std::string, std::string> identity_of(std::string_view key) {
    auto rest = key.substr(presence_prefix.size());
    auto slash = rest.find('/');
    return {std::string(rest.substr(0, slash)),
            slash == std::string_view::npos ? std::string() : std::string(rest.substr(slash + 1))};
}

std::string presence_key(const std::string& device_id, const std::string& module_id) {
    std::string key(presence_prefix);
    key += device_id;
    if (!module_id.empty()) key += "/" + module_id;
    return key;
}

std::int64_t now_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

// "<node> <opened, ns since the epoch>"
std::pair<std::string, std::int64_t> parse_presence(std::string_view value) {
    auto space = value.find(' ');
    if (space == std::string_view::npos) return {std::string(value), 0};
    std::int64_t ns = 0;
    for (char c : value.substr(space + 1))
        if (c >= '0' && c <= '9') ns = ns * 10 + (c - '0');
    return {std::string(value.substr(0, space)), ns};
}

json::object error_json(const error& e) {
    return {{"error", static_cast<int>(e.code())}, {"message", e.message()}};
}

}  // namespace

struct node::impl {
    services s;
    std::unique_ptr<bus> b;

    // This node's presence records, by key: what it wrote (version) for the connection opened at
    // `opened`, and whether that connection has closed meanwhile.
    struct record {
        std::int64_t opened = 0;
        std::uint64_t version = 0;
        bool closed = false;
    };
    std::mutex mutex;
    std::map<std::string, record> presence;

    // Other nodes' presence records (key -> owner) and when each node's heartbeat last arrived
    // (by this node's clock, so skew does not matter): a node silent for `node_silence` is gone,
    // and so are its connections, for the live fields. Touched by the worker and the heartbeat.
    std::mutex remote_mutex;
    std::map<std::string, std::string> remote_presence;
    std::map<std::string, std::chrono::steady_clock::time_point> node_seen;

    // Queues another node changed, reread together.
    std::mutex pending_mutex;
    std::set<std::string> lanes;
    bool feedback = false;
    bool scheduled = false;

    // Remote changes are handled in order on a thread of their own: the storage engine's thread
    // that hands them over must not wait on anything (ending a connection may write to storage,
    // which waits for that very thread).
    std::mutex work_mutex;
    std::condition_variable work_cv;
    // The heartbeat's own: a notify_one on work_cv could wake it instead of the worker.
    std::condition_variable beat_cv;
    std::deque<std::vector<storage::kv_change>> work;
    bool stopping = false;
    std::thread worker;

    const std::int64_t started = now_ns();
    std::thread heartbeat;

    impl(services sv, std::unique_ptr<bus> bu) : s(std::move(sv)), b(std::move(bu)) {
        worker = std::thread([this] { follow(); });
    }
    ~impl() {
        {
            std::lock_guard lock(work_mutex);
            stopping = true;
        }
        work_cv.notify_all();
        beat_cv.notify_all();
        worker.join();
        if (heartbeat.joinable()) heartbeat.join();
        (void)s.kv.remove("node/" + b->node());
    }

    void beat() {
        std::unique_lock lock(work_mutex);
        while (!stopping) {
            lock.unlock();
            json::object o{{"id", b->node()},
                           {"started", started},
                           {"seen", now_ns()},
                           {"connectedDevices", s.connections.connected_devices()}};
            if (auto r = s.kv.put("node/" + b->node(), json::serialize(o)); !r)
                spdlog::debug("cluster: node record not written: {}", r.error().message());
            forget_silent_nodes();
            lock.lock();
            beat_cv.wait_for(lock, std::chrono::seconds(5), [&] { return stopping; });
        }
    }

    void hand_over(std::vector<storage::kv_change> changes) {
        {
            std::lock_guard lock(work_mutex);
            work.push_back(std::move(changes));
        }
        work_cv.notify_one();
    }

    void follow() {
        std::unique_lock lock(work_mutex);
        for (;;) {
            work_cv.wait(lock, [&] { return stopping || !work.empty(); });
            if (stopping) return;
            auto changes = std::move(work.front());
            work.pop_front();
            lock.unlock();
            try {
                remote(std::move(changes));
            } catch (const std::exception& e) {
                spdlog::error("cluster: following a remote change failed: {}", e.what());
            }
            lock.lock();
        }
    }

    void remote(std::vector<storage::kv_change> changes) {
        bool reread = false;
        for (auto& c : changes) {
            if (auto id = registry::device_registry::remote_change(c)) {
                s.lifecycle.remote_changed(*id);
            } else if (auto q = c2d::owner_of_key(c.key); q.device || q.feedback) {
                std::lock_guard lock(pending_mutex);
                if (q.device) lanes.insert(std::move(*q.device));
                feedback |= q.feedback;
                reread = true;
            } else if (c.key.starts_with(presence_prefix)) {
                if (c.after)
                    elsewhere(c.key, c.after->value);
                else if (c.before)
                    ended_elsewhere(c.key, c.before->value);
            } else if (c.key.starts_with(node_prefix)) {
                std::lock_guard lock(remote_mutex);
                if (c.after)
                    node_seen[c.key.substr(node_prefix.size())] = std::chrono::steady_clock::now();
            } else if (c.key.starts_with(activity_prefix) && c.after) {
                std::int64_t ns = 0;
                for (char ch : c.after->value)
                    if (ch >= '0' && ch <= '9') ns = ns * 10 + (ch - '0');
                s.connections.restore_activity(c.key.substr(activity_prefix.size()), ns);
            } else {
                for (const auto& f : s.followers)
                    if (c.key.starts_with(f.prefix)) f.changed(c);
            }
        }
        if (!reread) return;
        {
            std::lock_guard lock(pending_mutex);
            if (scheduled) return;
            scheduled = true;
        }
        s.offload([this] { reread_queues(); });
    }

    void reread_queues() {
        std::set<std::string> todo;
        bool fb = false;
        {
            std::lock_guard lock(pending_mutex);
            todo.swap(lanes);
            fb = std::exchange(feedback, false);
            scheduled = false;
        }
        for (const auto& lane : todo) s.c2d.refresh(lane);
        if (fb) s.c2d.refresh_feedback();
    }

    // Another node recorded a connection of an identity: a newer one ends the one here.
    void elsewhere(const std::string& key, const std::string& value) {
        auto [owner, opened] = parse_presence(value);
        if (owner == b->node()) return;
        auto [device, module] = identity_of(key);
        {
            std::lock_guard lock(remote_mutex);
            remote_presence[key] = owner;
        }
        s.connections.connected_elsewhere(device, module, true,
                                          sys_time(std::chrono::nanoseconds(opened)));
        // Method calls waiting here for the identity to connect follow it there.
        if (s.methods.waiting_for(device, module))
            s.offload([this, device, module] { s.methods.device_ready_elsewhere(device, module); });
        {
            std::lock_guard lock(mutex);
            auto it = presence.find(key);
            if (it == presence.end() || it->second.closed || it->second.opened > opened) return;
        }
        s.connections.close(device, module,
                            "Another connection of this identity opened on another hub node.",
                            false);
    }

    // Another node's connection of an identity ended (it removed its record).
    void ended_elsewhere(const std::string& key, const std::string& value) {
        auto [owner, opened] = parse_presence(value);
        if (owner == b->node()) return;
        {
            std::lock_guard lock(remote_mutex);
            remote_presence.erase(key);
        }
        auto [device, module] = identity_of(key);
        s.connections.connected_elsewhere(device, module, false, now());
    }

    // Nodes whose heartbeat stopped: their connections are over (their records stay until the
    // identity connects again, and are ignored meanwhile).
    void forget_silent_nodes() {
        std::vector<std::string> gone;
        {
            std::lock_guard lock(remote_mutex);
            const auto cutoff = std::chrono::steady_clock::now() - node_silence;
            for (auto it = node_seen.begin(); it != node_seen.end();) {
                if (it->second < cutoff) {
                    for (auto p = remote_presence.begin(); p != remote_presence.end();)
                        if (p->second == it->first) {
                            gone.push_back(p->first);
                            p = remote_presence.erase(p);
                        } else {
                            ++p;
                        }
                    it = node_seen.erase(it);
                } else {
                    ++it;
                }
            }
        }
        for (const auto& key : gone) {
            auto [device, module] = identity_of(key);
            s.connections.connected_elsewhere(device, module, false, now());
        }
    }

    // The presence records and node heartbeats already there when this node starts.
    result<void> load_presence() {
        for (auto prefix : {node_prefix, presence_prefix}) {
            std::string after;
            for (;;) {
                auto page = s.kv.scan(std::string(prefix), after, 1000);
                if (!page) return page.error();
                for (const auto& e : *page) {
                    if (prefix == node_prefix) {
                        std::lock_guard lock(remote_mutex);
                        node_seen[e.key.substr(node_prefix.size())] =
                            std::chrono::steady_clock::now();
                    } else {
                        elsewhere(e.key, e.data.value);
                    }
                }
                if (page->size() < 1000) break;
                after = page->back().key;
            }
        }
        return {};
    }

    void on_desired(const std::string& payload) {
        auto v = json::parse(payload);
        const auto& o = v.as_object();
        if (json::value_to<std::string>(o.at("node")) == b->node()) return;
        s.connections.deliver_desired(json::value_to<std::string>(o.at("deviceId")),
                                      json::value_to<std::string>(o.at("moduleId")),
                                      json::serialize(o.at("patch")),
                                      o.at("version").to_number<std::uint64_t>());
    }

    void on_method(const std::string& payload, std::function<void(std::string)> respond) {
        auto v = json::parse(payload);
        const auto& o = v.as_object();
        methods::method_call call;
        call.device_id = json::value_to<std::string>(o.at("deviceId"));
        call.module_id = json::value_to<std::string>(o.at("moduleId"));
        call.name = json::value_to<std::string>(o.at("methodName"));
        call.payload = json::value_to<std::string>(o.at("payload"));
        call.response_timeout = std::chrono::seconds(o.at("responseTimeout").to_number<int>());
        if (const auto* connect = o.if_contains("connectTimeout"))
            call.connect_timeout = std::chrono::seconds(connect->to_number<int>());
        s.offload([this, call = std::move(call), respond = std::move(respond)]() mutable {
            s.methods.invoke(std::move(call), [respond](result<methods::method_result> r) {
                respond(json::serialize(r ? json::value(methods::to_json(*r))
                                          : json::value(error_json(r.error()))));
            });
        });
    }
};

node::node(services s, std::unique_ptr<bus> b)
    : impl_(std::make_unique<impl>(std::move(s), std::move(b))) {}

node::~node() = default;

const std::string& node::id() const {
    return impl_->b->node();
}

result<void> node::start() {
    auto* im = impl_.get();
    im->s.kv.observe_remote(
        [im](std::vector<storage::kv_change> c) { im->hand_over(std::move(c)); });
    im->b->on("desired", [im](std::string payload, std::function<void(std::string)>) {
        try {
            im->on_desired(payload);
        } catch (const std::exception& e) {
            spdlog::warn("cluster: a malformed desired update: {}", e.what());
        }
    });
    im->b->on("method", [im](std::string payload, std::function<void(std::string)> respond) {
        try {
            im->on_method(payload, respond);
        } catch (const std::exception& e) {
            respond(json::serialize(error_json(
                error(errc::bad_request, "A malformed method call: " + std::string(e.what())))));
        }
    });
    if (auto r = im->b->start(); !r) return r;
    if (auto r = im->load_presence(); !r) return r;
    im->heartbeat = std::thread([im] { im->beat(); });
    return {};
}

result<json::object> node::status() {
    auto* im = impl_.get();
    const auto now = now_ns();
    json::array nodes;
    auto page = im->s.kv.scan("node/", "", 1000);
    if (!page) return page.error();
    for (const auto& e : *page) {
        auto v = json::parse(e.data.value, json::storage_ptr(), {});
        if (!v.is_object()) continue;
        auto o = v.as_object();
        const auto seen = o["seen"].is_int64() ? o["seen"].as_int64() : 0;
        o["alive"] = now - seen < std::chrono::nanoseconds(std::chrono::seconds(15)).count();
        o["self"] = o["id"] == json::value(im->b->node());
        nodes.push_back(std::move(o));
    }
    json::array duties;
    auto held = im->s.kv.scan("duty/", "", 1000);
    if (!held) return held.error();
    for (const auto& e : *held) {
        auto [owner, expiry] = parse_presence(e.data.value);
        duties.push_back(
            json::object{{"duty", e.key.substr(5)}, {"node", owner}, {"held", expiry > now}});
    }
    return json::object{
        {"mode", "cluster"}, {"node", im->b->node()}, {"nodes", nodes}, {"duties", duties}};
}

void node::connection_state(const std::string& device_id, const std::string& module_id, bool up) {
    auto* im = impl_.get();
    const auto key = presence_key(device_id, module_id);
    if (up) {
        const auto opened = now_ns();
        {
            std::lock_guard lock(im->mutex);
            im->presence[key] = impl::record{opened, 0, false};
        }
        im->s.offload([im, key, opened] {
            auto v = im->s.kv.put(key, im->b->node() + " " + std::to_string(opened));
            std::uint64_t remove_version = 0;
            {
                std::lock_guard lock(im->mutex);
                auto it = im->presence.find(key);
                if (it == im->presence.end() || it->second.opened != opened) return;
                if (!v) return;
                it->second.version = *v;
                // Closed before the record was written: it goes now.
                if (it->second.closed) {
                    remove_version = *v;
                    im->presence.erase(it);
                }
            }
            if (remove_version)
                (void)im->s.kv.remove(key, storage::precondition::version(remove_version));
        });
        return;
    }
    std::uint64_t version = 0;
    {
        std::lock_guard lock(im->mutex);
        auto it = im->presence.find(key);
        if (it == im->presence.end()) return;
        if (!it->second.version) {
            it->second.closed = true;  // the write in flight removes it
            return;
        }
        version = it->second.version;
        im->presence.erase(it);
    }
    // Only this node's own record: a newer connection elsewhere has replaced it otherwise.
    im->s.offload([im, key, version] {
        (void)im->s.kv.remove(key, storage::precondition::version(version));
    });
}

void node::desired_changed(const twin::desired_change& c) {
    json::object o{{"node", impl_->b->node()},
                   {"deviceId", c.device_id},
                   {"moduleId", c.module_id},
                   {"version", c.version},
                   {"patch", c.patch}};
    impl_->b->broadcast("desired", json::serialize(o));
}

bool node::forward_method(const methods::method_call& call,
                          methods::method_service::completion& done) {
    auto* im = impl_.get();
    auto found = im->s.kv.get(presence_key(call.device_id, call.module_id));
    if (!found || !*found) return false;
    auto [owner, opened] = parse_presence((*found)->value);
    if (owner == im->b->node()) return false;
    json::object o{{"deviceId", call.device_id},
                   {"moduleId", call.module_id},
                   {"methodName", call.name},
                   {"payload", call.payload},
                   {"responseTimeout", call.response_timeout.count()},
                   {"connectTimeout", call.connect_timeout.count()}};
    im->b->request(
        owner, "method", json::serialize(o),
        std::chrono::duration_cast<std::chrono::milliseconds>(call.connect_timeout +
                                                              call.response_timeout) +
            std::chrono::seconds(5),
        [done = std::move(done)](result<std::string> r) {
            if (!r) return done(r.error());
            try {
                auto v = json::parse(*r);
                const auto& a = v.as_object();
                if (a.contains("error"))
                    return done(error(static_cast<errc>(a.at("error").to_number<int>()),
                                      json::value_to<std::string>(a.at("message"))));
                methods::method_result out;
                out.status = a.at("status").to_number<int>();
                out.payload = a.contains("payload") ? a.at("payload") : json::value(nullptr);
                done(std::move(out));
            } catch (const std::exception& e) {
                done(error(errc::server_error,
                           "A malformed answer from another hub node: " + std::string(e.what())));
            }
        });
    return true;
}

struct duty::impl {
    storage::kv_store& kv;
    std::string node, key;
    std::chrono::milliseconds ttl;
    std::function<void(bool)> on_held;
    std::mutex mutex;
    std::condition_variable cv;
    bool stopping = false;
    std::atomic<bool> holding{false};
    std::uint64_t version = 0;  // of our record, while held
    std::thread thread;

    impl(storage::kv_store& k, std::string n, std::string name, std::chrono::milliseconds t,
         std::function<void(bool)> h)
        : kv(k),
          node(std::move(n)),
          key("duty/" + std::move(name)),
          ttl(t),
          on_held(std::move(h)) {}

    // One round: renew the duty, or take it when free or expired. A failure to reach storage
    // while holding it gives it up here too: the others take it once the record expires.
    bool attempt() {
        const auto now = now_ns();
        const auto value = node + " " + std::to_string(now + std::chrono::nanoseconds(ttl).count());
        auto current = kv.get(key);
        if (!current) return false;
        storage::precondition cond = storage::precondition::absent();
        if (*current) {
            auto [owner, expiry] = parse_presence((*current)->value);
            if (owner != node && expiry > now) return false;
            cond = storage::precondition::version((*current)->version);
        }
        auto v = kv.put(key, value, cond);
        if (!v) return false;
        version = *v;
        return true;
    }

    void run() {
        std::unique_lock lock(mutex);
        while (!stopping) {
            lock.unlock();
            const bool now_held = attempt();
            if (now_held != holding.exchange(now_held)) {
                spdlog::info("cluster: {} the duty {}", now_held ? "took" : "lost", key);
                on_held(now_held);
            }
            lock.lock();
            cv.wait_for(lock, ttl / 3, [&] { return stopping; });
        }
        lock.unlock();
        if (holding.exchange(false)) {
            on_held(false);
            (void)kv.remove(key, storage::precondition::version(version));
        }
    }
};

duty::duty(storage::kv_store& kv, std::string node, std::string name, std::chrono::milliseconds ttl,
           std::function<void(bool held)> held)
    : impl_(std::make_unique<impl>(kv, std::move(node), std::move(name), ttl, std::move(held))) {}

duty::~duty() {
    {
        std::lock_guard lock(impl_->mutex);
        impl_->stopping = true;
    }
    impl_->cv.notify_all();
    if (impl_->thread.joinable()) impl_->thread.join();
}

void duty::start() {
    impl_->thread = std::thread([im = impl_.get()] { im->run(); });
}

bool duty::held() const {
    return impl_->holding.load();
}

}  // namespace iothub::cluster
