// The one way the RocksDB engine writes a batch (its kv store and its event logs alike).
//
// When several threads write at once, RocksDB makes one of them the leader of a write group,
// which copies the others' batches into its own and writes them as one. Debian's RocksDB is not
// built for ThreadSanitizer, so that hand-off, made with atomics TSan cannot see, reads to it as
// the leader's copy racing the follower's filling of its batch. Every such report has this
// function on the leader's stack (it is never inlined), and tests/tsan.supp names it; races in
// the engine's own code around the write are still reported.
#pragma once

#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <rocksdb/write_batch.h>

namespace iothub::storage::detail {

[[gnu::noinline]] rocksdb::Status write_to_rocksdb(rocksdb::DB& db,
                                                   const rocksdb::WriteOptions& options,
                                                   rocksdb::WriteBatch& batch);

}  // namespace iothub::storage::detail
