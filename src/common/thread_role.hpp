// Which threads may block. The network threads (the shards) serve many connections each and must
// never wait on storage or the disk; everything that blocks belongs on the blocking pool. Storage
// engines check it in debug builds, so a blocking call that slipped onto a network thread fails
// the tests that reach it.
#pragma once

#include <cassert>
#include <string_view>

namespace iothub {

// Marks the calling thread as a network thread (the runtime does, for each shard).
void mark_network_thread() noexcept;
bool on_network_thread() noexcept;

// Names the calling thread for `top -H`, `ps -L`, perf and debuggers ("shard-0", "log:events",
// "route:hot"); cut to the 15 characters the kernel keeps.
void name_this_thread(std::string_view name) noexcept;

}  // namespace iothub

// Debug builds: abort when a call that blocks runs on a network thread.
#define IOTHUB_ASSERT_MAY_BLOCK() \
    assert(!::iothub::on_network_thread() && "a blocking call on a network thread")
