#include "connections/connections.hpp"

#include <vector>

namespace iothub::connections {

std::shared_ptr<connection_table::entry> connection_table::attach(
    std::string device_id, std::string module_id, std::function<void(const std::string&)> close,
    sys_time now, std::weak_ptr<device_channel> channel) {
    auto e = std::make_shared<entry>();
    e->device_id = std::move(device_id);
    e->module_id = std::move(module_id);
    e->close = std::move(close);
    e->channel = std::move(channel);
    e->touch(now);
    std::shared_ptr<entry> previous;
    {
        std::lock_guard lock(mutex_);
        auto& s = identities_[key(e->device_id, e->module_id)];
        previous = std::move(s.current);
        if (!previous && e->module_id.empty()) ++connected_devices_;
        s.current = e;
        s.elsewhere = false;
        s.state_updated = now;
        s.last_activity_ns = e->last_activity_ns.load();
        if (observer_) {
            if (previous) observer_(e->device_id, e->module_id, false);
            observer_(e->device_id, e->module_id, true);
        }
    }
    if (previous) previous->close("a new connection for the same identity replaced this one");
    return e;
}

void connection_table::detach(const std::shared_ptr<entry>& e, sys_time now) {
    std::lock_guard lock(mutex_);
    auto it = identities_.find(key(e->device_id, e->module_id));
    if (it == identities_.end() || it->second.current != e) return;
    it->second.current.reset();
    it->second.state_updated = now;
    it->second.last_activity_ns = e->last_activity_ns.load(std::memory_order_relaxed);
    if (e->module_id.empty()) --connected_devices_;
    if (observer_) observer_(e->device_id, e->module_id, false);
}

void connection_table::touch(const std::string& device_id, const std::string& module_id,
                             sys_time now) {
    std::lock_guard lock(mutex_);
    auto& s = identities_[key(device_id, module_id)];
    if (s.current)
        s.current->touch(now);
    else
        s.last_activity_ns = now.time_since_epoch().count();
}

void connection_table::close(const std::string& device_id, const std::string& module_id,
                             const std::string& reason, bool with_modules) {
    std::vector<std::shared_ptr<entry>> victims;
    {
        std::lock_guard lock(mutex_);
        if (auto it = identities_.find(key(device_id, module_id));
            it != identities_.end() && it->second.current)
            victims.push_back(it->second.current);
        if (with_modules && module_id.empty()) {
            const std::string prefix = device_id + "/";
            for (auto it = identities_.lower_bound(prefix);
                 it != identities_.end() && it->first.compare(0, prefix.size(), prefix) == 0; ++it)
                if (it->second.current) victims.push_back(it->second.current);
        }
    }
    for (auto& v : victims) v->close(reason);
}

std::shared_ptr<connection_table::entry> connection_table::find(
    const std::string& device_id, const std::string& module_id) const {
    std::lock_guard lock(mutex_);
    auto it = identities_.find(key(device_id, module_id));
    return it == identities_.end() ? nullptr : it->second.current;
}

std::shared_ptr<device_channel> connection_table::channel(const std::string& device_id,
                                                          const std::string& module_id) const {
    auto e = find(device_id, module_id);
    return e ? e->channel.lock() : nullptr;
}

registry::live_state connection_table::live(const registry::identity& id) const {
    registry::live_state out;
    std::lock_guard lock(mutex_);
    auto it = identities_.find(key(id.device_id, id.module_id));
    if (it == identities_.end()) return out;
    const auto& s = it->second;
    out.connected = s.current != nullptr || s.elsewhere;
    out.connection_state_updated = s.state_updated;
    auto ns = s.current ? s.current->last_activity_ns.load(std::memory_order_relaxed)
                        : s.last_activity_ns;
    if (ns) out.last_activity = sys_time(std::chrono::nanoseconds(ns));
    return out;
}

void connection_table::connected_elsewhere(const std::string& device_id,
                                           const std::string& module_id, bool connected,
                                           sys_time at) {
    std::lock_guard lock(mutex_);
    auto& s = identities_[key(device_id, module_id)];
    if (s.elsewhere == connected) return;
    s.elsewhere = connected;
    // A connection here that the other node's is replacing may not have ended yet.
    if (!s.current) s.state_updated = at;
}

std::vector<std::pair<std::string, std::int64_t>> connection_table::changed_activity() {
    std::vector<std::pair<std::string, std::int64_t>> out;
    std::lock_guard lock(mutex_);
    for (auto& [key, s] : identities_) {
        const auto ns = s.current ? s.current->last_activity_ns.load(std::memory_order_relaxed)
                                  : s.last_activity_ns;
        if (ns == 0 || ns == s.recorded_ns) continue;
        s.recorded_ns = ns;
        out.emplace_back(key, ns);
    }
    return out;
}

void connection_table::restore_activity(const std::string& key, std::int64_t ns) {
    std::lock_guard lock(mutex_);
    auto& s = identities_[key];
    if (s.current || ns <= s.last_activity_ns) return;
    s.last_activity_ns = ns;
    s.recorded_ns = ns;
}

void connection_table::forget(const std::string& device_id, const std::string& module_id) {
    std::lock_guard lock(mutex_);
    auto it = identities_.find(key(device_id, module_id));
    if (it != identities_.end() && !it->second.current) identities_.erase(it);
}

std::size_t connection_table::connected_devices() const {
    std::lock_guard lock(mutex_);
    return connected_devices_;
}

bool connection_table::deliver_desired(const std::string& device_id, const std::string& module_id,
                                       std::string patch, std::uint64_t version) const {
    auto ch = channel(device_id, module_id);
    if (!ch || !ch->wants_desired_updates()) return false;
    ch->send_desired_update(std::move(patch), version);
    return true;
}

}  // namespace iothub::connections
