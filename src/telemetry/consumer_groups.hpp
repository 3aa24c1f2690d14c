// The consumer groups of the telemetry stream (the Event Hubs-compatible endpoint's and the
// `/telemetry` API's): their names, the quota, and each group's stored checkpoint. One service for
// REST and AMQP alike, so both apply the same rules.
//
// Rules (Azure's): names of 1 to 50 letters, digits, `-`, `.`, `_` and `$`, compared without case;
// `$Default` always exists and cannot be deleted; at most `max_groups` groups, `$Default`
// included.
//
// Storage: one kv key, `cg/$index`, holds every group's name, so creating a group is one
// compare-and-set on it and two concurrent creates cannot both pass the quota (on one node or
// many). Checkpoints are `cg/<lower-case name>/checkpoint`. Hubs that stored a key per group
// (`cg/<name>`) are read into the index the first time it is needed.
//
// Thread safety: every method may be called from any thread. They block on storage.
#pragma once

#include "common/error.hpp"
#include "storage/kv_store.hpp"

#include <optional>
#include <string>
#include <vector>

namespace iothub::telemetry {

inline constexpr std::string_view default_consumer_group = "$Default";

class consumer_groups {
  public:
    consumer_groups(storage::kv_store& kv, std::size_t max_groups)
        : kv_(kv), max_groups_(max_groups) {}

    // errc::argument_invalid for a name outside the rules.
    static result<void> check_name(std::string_view name);

    // $Default first, then the others as they were named, in creation order.
    result<std::vector<std::string>> list();
    // True when it was created, false when it existed already. errc::quota_exceeded at the limit.
    result<bool> create(std::string_view name);
    // The group's name as created; errc::not_found when there is none.
    result<std::string> find(std::string_view name);
    // errc::argument_invalid for $Default, errc::not_found when there is none. Its checkpoint
    // goes with it.
    result<void> remove(std::string_view name);

    // The stored checkpoint text; nullopt when none was stored. errc::not_found for no group.
    result<std::optional<std::string>> checkpoint(std::string_view name);
    result<void> set_checkpoint(std::string_view name, std::string_view cursor);

    std::size_t max_groups() const { return max_groups_; }

  private:
    struct index {
        std::vector<std::string> names;        // without $Default
        std::optional<std::uint64_t> version;  // nullopt: not stored yet
    };
    result<index> load();

    storage::kv_store& kv_;
    std::size_t max_groups_;
};

}  // namespace iothub::telemetry
