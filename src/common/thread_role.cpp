#include "common/thread_role.hpp"

namespace iothub {
namespace {
thread_local bool network_thread = false;
}

void mark_network_thread() noexcept {
    network_thread = true;
}

bool on_network_thread() noexcept {
    return network_thread;
}

}  // namespace iothub
