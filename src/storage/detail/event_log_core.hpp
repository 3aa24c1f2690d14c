// What every event_log engine shares: per-partition positions, watchers, and resolving a read
// position (binary search over enqueued times, which never decrease within a partition).
#pragma once

#include "storage/event_log.hpp"

#include <spdlog/spdlog.h>

#include <map>
#include <mutex>

namespace iothub::storage::detail {

// Hands an append's outcome to its caller. Completions are the callers' code; one that throws
// must not end the engine's thread that runs it, which every later append depends on.
template <class Callback, class Result>
void tell(const Callback& done, Result r) {
    try {
        done(std::move(r));
    } catch (const std::exception& e) {
        spdlog::error("an event log completion threw: {}", e.what());
    } catch (...) {
        spdlog::error("an event log completion threw");
    }
}

class event_log_core : public event_log {
  public:
    explicit event_log_core(int partitions) : parts_(static_cast<std::size_t>(partitions)) {}

    int partition_count() const override { return static_cast<int>(parts_.size()); }
    std::uint64_t resolve(int partition, const read_position& position) override;
    partition_info info(int partition) override;
    std::uint64_t watch(int partition, std::uint64_t sequence,
                        std::function<void()> notify) override;
    void unwatch(std::uint64_t token) override;

  protected:
    // The enqueued time of a retained event, for resolving time positions.
    virtual result<sys_time> enqueued_time_of(int partition, std::uint64_t sequence) = 0;

    // Engines call these after making events durable or removing them.
    void published(int partition, std::uint64_t next, sys_time last_time);
    void trimmed(int partition, std::uint64_t begin);
    void load(int partition, partition_info state);
    // Gives the enqueued time for the next batch of a partition: now, but never earlier than the
    // last one, so times stay ordered even if the wall clock steps back.
    sys_time stamp(int partition, sys_time now);

  private:
    struct watcher {
        int partition;
        std::uint64_t sequence;
        std::function<void()> notify;
    };

    std::mutex mutex_;
    std::vector<partition_info> parts_;
    std::map<std::uint64_t, watcher> watchers_;
    std::uint64_t next_token_ = 1;
    std::mutex firing_;  // held while notifications run, so unwatch can wait them out
};

}  // namespace iothub::storage::detail
