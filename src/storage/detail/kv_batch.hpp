// kv writes that ride in the event log's RocksDB write batch (event_log::append_with), checked and
// versioned exactly as kv_store::apply does, so a record and the event reporting its change commit
// together with one sync.
#pragma once

#include "storage/kv_store.hpp"

#include <rocksdb/write_batch.h>

#include <functional>
#include <span>
#include <vector>

namespace iothub::storage::detail {

class kv_batch_writer {
  public:
    virtual ~kv_batch_writer() = default;

    struct staged {
        // Per group: the new versions (0 for removes), or the error of the first write whose
        // condition does not hold (then none of the group's writes is in the batch).
        std::vector<result<std::vector<std::uint64_t>>> groups;
        // Unlocks the keys; call once the batch is written (or has failed).
        std::function<void()> release;
    };

    // Locks every key the groups write (in one order, so no two stagings or applies deadlock),
    // checks each group's conditions all-or-nothing, later groups seeing earlier groups' writes,
    // and adds the admissible groups' writes to `batch`.
    virtual staged stage(const std::vector<std::span<const kv_write>>& groups,
                         rocksdb::WriteBatch& batch) = 0;
};

}  // namespace iothub::storage::detail
