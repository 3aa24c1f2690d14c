// The partitioned, append-only event log behind device-to-cloud telemetry and the routed event
// sources (twin changes, lifecycle and connection-state events).
//
// Model (Event Hubs'): a fixed number of partitions; each event in a partition has a sequence
// number (dense, from 0, never reused, not even after retention removed everything) and the time
// it was enqueued, which never decreases within a partition. An event's Event Hubs offset is its
// sequence number written as text; clients treat offsets as opaque. Events are kept until
// retention removes the oldest, by age or by the partition's size; a reader that asks for a
// removed position resumes at the oldest event still retained.
//
// Durability: `append` completes only when its events are durable (fsync'ed when sync is on), and
// one sync covers every append that arrived while the previous one ran (group commit), so a D2C
// PUBACK can wait for durability without costing one fsync per message. Readers never see an event
// before it is durable.
//
// Thread safety: all methods may be called from any thread. Append completions and watch
// notifications run on the log's writer thread (the in-memory log: the appending thread); they must
// only post work elsewhere and must not call watch/unwatch.
#pragma once

#include "common/error.hpp"
#include "common/time.hpp"
#include "storage/kv_store.hpp"

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace iothub::storage {

using property_list = std::vector<std::pair<std::string, std::string>>;

struct event_record {
    std::string body;
    property_list application_properties;  // the device's own properties
    // AMQP properties and IoT Hub annotations by their wire names: message-id, correlation-id,
    // user-id, to, content-type, content-encoding, absolute-expiry-time,
    // iothub-connection-device-id, iothub-connection-module-id, iothub-connection-auth-method,
    // iothub-connection-auth-generation-id, iothub-message-source, ...
    property_list system_properties;
    // Properties every message of a connection shares (who sent it), built once per connection
    // and stored after system_properties; reading an event back folds them into
    // system_properties.
    std::shared_ptr<const property_list> stamp;
};

// The value of the first property named `name` (exactly), or null.
const std::string* find_property(const property_list& list, std::string_view name);

// Body, property names and values (the stamp excluded): what counts against the 256 KB message
// limit and for size-based retention.
std::size_t event_size(const event_record& e);

struct stored_event {
    std::uint64_t sequence_number = 0;
    sys_time enqueued_time;
    event_record record;
};

struct partition_info {
    std::uint64_t begin_sequence_number = 0;  // oldest retained
    std::uint64_t next_sequence_number = 0;   // what the next append receives
    sys_time last_enqueued_time;              // of next_sequence_number - 1, when not empty
    bool empty() const { return begin_sequence_number == next_sequence_number; }
};

struct retention_policy {
    std::chrono::seconds max_age = std::chrono::hours(24);
    std::uint64_t max_bytes_per_partition = 0;  // 0: no size limit
};

struct event_log_settings {
    int partitions = 4;  // 1 to 32; fixed for the life of a data directory
    retention_policy retention;
    // Group commit adapts to load. Appends that find no sync in flight are committed at once,
    // unless the previous commit began less than `group_commit_delay` ago: then they wait out the
    // rest of that interval (or until `group_commit_events` have queued), so the log syncs at most
    // once per interval. An fsync costs CPU in the kernel whatever it carries; pacing them keeps
    // the cost per message flat at moderate rates while an idle log adds no latency. Appends that
    // arrive during a sync share the next one.
    std::chrono::microseconds group_commit_delay{1000};
    std::size_t group_commit_events = 64;
    // Where enqueued times come from (the wall clock when unset); tests set their own.
    std::function<sys_time()> clock;
};

// Where a reader starts, as Event Hubs filters express it.
struct read_position {
    enum class kind : std::uint8_t { earliest, latest, sequence, enqueued_time };
    kind what = kind::latest;
    std::uint64_t sequence = 0;  // for sequence: start after it (or at it when inclusive)
    sys_time time;               // for enqueued_time: the first event enqueued after it
    bool inclusive = false;

    static read_position earliest() { return {kind::earliest}; }
    static read_position latest() { return {kind::latest}; }
    static read_position at_sequence(std::uint64_t s) { return {kind::sequence, s, {}, true}; }
    static read_position after_sequence(std::uint64_t s) { return {kind::sequence, s, {}, false}; }
    static read_position after_time(sys_time t) { return {kind::enqueued_time, 0, t, false}; }
};

// What an append_with() committed: the events' sequence numbers, and the writes' new versions
// (one per write, 0 for removes).
struct appended {
    std::vector<std::uint64_t> sequences;
    std::vector<std::uint64_t> versions;
};

class event_log {
  public:
    using append_callback = std::function<void(result<std::vector<std::uint64_t>>)>;
    using append_with_callback = std::function<void(result<appended>)>;

    virtual ~event_log() = default;

    virtual int partition_count() const = 0;

    // Appends events to one partition, assigning sequence numbers and the enqueued time. `done`
    // receives the sequence numbers once all of them are durable, or the error that kept them
    // from being written (then none of them was).
    virtual void append(int partition, std::vector<event_record> events, append_callback done) = 0;

    // Appends `events` and applies `writes` to the same engine's kv store in one atomic commit,
    // with one sync: both are durable or neither is (a record and the event that reports its
    // change). Each write's condition is checked as kv_store::apply checks it, against the store
    // as the commit finds it; if one does not hold, nothing is written and `done` gets that
    // write's error. `done` runs on the log's thread; it must only post work.
    virtual void append_with(int partition, std::vector<event_record> events,
                             std::vector<kv_write> writes, append_with_callback done) = 0;

    // The sequence number a reader starting at `position` reads first.
    virtual std::uint64_t resolve(int partition, const read_position& position) = 0;

    // Up to `max_events` events from `from_sequence` on (clamped to the oldest retained).
    virtual result<std::vector<stored_event>> read(int partition, std::uint64_t from_sequence,
                                                   std::size_t max_events) = 0;

    virtual partition_info info(int partition) = 0;

    // Calls `notify` once, as soon as the partition holds an event with sequence number >=
    // `sequence` (at once if it already does). Returns a token for `unwatch`, which guarantees
    // that `notify` is not running and will not run once it returns.
    virtual std::uint64_t watch(int partition, std::uint64_t sequence,
                                std::function<void()> notify) = 0;
    virtual void unwatch(std::uint64_t token) = 0;

    // Drops events older than the policy's age or beyond its size, oldest first. The hub calls it
    // periodically, off the network shards.
    virtual void enforce_retention(sys_time now) = 0;
};

// Stable, platform-independent device-to-partition mapping (FNV-1a over the device id), so a
// device's messages stay in order in one partition across restarts and nodes.
int partition_for(std::string_view device_id, int partitions);

}  // namespace iothub::storage
