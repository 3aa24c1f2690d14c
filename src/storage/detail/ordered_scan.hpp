// kv_store::scan over an ordered in-memory map: what the memory engine and the JetStream engine
// (whose nodes keep the state in memory) both answer scans with.
#pragma once

#include "storage/kv_store.hpp"

#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace iothub::storage::detail {

inline std::vector<kv_entry> ordered_scan(
    const std::map<std::string, versioned_value, std::less<>>& data, std::string_view prefix,
    std::string_view start_after, std::size_t limit) {
    std::vector<kv_entry> out;
    auto it = start_after.empty() || start_after < prefix ? data.lower_bound(prefix)
                                                          : data.upper_bound(start_after);
    for (; it != data.end() && out.size() < limit; ++it) {
        if (it->first.compare(0, prefix.size(), prefix) != 0) break;
        out.push_back(kv_entry{it->first, it->second});
    }
    return out;
}

}  // namespace iothub::storage::detail
