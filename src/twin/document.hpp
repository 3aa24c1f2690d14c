// The JSON rules of a twin's three sections (tags, desired and reported properties): what a patch
// may contain, how it merges, how `$metadata` follows it, and how big a section may grow. Pure
// functions over Boost.JSON values, no storage, so every rule is unit-tested on its own.
//
// Azure's rules, kept here: keys are case-sensitive, at most 1 KB, without control characters,
// '.', '$' or space; strings at most 4 KB; integers within +/-2^52; objects nest at most 10 deep
// below the section; a section's size is the sum of its keys' and values' sizes (numbers 8 bytes,
// booleans 4, strings their characters). A patch merges recursively, `null` deletes, and any
// non-object value replaces what was there. Arrays are values (Azure accepts them since 2021).
#pragma once

#include "common/error.hpp"

#include <boost/json/object.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace iothub::twin {

enum class section : std::uint8_t { tags, desired, reported };
std::string_view name_of(section s);

struct twin_limits {
    std::size_t tags_bytes = 8 * 1024;
    std::size_t desired_bytes = 32 * 1024;
    std::size_t reported_bytes = 32 * 1024;
    std::size_t depth = 10;
    std::size_t key_bytes = 1024;
    std::size_t string_value_bytes = 4 * 1024;

    std::size_t bytes_for(section s) const {
        return s == section::tags      ? tags_bytes
               : s == section::desired ? desired_bytes
                                       : reported_bytes;
    }
};

// Checks keys, value types and sizes, and depth of a patch or replacement for `s`. The
// section-level `$version` and `$metadata` a client echoes back from a read are not part of the
// patch; callers remove them first with strip_reserved().
result<void> check_patch(const boost::json::object& patch, section s, const twin_limits& limits);

// Removes `$version` and `$metadata` from the root of a section patch.
boost::json::object strip_reserved(boost::json::object patch);

// Merges `patch` into `doc` and records the change in `meta` (the `$metadata` mirror of `doc`):
// every level the patch touches gets `$lastUpdated` = `when`, and, when `version` is given (desired
// properties), `$lastUpdatedVersion`. Nulls delete; nothing null is ever stored.
void apply_patch(boost::json::object& doc, boost::json::object& meta,
                 const boost::json::object& patch, std::string_view when,
                 std::optional<std::uint64_t> version);

// The size Azure charges a section (see above).
std::size_t size_of(const boost::json::object& doc);

// A patch that turns `before` into `after` (removed keys as null): what a device hears when the
// back end replaces its desired properties.
boost::json::object diff(const boost::json::object& before, const boost::json::object& after);

}  // namespace iothub::twin
