// What an endpoint's delivery worker hands messages to: one implementation per endpoint type
// (the hub's own logs, webhooks, Event Grid subscriptions, storage containers, Kafka, external
// Event Hubs). A sink is used by one worker thread only and may block (network, disk).
#pragma once

#include "common/error.hpp"
#include "common/time.hpp"
#include "storage/event_log.hpp"
#include "storage/kv_store.hpp"

#include <cstdint>
#include <map>
#include <span>
#include <vector>

namespace iothub::routing {

class sink {
  public:
    virtual ~sink() = default;

    // `events` were selected, in order, from one partition of a source log (possibly none: the
    // worker read messages not meant for this endpoint); `sequence_numbers[i]` is events[i]'s in
    // that partition, the same on every retry (endpoints that drop repeats key on it; callers
    // that have none pass an empty span); `cursor` records that the source is handled up to there.
    // The sink makes `cursor` durable no earlier than `events` are durable at the endpoint: with
    // them (the hub's logs), after them, or with a later batch (storage containers). On failure the
    // worker retries the same messages later, so an endpoint may see some twice (at least once),
    // never a gap.
    virtual result<void> deliver(int partition, std::vector<storage::event_record> events,
                                 std::span<const std::uint64_t> sequence_numbers,
                                 storage::kv_write cursor) = 0;
    // The same without sequence numbers.
    result<void> deliver(int partition, std::vector<storage::event_record> events,
                         storage::kv_write cursor) {
        return deliver(partition, std::move(events), {}, std::move(cursor));
    }

    // Called when the worker is idle, and at least once a second: writes what is due (batches
    // whose time came, cursors held back). `final` at stop: write every cursor that may be.
    virtual result<void> flush(sys_time now, bool final) = 0;
};

// Cursors a sink holds until it may write them, the latest per source and partition.
class held_cursors {
  public:
    void hold(storage::kv_write cursor) { held_[cursor.key] = std::move(cursor); }
    void forget(const std::string& key) { held_.erase(key); }
    bool empty() const { return held_.empty(); }
    // Writes them in one commit; on failure they stay held.
    result<void> write(storage::kv_store& kv) {
        if (held_.empty()) return {};
        std::vector<storage::kv_write> writes;
        for (auto& [k, w] : held_) writes.push_back(w);
        for (auto& r : kv.apply(writes))
            if (!r) return r.error();
        held_.clear();
        return {};
    }

  private:
    std::map<std::string, storage::kv_write> held_;
};

}  // namespace iothub::routing
