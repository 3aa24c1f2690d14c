#include "storage/event_log.hpp"

#include "storage/detail/event_log_core.hpp"
#include "storage/engine.hpp"

#include <algorithm>

namespace iothub::storage {

std::size_t event_size(const event_record& e) {
    std::size_t n = e.body.size();
    for (const auto& [k, v] : e.application_properties) n += k.size() + v.size();
    for (const auto& [k, v] : e.system_properties) n += k.size() + v.size();
    return n;
}

result<void> check_log_name(std::string_view name) {
    auto allowed = [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '.' || c == '_' || c == '-';
    };
    if (name.empty() || name.size() > 200 || name == "events" || name == "hub" ||
        !std::all_of(name.begin(), name.end(), allowed))
        return error(errc::argument_invalid, "'" + std::string(name) + "' cannot name a log.");
    return {};
}

const std::string* find_property(const property_list& list, std::string_view name) {
    for (const auto& [k, v] : list)
        if (k == name) return &v;
    return nullptr;
}

int partition_for(std::string_view device_id, int partitions) {
    std::uint32_t h = 2166136261u;
    for (unsigned char c : device_id) {
        h ^= c;
        h *= 16777619u;
    }
    return static_cast<int>(h % static_cast<std::uint32_t>(partitions));
}

namespace detail {

std::uint64_t event_log_core::resolve(int partition, const read_position& position) {
    auto state = info(partition);
    switch (position.what) {
        case read_position::kind::earliest:
            return state.begin_sequence_number;
        case read_position::kind::latest:
            return state.next_sequence_number;
        case read_position::kind::sequence: {
            std::uint64_t s = position.inclusive ? position.sequence : position.sequence + 1;
            return std::clamp(s, state.begin_sequence_number, state.next_sequence_number);
        }
        case read_position::kind::enqueued_time: {
            // First event enqueued strictly after the time (inclusive: at or after).
            std::uint64_t lo = state.begin_sequence_number, hi = state.next_sequence_number;
            while (lo < hi) {
                std::uint64_t mid = lo + (hi - lo) / 2;
                auto t = enqueued_time_of(partition, mid);
                if (!t) {  // trimmed under us: everything before is gone
                    lo = mid + 1;
                    continue;
                }
                bool before = position.inclusive ? *t < position.time : *t <= position.time;
                if (before)
                    lo = mid + 1;
                else
                    hi = mid;
            }
            return lo;
        }
    }
    return state.next_sequence_number;
}

partition_info event_log_core::info(int partition) {
    std::lock_guard lock(mutex_);
    return parts_.at(static_cast<std::size_t>(partition));
}

std::uint64_t event_log_core::watch(int partition, std::uint64_t sequence,
                                    std::function<void()> notify) {
    std::unique_lock lock(mutex_);
    auto token = next_token_++;
    if (parts_.at(static_cast<std::size_t>(partition)).next_sequence_number > sequence) {
        lock.unlock();
        notify();
        return token;
    }
    watchers_.emplace(token, watcher{partition, sequence, std::move(notify)});
    return token;
}

void event_log_core::unwatch(std::uint64_t token) {
    {
        std::lock_guard lock(mutex_);
        watchers_.erase(token);
    }
    std::lock_guard wait(firing_);  // a notification already taken out finishes first
}

void event_log_core::published(int partition, std::uint64_t next, sys_time last_time) {
    std::vector<std::function<void()>> due;
    std::lock_guard fire(firing_);
    {
        std::lock_guard lock(mutex_);
        auto& p = parts_.at(static_cast<std::size_t>(partition));
        p.next_sequence_number = next;
        p.last_enqueued_time = last_time;
        for (auto it = watchers_.begin(); it != watchers_.end();) {
            if (it->second.partition == partition && it->second.sequence < next) {
                due.push_back(std::move(it->second.notify));
                it = watchers_.erase(it);
            } else {
                ++it;
            }
        }
    }
    for (auto& fn : due) fn();
}

void event_log_core::trimmed(int partition, std::uint64_t begin) {
    std::lock_guard lock(mutex_);
    auto& p = parts_.at(static_cast<std::size_t>(partition));
    p.begin_sequence_number = std::max(p.begin_sequence_number, begin);
}

void event_log_core::load(int partition, partition_info state) {
    std::lock_guard lock(mutex_);
    parts_.at(static_cast<std::size_t>(partition)) = state;
}

sys_time event_log_core::stamp(int partition, sys_time now) {
    std::lock_guard lock(mutex_);
    return std::max(now, parts_.at(static_cast<std::size_t>(partition)).last_enqueued_time);
}

}  // namespace detail
}  // namespace iothub::storage
