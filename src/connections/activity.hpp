// lastActivityTime that survives a restart: the connection table's activity times are written
// behind, in one batch every few seconds (flush), and read back at start (load). A crash loses at
// most the moves of the last interval: the time shown is then a few seconds early, which is what
// Azure's own lastActivityTime is too (it is updated lazily). Records are `activity/<d>[/<m>]`,
// decimal nanoseconds since the epoch.
//
// Thread safety: every method may be called from any thread; they block on storage.
#pragma once

#include "connections/connections.hpp"
#include "storage/kv_store.hpp"

namespace iothub::connections {

class activity_records {
  public:
    activity_records(connection_table& table, storage::kv_store& kv) : table_(table), kv_(kv) {}

    result<void> load();
    // Writes the times that moved since the last flush.
    result<void> flush();
    // The identity was deleted: its record goes.
    void forget(const std::string& device_id, const std::string& module_id);

  private:
    connection_table& table_;
    storage::kv_store& kv_;
};

}  // namespace iothub::connections
