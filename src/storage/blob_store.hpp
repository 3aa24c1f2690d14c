// Values too large for the kv store: uploaded files, routed blob batches, staged blocks. Keys are
// paths, segments separated by '/' (no empty, "." or ".." segment, no NUL or backslash). A put
// replaces a value whole: a reader sees the old value or the new one, never part of either; what a
// blob *is* (its listing, ETag, MD5) stays in the kv store, written after its content.
//
// Engines: files under a directory (the embedded hub: `<root>/<key>`, fsync'ed then renamed into
// place), memory (tests), and JetStream (cluster mode: every node reads what any node wrote).
//
// Thread safety: every method may be called from any thread; they block.
#pragma once

#include "common/error.hpp"
#include "common/time.hpp"

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace iothub::storage {

struct blob_entry {
    std::string key;
    std::uint64_t size = 0;
    sys_time modified;
};

class blob_store {
  public:
    virtual ~blob_store() = default;
    // errc::argument_invalid for a key that is not a safe path; errc::already_exists when a key
    // is a prefix of another's ("a" and "a/b" cannot both hold values).
    virtual result<void> put(std::string_view key, std::string_view bytes) = 0;
    // errc::not_found when there is none.
    virtual result<std::string> get(std::string_view key) = 0;
    // Absent is fine.
    virtual result<void> remove(std::string_view key) = 0;
    // Every value under `prefix` (a path ending in '/', or empty for all), in no given order.
    virtual result<std::vector<blob_entry>> list(std::string_view prefix) = 0;
};

// errc::argument_invalid unless `key` is a safe path (see above).
result<void> check_blob_key(std::string_view key);

// Files under `root` (created when missing); stale temporary files of a crash are removed.
result<std::unique_ptr<blob_store>> open_file_blobs(const std::filesystem::path& root);
std::unique_ptr<blob_store> open_memory_blobs();
// `inner`'s values under `prefix` + "/" (one shared store serving several owners).
std::unique_ptr<blob_store> prefixed_blobs(blob_store& inner, std::string prefix);

}  // namespace iothub::storage
