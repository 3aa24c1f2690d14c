// The in-memory engine: the same contracts as RocksDB with nothing on disk.
#include "common/thread_role.hpp"
#include "storage/detail/event_log_core.hpp"
#include "storage/detail/ordered_scan.hpp"
#include "storage/engine.hpp"

#include <atomic>
#include <deque>
#include <map>
#include <mutex>

namespace iothub::storage {
namespace {

// Shared by the engine's kv store and logs: how many of the next writes to fail.
struct fault_counters {
    std::atomic<std::size_t> appends{0};
    std::atomic<std::size_t> kv_writes{0};

    static bool take(std::atomic<std::size_t>& n) {
        auto v = n.load();
        while (v > 0 && !n.compare_exchange_weak(v, v - 1)) {
        }
        return v > 0;
    }
};

error injected() {
    return error(errc::server_error, "Storage failure (injected by a test).");
}

class memory_kv_store final : public kv_store {
  public:
    explicit memory_kv_store(fault_counters& faults) : faults_(faults) {}

    result<std::optional<versioned_value>> get(std::string_view key) override {
        IOTHUB_ASSERT_MAY_BLOCK();
        std::lock_guard lock(mutex_);
        auto it = data_.find(key);
        if (it == data_.end()) return std::optional<versioned_value>{};
        return std::optional<versioned_value>{it->second};
    }

    std::vector<result<std::uint64_t>> apply(std::span<const kv_write> writes) override {
        IOTHUB_ASSERT_MAY_BLOCK();
        if (fault_counters::take(faults_.kv_writes))
            return std::vector<result<std::uint64_t>>(writes.size(),
                                                      result<std::uint64_t>(injected()));
        std::lock_guard lock(mutex_);
        std::vector<result<std::uint64_t>> results;
        results.reserve(writes.size());
        for (const auto& w : writes) {
            auto it = data_.find(w.key);
            std::optional<std::uint64_t> current;
            if (it != data_.end()) current = it->second.version;
            if (auto ok = w.admissible(current); !ok) {
                results.emplace_back(ok.error());
                continue;
            }
            if (w.operation == kv_write::op::remove) {
                data_.erase(it);
                results.emplace_back(std::uint64_t{0});
            } else {
                auto v = ++version_;
                data_[w.key] = versioned_value{w.value, v};
                results.emplace_back(v);
            }
        }
        return results;
    }

    // Every write or none: the first condition that fails is the answer. For append_with.
    result<std::vector<std::uint64_t>> apply_all(std::span<const kv_write> writes) {
        if (fault_counters::take(faults_.kv_writes)) return injected();
        std::lock_guard lock(mutex_);
        for (const auto& w : writes) {
            auto it = data_.find(w.key);
            std::optional<std::uint64_t> current;
            if (it != data_.end()) current = it->second.version;
            if (auto ok = w.admissible(current); !ok) return ok.error();
        }
        std::vector<std::uint64_t> versions;
        for (const auto& w : writes) {
            if (w.operation == kv_write::op::remove) {
                data_.erase(w.key);
                versions.push_back(0);
            } else {
                auto v = ++version_;
                data_[w.key] = versioned_value{w.value, v};
                versions.push_back(v);
            }
        }
        return versions;
    }

    result<std::vector<kv_entry>> scan(std::string_view prefix, std::string_view start_after,
                                       std::size_t limit) override {
        IOTHUB_ASSERT_MAY_BLOCK();
        std::lock_guard lock(mutex_);
        return detail::ordered_scan(data_, prefix, start_after, limit);
    }

  private:
    fault_counters& faults_;
    std::mutex mutex_;
    std::map<std::string, versioned_value, std::less<>> data_;
    std::uint64_t version_ = 0;
};

class memory_event_log final : public detail::event_log_core {
  public:
    memory_event_log(const event_log_settings& s, memory_kv_store& kv, fault_counters& faults)
        : event_log_core(s.partitions),
          settings_(s),
          kv_(kv),
          faults_(faults),
          parts_(static_cast<std::size_t>(s.partitions)) {}

    void append_with(int partition, std::vector<event_record> events, std::vector<kv_write> writes,
                     append_with_callback done) override {
        if (partition < 0 || partition >= partition_count())
            return done(error(errc::argument_invalid, "No such partition."));
        if (fault_counters::take(faults_.appends)) return done(injected());
        // Nothing here can crash half-way, so "together" is: the writes, then the events, with
        // no other append_with in between (events follow the order of their records' changes).
        std::lock_guard order(with_mutex_);
        auto versions = kv_.apply_all(writes);
        if (!versions) return done(versions.error());
        store(partition, std::move(events),
              [&done, &versions](result<std::vector<std::uint64_t>> r) {
                  if (!r) return done(r.error());
                  done(appended{std::move(*r), std::move(*versions)});
              });
    }

    void append(int partition, std::vector<event_record> events, append_callback done) override {
        if (partition < 0 || partition >= partition_count())
            return done(error(errc::argument_invalid, "No such partition."));
        if (fault_counters::take(faults_.appends)) return done(injected());
        store(partition, std::move(events), std::move(done));
    }

