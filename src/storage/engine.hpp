// Opens the storage the hub runs on and hands out its interfaces. The embedded engine (RocksDB,
// one database per data directory) is the default; the in-memory engine keeps nothing across
// restarts and exists for throwaway hubs (`--storage memory`) and tests; the JetStream engine keeps
// everything in a NATS JetStream cluster, so any number of hub nodes share one hub's state and
// none of them holds anything a restart would lose.
#pragma once

#include "common/error.hpp"
#include "nats/settings.hpp"
#include "storage/blob_store.hpp"
#include "storage/event_log.hpp"
#include "storage/kv_store.hpp"

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace iothub::storage {

class engine {
  public:
    virtual ~engine() = default;
    virtual kv_store& kv() = 0;
    // Device-to-cloud telemetry.
    virtual event_log& events() = 0;
    // Events the hub raises about devices (twin changes; later lifecycle and connection state),
    // partitioned like telemetry, for routing to deliver where routes say.
    virtual event_log& hub_events() = 0;
    // Further logs, by name (letters, digits, '.', '_', '-'; not "events" or "hub"): routing's
    // ingest log and the event hubs routing endpoints host. Opened, and created on first use,
    // with the telemetry log's partitions and retention; the reference stays valid until
    // drop_log(name) or the engine ends. Opening blocks (it may create files). A log that is not
    // `synced` commits append_with() without fsync (when storage syncs at all): for copies the
    // caller can make again from a synced source, written with their source position in the same
    // commit, so a power loss takes both or neither; its append() is synced all the same. The
    // first open decides.
    virtual result<event_log*> log(std::string_view name, bool synced = true) = 0;
    // Removes a named log and every event in it (its endpoint is gone). Sequence numbers are not
    // reused if the name comes back. The caller makes sure nothing uses the log any more.
    virtual result<void> drop_log(std::string_view name) = 0;
    // Retention over every log the engine has open.
    virtual void enforce_retention(sys_time now) = 0;
    // The engine's own state for operators, as JSON text (the JetStream engine: its streams, their
    // sizes, leaders and replicas); empty when it has nothing to say. May block.
    virtual std::string describe() { return {}; }
    // Blobs every node of a cluster reads (the JetStream engine's); null when the engine has none
    // and the hub keeps blob contents in files of its own.
    virtual blob_store* shared_blobs() { return nullptr; }
    // Makes everything written so far durable and quiesces background work; called at shutdown.
    virtual result<void> flush() = 0;
};

// errc::argument_invalid unless `name` can name a log (see engine::log).
result<void> check_log_name(std::string_view name);

struct rocksdb_settings {
    std::filesystem::path path;
    bool sync = true;  // fsync every commit (group-committed); off = survives kill -9 only
    int background_jobs = 2;
    event_log_settings events;
};

// errc::already_exists when another process has the database open.
result<std::unique_ptr<engine>> open_rocksdb(const rocksdb_settings& settings);

struct jetstream_settings {
    nats::connection_settings connection;
    // Names every stream and subject the hub uses ("<prefix>_STATE", "<prefix>.state", ...), so
    // several hubs can share one JetStream cluster. Letters, digits, '-' and '_'.
    std::string prefix = "IOTHUB";
    int replicas = 1;                         // 3 on a three-server cluster
    std::chrono::milliseconds timeout{5000};  // for each JetStream request
    std::size_t tail_cache_bytes = 8 << 20;   // recent events each node keeps per partition
    event_log_settings events;                // the clock is the streams' (not settable)
};

// Connects, creates the streams it needs (or checks them) and loads the state. Fails with
// errc::service_unavailable when no server or no JetStream quorum answers.
result<std::unique_ptr<engine>> open_jetstream(const jetstream_settings& settings);
std::unique_ptr<engine> open_memory(const event_log_settings& events = {});

// Faults the in-memory engine can be told to produce, so tests reach the paths where storage
// fails: the next `count` appends (to either event log) or kv writes fail with a server error and
// write nothing. Null for any other engine.
class fault_injection {
  public:
    virtual ~fault_injection() = default;
    virtual void fail_appends(std::size_t count) = 0;
    virtual void fail_kv_writes(std::size_t count) = 0;
};
fault_injection* faults_of(engine& e);

}  // namespace iothub::storage
