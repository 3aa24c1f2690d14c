// The event log on RocksDB: one column family per partition ("<name>.<n>"), key = the big-endian
// sequence number, value = enqueued time + encoded record. One writer thread takes every pending
// append, writes them in one batch and syncs once (group commit). Each partition's next sequence
// number is kept in the meta column family in the same batch, so numbers are never reused even
// after retention emptied a partition.
#pragma once

#include "storage/detail/event_log_core.hpp"
#include "storage/detail/kv_batch.hpp"

#include <rocksdb/db.h>

#include <condition_variable>
#include <thread>

namespace iothub::storage::detail {

class rocksdb_event_log final : public event_log_core {
  public:
    // `name` prefixes the log's column families and meta keys, so one database holds several logs.
    // `kv` is the engine's kv store, which append_with writes through. With `sync`, commits are
    // fsynced, except those of append_with when `sync_copies` is false (copies written with their
    // source position, which a crash loses together).
    static result<std::unique_ptr<rocksdb_event_log>> open(
        const std::string& name, rocksdb::DB* db,
        std::vector<rocksdb::ColumnFamilyHandle*> partitions, rocksdb::ColumnFamilyHandle* meta,
        const event_log_settings& settings, bool sync, kv_batch_writer* kv,
        bool sync_copies = true);
    ~rocksdb_event_log() override;

    void append(int partition, std::vector<event_record> events, append_callback done) override;
    void append_with(int partition, std::vector<event_record> events, std::vector<kv_write> writes,
                     append_with_callback done) override;
    result<std::vector<stored_event>> read(int partition, std::uint64_t from,
                                           std::size_t max_events) override;
    void enforce_retention(sys_time now) override;

    // Stops the writer after the appends already queued are written.
    void stop();

  protected:
    result<sys_time> enqueued_time_of(int partition, std::uint64_t sequence) override;

  private:
    rocksdb_event_log(std::string name, rocksdb::DB* db,
                      std::vector<rocksdb::ColumnFamilyHandle*> partitions,
                      rocksdb::ColumnFamilyHandle* meta, const event_log_settings& settings,
                      bool sync, kv_batch_writer* kv, bool sync_copies);
    void run_writer();
    void enqueue(int partition, std::vector<event_record> events, std::vector<kv_write> writes,
                 bool sync, append_with_callback done);

    struct pending {
        int partition;
        std::vector<event_record> events;
        std::vector<kv_write> writes;  // committed with the events (append_with)
        bool sync;                     // its commit is fsynced (when the log syncs at all)
        append_with_callback done;
    };
    // Waits briefly for more appends while the queue is small (see event_log_settings).
    void linger(std::unique_lock<std::mutex>& lock);

    std::string name_;
    rocksdb::DB* db_;
    bool sync_copies_;
    std::vector<rocksdb::ColumnFamilyHandle*> partitions_;  // one column family each
    rocksdb::ColumnFamilyHandle* meta_;
    event_log_settings settings_;
    rocksdb::WriteOptions write_options_;
    kv_batch_writer* kv_;  // the engine's kv store, for append_with

    std::mutex queue_mutex_;
    std::condition_variable queue_cv_;
    std::vector<pending> queue_;
    std::size_t queued_events_ = 0;
    std::chrono::steady_clock::time_point last_commit_;  // when the previous batch was taken
    // What the writer waits for, so appenders wake it only when it matters: a context switch per
    // message would cost more than the fsync it shares.
    enum class writer_state { working, idle, lingering } writer_state_ = writer_state::working;
    bool stopping_ = false;
    std::thread writer_;
    std::vector<std::uint64_t> next_;  // writer thread only: next sequence per partition
    std::mutex retention_mutex_;       // one retention pass at a time

    // Size retention counts stored bytes exactly: RocksDB's approximate range sizes for what is
    // still in the memtable come from skiplist sampling and were off by several times either way.
    // Each partition keeps the span [from, to) it has summed; a pass adds what was appended since
    // and subtracts what it drops, so every event is read about twice in its life, and only the
    // first pass after opening reads back up to the limit from the newest event.
    struct size_window {
        bool known = false;
        std::uint64_t from = 0, to = 0, bytes = 0;
    };
    std::vector<size_window> sizes_;  // under retention_mutex_
    std::uint64_t size_cut(int partition, std::uint64_t begin, std::uint64_t next,
                           std::uint64_t age_cut);
};

}  // namespace iothub::storage::detail
