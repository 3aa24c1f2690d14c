// Blob containers the hub writes itself, beside device uploads: routing's storage-container
// endpoints put their batches here, and the Blob endpoint lists and serves them to
// `@azure/storage-blob` (List Blobs, Get Blob, Get Blob Properties) under an account SAS.
//
// Storage: contents go to a blob store (`<container>/<name>`: files of the node, or JetStream in
// cluster mode), then are recorded in the kv store (`rblob/<container>/<name>`: size, time, ETag,
// MD5), so a listed blob is always whole and the listing is one ordered scan. A crash between the
// two leaves an unlisted value that the next write of the name replaces.
//
// The account SAS (`iothub connection-string --storage`) is signed with a shared access policy's
// key, which the token names (`skn`): rotating the key revokes it, and any policy with
// ServiceConnect may read. Its other fields are Azure's (sv, ss, srt, sp, se, spr, sig).
//
// Thread safety: every method may be called from any thread; put/list/read block.
#pragma once

#include "auth/policy.hpp"
#include "common/error.hpp"
#include "common/time.hpp"
#include "storage/blob_store.hpp"
#include "storage/kv_store.hpp"

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace iothub::file_upload {

struct stored_blob {
    std::string container;
    std::string name;
    std::uint64_t size = 0;
    sys_time last_modified;
    std::string etag;  // quoted
    std::string content_md5;
    std::string content_type;
};

struct blob_listing {
    std::vector<stored_blob> blobs;
    std::string next_marker;  // empty: no more
};

class blob_containers {
  public:
    blob_containers(storage::kv_store& kv, storage::blob_store& blobs);

    // Writes a whole blob; errc::argument_invalid for an unsafe container or name. Blocks.
    result<stored_blob> put(std::string_view container, std::string_view name,
                            std::string_view bytes, std::string_view content_type, sys_time now);
    // Whether a blob of that name is listed. Blocks.
    result<bool> exists(std::string_view container, std::string_view name);
    // Blobs whose names start with `prefix`, in name order, after `marker`. Blocks.
    result<blob_listing> list(std::string_view container, std::string_view prefix,
                              std::string_view marker, std::size_t max);
    result<stored_blob> properties(std::string_view container, std::string_view name);
    result<std::string> read(std::string_view container, std::string_view name);

  private:
    storage::kv_store& kv_;
    storage::blob_store& blobs_;
};

// An account SAS for reading every container: the query string (no leading '?') that goes in a
// connection string's SharedAccessSignature.
std::string sign_account_sas(const auth::access_policy& policy, sys_time expiry);
// Checks the decoded query of a request against the hub's policies: a known policy holding
// ServiceConnect, its primary or secondary key, not expired, and `permission` ('r' read,
// 'l' list) granted. errc::unauthorized with the reason otherwise.
result<void> check_account_sas(const std::vector<std::pair<std::string, std::string>>& query,
                               const auth::policy_set& policies, char permission, sys_time now);

}  // namespace iothub::file_upload