    // An append once its fault check is done.
    void store(int partition, std::vector<event_record> events, append_callback done) {
        std::vector<std::uint64_t> sequences;
        std::uint64_t next;
        sys_time t;
        {
            std::lock_guard lock(mutex_);
            auto& p = parts_[static_cast<std::size_t>(partition)];
            t = stamp(partition, settings_.clock ? settings_.clock() : now());
            for (auto& e : events) {
                std::uint64_t seq = p.begin + p.events.size();
                p.bytes += event_size(e);
                if (e.stamp) {  // stored events are self-contained, as on disk
                    e.system_properties.insert(e.system_properties.end(), e.stamp->begin(),
                                               e.stamp->end());
                    e.stamp.reset();
                }
                p.events.push_back(stored_event{seq, t, std::move(e)});
                sequences.push_back(seq);
            }
            next = p.begin + p.events.size();
        }
        published(partition, next, t);
        done(std::move(sequences));
    }

    result<std::vector<stored_event>> read(int partition, std::uint64_t from,
                                           std::size_t max_events) override {
        IOTHUB_ASSERT_MAY_BLOCK();
        if (partition < 0 || partition >= partition_count())
            return error(errc::argument_invalid, "No such partition.");
        std::lock_guard lock(mutex_);
        const auto& p = parts_[static_cast<std::size_t>(partition)];
        std::vector<stored_event> out;
        for (auto i = std::max(from, p.begin) - p.begin;
             i < p.events.size() && out.size() < max_events; ++i)
            out.push_back(p.events[i]);
        return out;
    }

    void enforce_retention(sys_time now) override {
        const auto cutoff = now - settings_.retention.max_age;
        for (int i = 0; i < partition_count(); ++i) {
            std::uint64_t begin;
            {
                std::lock_guard lock(mutex_);
                auto& p = parts_[static_cast<std::size_t>(i)];
                auto too_big = [&] {
                    return settings_.retention.max_bytes_per_partition > 0 &&
                           p.bytes > settings_.retention.max_bytes_per_partition;
                };
                while (!p.events.empty() &&
                       (p.events.front().enqueued_time < cutoff || too_big())) {
                    p.bytes -= event_size(p.events.front().record);
                    p.events.pop_front();
                    ++p.begin;
                }
                begin = p.begin;
            }
            trimmed(i, begin);
        }
    }

  protected:
    result<sys_time> enqueued_time_of(int partition, std::uint64_t sequence) override {
        std::lock_guard lock(mutex_);
        const auto& p = parts_.at(static_cast<std::size_t>(partition));
        if (sequence < p.begin || sequence >= p.begin + p.events.size())
            return error(errc::not_found, "No such event.");
        return p.events[sequence - p.begin].enqueued_time;
    }

  private:
    struct partition {
        std::uint64_t begin = 0;
        std::uint64_t bytes = 0;
        std::deque<stored_event> events;
    };
    event_log_settings settings_;
    memory_kv_store& kv_;
    fault_counters& faults_;
    std::mutex with_mutex_;
    std::mutex mutex_;
    std::vector<partition> parts_;
};

class memory_engine final : public engine, public fault_injection {
  public:
    explicit memory_engine(const event_log_settings& events)
        : settings_(events),
          kv_(faults_),
          events_(events, kv_, faults_),
          hub_events_(events, kv_, faults_) {}
    void fail_appends(std::size_t count) override { faults_.appends = count; }
    void fail_kv_writes(std::size_t count) override { faults_.kv_writes = count; }
    kv_store& kv() override { return kv_; }
    event_log& events() override { return events_; }
    event_log& hub_events() override { return hub_events_; }
    result<event_log*> log(std::string_view name, bool) override {
        if (auto bad = check_log_name(name); !bad) return bad.error();
        std::lock_guard lock(logs_mutex_);
        auto& l = logs_[std::string(name)];
        if (!l) l = std::make_unique<memory_event_log>(settings_, kv_, faults_);
        return l.get();
    }
    result<void> drop_log(std::string_view name) override {
        std::lock_guard lock(logs_mutex_);
        if (auto it = logs_.find(name); it != logs_.end()) logs_.erase(it);
        return {};
    }
    void enforce_retention(sys_time now) override {
        events_.enforce_retention(now);
        hub_events_.enforce_retention(now);
        std::lock_guard lock(logs_mutex_);
        for (auto& [name, l] : logs_) l->enforce_retention(now);
    }
    result<void> flush() override { return {}; }

  private:
    event_log_settings settings_;
    fault_counters faults_;
    memory_kv_store kv_;
    memory_event_log events_;
    memory_event_log hub_events_;
    std::mutex logs_mutex_;
    std::map<std::string, std::unique_ptr<memory_event_log>, std::less<>> logs_;
};

}  // namespace

std::unique_ptr<engine> open_memory(const event_log_settings& events) {
    return std::make_unique<memory_engine>(events);
}

fault_injection* faults_of(engine& e) {
    return dynamic_cast<fault_injection*>(&e);
}

}  // namespace iothub::storage
