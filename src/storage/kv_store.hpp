// The versioned key-value store: the one interface through which the registry, twins, routes,
// enrollments and consumer checkpoints reach durable state.
//
// Every key carries a version that increases on each write, hub-wide (a later write to any key
// has a larger version than every earlier write), so a version can serve as an ETag and a deleted
// and re-created key never repeats an old one. Writes are conditional (compare-and-set), which is
// all the concurrency control callers get: there are no multi-key transactions beyond `apply`.
//
// Durability: when a write returns success it is in the write-ahead log; with `sync` on (the
// default) it has been fsync'ed and survives power loss, otherwise it survives a process crash
// (kill -9) but not a machine crash.
//
// Thread safety: every method may be called from any thread concurrently. Calls block on disk, so
// the network shards reach them through the runtime's blocking pool.
#pragma once

#include "common/error.hpp"

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace iothub::storage {

struct versioned_value {
    std::string value;
    std::uint64_t version = 0;
};

struct kv_entry {
    std::string key;
    versioned_value data;
};

// The condition a write needs. Failures map to distinct codes so callers can translate them into
// their domain's words (DeviceNotFound, DeviceAlreadyExists, PreconditionFailed):
//   absent  -> errc::already_exists when the key exists
//   exists  -> errc::not_found when the key is missing
//   version -> errc::not_found when missing, errc::precondition_failed when the version differs
class precondition {
  public:
    enum class kind : std::uint8_t { none, absent, exists, version };

    static precondition none() { return precondition(kind::none, 0); }
    static precondition absent() { return precondition(kind::absent, 0); }
    static precondition exists() { return precondition(kind::exists, 0); }
    static precondition version(std::uint64_t v) { return precondition(kind::version, v); }

    kind what() const { return kind_; }
    std::uint64_t expected_version() const { return version_; }

    // Checks this condition against the current state of a key.
    result<void> check(const std::optional<std::uint64_t>& current) const;

  private:
    precondition(kind k, std::uint64_t v) : kind_(k), version_(v) {}
    kind kind_;
    std::uint64_t version_;
};

struct kv_write {
    enum class op : std::uint8_t { put, remove };
    op operation = op::put;
    std::string key;
    std::string value;  // ignored for remove
    precondition condition = precondition::none();

    // Whether this write may go ahead given the key's current version (nullopt: absent). Every
    // engine decides with this, so they cannot disagree: the condition must hold, and a removal
    // needs something to remove.
    result<void> admissible(const std::optional<std::uint64_t>& current) const;
};

// A key another process changed (a node of the same cluster), as this process applied it.
struct kv_change {
    std::string key;
    std::optional<versioned_value> before;  // empty: it did not exist
    std::optional<versioned_value> after;   // empty: removed
};

class kv_store {
  public:
    virtual ~kv_store() = default;

    // Changes other processes make to the store (the other nodes of a cluster), in commit order,
    // once this process's reads see them; a single-process engine has none and never calls it.
    // `observer` runs on the engine's thread and must only post work. Set before serving.
    using change_observer = std::function<void(std::vector<kv_change> changes)>;
    virtual void observe_remote(change_observer observer) { (void)observer; }

    virtual result<std::optional<versioned_value>> get(std::string_view key) = 0;

    // Writes `value` if `condition` holds and returns the key's new version.
    result<std::uint64_t> put(std::string_view key, std::string_view value,
                              precondition condition = precondition::none());

    // Removes the key if `condition` holds; a missing key is errc::not_found whatever the
    // condition.
    result<void> remove(std::string_view key, precondition condition = precondition::none());

    // Checks every write's condition and commits the ones that hold together, atomically and with
    // a single sync. Returns one result per write, in order: the new version for puts, 0 for
    // removes, or the condition's error. Writes to the same key within one call are not allowed.
    virtual std::vector<result<std::uint64_t>> apply(std::span<const kv_write> writes) = 0;

    // Up to `limit` entries whose keys start with `prefix` and sort after `start_after` (bytewise),
    // in key order. Pass the last key of a page as `start_after` to get the next one.
    virtual result<std::vector<kv_entry>> scan(std::string_view prefix,
                                               std::string_view start_after, std::size_t limit) = 0;
};

}  // namespace iothub::storage
