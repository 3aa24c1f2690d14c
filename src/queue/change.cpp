#include "queue/peek_lock_queue.hpp"

namespace iothub::queue {

result<void> commit(storage::kv_store& kv, const change& c) {
    if (c.writes.empty()) return {};
    for (auto& r : kv.apply(c.writes))
        if (!r) return r.error();
    return {};
}

}  // namespace iothub::queue
