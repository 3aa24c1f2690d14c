// The partitioned, append-only event log behind device-to-cloud telemetry and the routed event
// sources (twin changes, lifecycle and connection-state events).
//
// Model (Event Hubs'): a fixed number of partitions; each event in a partition has a sequence
// number (dense, starting at 0, never reused), an offset (an opaque, increasing position that
// readers hand back to resume) and the time it was enqueued. Events are kept until retention
// removes the oldest, by age or by the partition's total size; readers that ask for a removed
// position resume at the oldest event still retained.
//
// Durability: `append` completes only when its events are durable (fsync'ed when sync is on), and
// one sync covers every append that arrived while the previous sync ran (group commit), so a D2C
// PUBACK can wait for durability without costing one fsync per message.
//
// Thread safety: all methods may be called from any thread. Completions and watch notifications run
// on the log's own threads; callers post back to their own executor.
#pragma once

#include "common/error.hpp"
#include "common/time.hpp"

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace iothub::storage {

using property_list = std::vector<std::pair<std::string, std::string>>;

struct event_record {
    std::string body;
    property_list application_properties;  // the device's own properties
    property_list system_properties;  // message-id, content-type, iothub-connection-device-id..
};

struct stored_event {
    std::uint64_t sequence_number = 0;
    std::uint64_t offset = 0;
    sys_time enqueued_time;
    event_record record;
};

struct partition_info {
    std::uint64_t begin_sequence_number = 0;  // oldest retained event
    std::uint64_t next_sequence_number = 0;   // what the next append receives
    std::uint64_t last_offset = 0;
    sys_time last_enqueued_time;
    bool empty() const { return begin_sequence_number == next_sequence_number; }
};

struct retention_policy {
    std::chrono::seconds max_age = std::chrono::hours(24);
    std::uint64_t max_bytes_per_partition = 0;  // 0: no size limit
};

// Where a reader starts, as Event Hubs filters express it.
struct read_position {
    enum class kind : std::uint8_t { earliest, latest, sequence, offset, enqueued_time };
    kind what = kind::latest;
    std::uint64_t value = 0;  // sequence number or offset
    sys_time time;            // for enqueued_time
    bool inclusive = false;   // ">=" rather than ">"
};

class event_log {
  public:
    using append_callback = std::function<void(result<std::vector<std::uint64_t>>)>;

    virtual ~event_log() = default;

    virtual int partition_count() const = 0;

    // Appends events to one partition, stamping sequence numbers, offsets and the enqueued time.
    // `done` receives the assigned sequence numbers once all of them are durable, or the error
    // that kept them from being written (then none of them was).
    virtual void append(int partition, std::vector<event_record> events, append_callback done) = 0;

    // The first sequence number at or after `position` that a reader should get next.
    virtual result<std::uint64_t> resolve(int partition, const read_position& position) = 0;

    // Up to `max_events` events starting at `from_sequence` (clamped to the oldest retained).
    virtual result<std::vector<stored_event>> read(int partition, std::uint64_t from_sequence,
                                                   std::size_t max_events) = 0;

    virtual partition_info info(int partition) = 0;

    // Calls `notify` once, as soon as the partition holds an event at or after `sequence`
    // (immediately if it already does). Returns a token for `unwatch`.
    virtual std::uint64_t watch(int partition, std::uint64_t sequence,
                                std::function<void()> notify) = 0;
    virtual void unwatch(int partition, std::uint64_t token) = 0;

    // Drops events older than the policy's age or beyond its size, oldest first.
    virtual void enforce_retention(sys_time now) = 0;
};

}  // namespace iothub::storage
