#include "connections/activity.hpp"

#include <charconv>

namespace iothub::connections {
namespace {
constexpr std::string_view prefix = "activity/";
}

result<void> activity_records::load() {
    std::string after;
    for (;;) {
        auto page = kv_.scan(prefix, after, 1000);
        if (!page) return page.error();
        for (const auto& e : *page) {
            std::int64_t ns = 0;
            const auto& v = e.data.value;
            auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), ns);
            if (ec == std::errc{} && p == v.data() + v.size())
                table_.restore_activity(e.key.substr(prefix.size()), ns);
        }
        if (page->size() < 1000) return {};
        after = page->back().key;
    }
}

result<void> activity_records::flush() {
    auto changed = table_.changed_activity();
    if (changed.empty()) return {};
    std::vector<storage::kv_write> writes;
    writes.reserve(changed.size());
    for (auto& [key, ns] : changed)
        writes.push_back({storage::kv_write::op::put, std::string(prefix) + key, std::to_string(ns),
                          storage::precondition::none()});
    for (auto& r : kv_.apply(writes))
        if (!r) return r.error();
    return {};
}

void activity_records::forget(const std::string& device_id, const std::string& module_id) {
    table_.forget(device_id, module_id);
    auto key = std::string(prefix) + device_id;
    if (!module_id.empty()) key += "/" + module_id;
    (void)kv_.remove(key);  // absent when it never connected: nothing to do
}

}  // namespace iothub::connections
