#include "common/thread_role.hpp"

#include <algorithm>
#include <cstring>
#include <pthread.h>

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

void name_this_thread(std::string_view name) noexcept {
    char buf[16] = {};
    std::memcpy(buf, name.data(), std::min(name.size(), sizeof buf - 1));
    (void)pthread_setname_np(pthread_self(), buf);
}

}  // namespace iothub
