// File upload (Azure IoT Hub's "upload to blob"): the upload sessions a device opens, the blob
// store the hub itself serves in place of an Azure Storage account, and the file-notification
// stream the back end reads.
//
// Flow (Azure's): a device asks for an upload (`POST /devices/{id}/files`) and gets a
// correlation id and a SAS for one blob, `{container}/{deviceId}/{blobName}`; it uploads with the
// Azure Storage client (Put Blob, or Put Block then Put Block List), against this hub's HTTPS
// port; then it reports the outcome with the correlation id. A success becomes a file
// notification: a durable record locked, completed, abandoned or rejected like C2D feedback.
//
// Storage: sessions, blob metadata, notifications and the SAS signing secret are kv_store
// records (`fileup/`, `fileblob/`, `filenotif/`, `fileupload/secret`), so they survive restarts.
// Blob contents are in a blob store (files under the data directory, or JetStream in cluster
// mode, so any node serves them): `<container>/<device>/<blobName>`, whole or absent. Staged
// (uncommitted) blocks wait under `.staging/<blob hash>/` until Put Block List assembles them.
//
// Blob names come from devices, so every path segment is checked (no `..`, `.`, empty segments,
// absolute paths, NUL or backslash): nothing a device names can leave the blob directory.
//
// Thread safety: every method may be called from any thread. Methods marked "blocks" touch disk
// and belong on the blocking pool.
#pragma once

#include "common/error.hpp"
#include "common/time.hpp"
#include "storage/blob_store.hpp"
#include "storage/kv_store.hpp"

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace iothub::file_upload {

inline constexpr std::string_view default_container = "iothub-uploads";
inline constexpr std::string_view sas_version = "2018-03-28";

struct upload_settings {
    std::string container{default_container};
    std::string host_name;                   // what devices connect to for the blob endpoint
    std::uint64_t max_bytes = 256ull << 20;  // per blob
    std::chrono::seconds sas_ttl{std::chrono::hours(1)};
    std::chrono::seconds notification_ttl{std::chrono::hours(1)};
    std::chrono::seconds lock_timeout{60};
    std::uint32_t max_delivery_count = 100;
    std::chrono::seconds staging_ttl{std::chrono::hours(24)};  // uncommitted blocks kept so long
};

// --- pure helpers (tested on their own) ---------------------------------------------------------

// Splits a blob name into path segments, refusing anything that could leave its directory.
result<std::vector<std::string>> safe_segments(std::string_view blob_name);

// The SAS for one blob path (`<device>/<blobName>` within `container`), in the query form the
// Azure Storage client appends to the blob URL: "?sv=..&sr=b&sig=..&se=..&sp=rw".
std::string sign_sas(std::string_view secret, std::string_view container,
                     std::string_view blob_path, sys_time expiry);
// Checks a request's query parameters (decoded) against the blob it addresses. Any failure is
// errc::unauthorized with the reason.
result<void> check_sas(std::string_view secret, std::string_view container,
                       std::string_view blob_path,
                       const std::vector<std::pair<std::string, std::string>>& query, sys_time now);

// Block ids of a Put Block List body (`<BlockList><Latest>id</Latest>...</BlockList>`, also
// `Committed` and `Uncommitted`), in order. errc::argument_invalid when malformed.
result<std::vector<std::string>> parse_block_list(std::string_view xml);

std::string md5_base64(std::string_view data);

// --- values -------------------------------------------------------------------------------------

struct upload_grant {
    std::string correlation_id;
    std::string host_name;
    std::string container;
    std::string blob_name;  // `<deviceId>/<name>`, as Azure names it
    std::string sas_token;  // starts with '?'
};

struct blob_info {
    std::string device_id;
    std::string blob_name;  // the device's name for it, without the device prefix
    std::uint64_t size = 0;
    sys_time last_modified;
    std::string etag;         // quoted
    std::string content_md5;  // Base64
};

struct file_notification {
    std::string device_id;
    std::string blob_uri;
    std::string blob_name;  // `<deviceId>/<name>`
    sys_time last_updated;
    std::uint64_t size = 0;
    sys_time enqueued_time;
};

// {deviceId, blobUri, blobName, lastUpdatedTime, blobSizeInBytes, enqueuedTimeUtc}
std::string notification_json(const file_notification& n);

struct notification_delivery {
    std::string lock_token;  // a GUID's text form
    file_notification notification;
};

class file_upload_service {
  public:
    // Blob contents go to `blobs` (`<container>/<device>/<name>`, staged blocks under
    // `.staging/`); what they are, to `kv`.
    file_upload_service(storage::kv_store& kv, storage::blob_store& blobs,
                        upload_settings settings);
    ~file_upload_service();

    // Reads (or creates) the signing secret and the pending notifications. Blocks. Call once.
    result<void> load();

    // --- device side ---
    // Opens an upload session for the device's blob. errc::argument_invalid for an unsafe name.
    // Blocks.
    result<upload_grant> start_upload(const std::string& device_id, std::string_view blob_name,
                                      sys_time now);
    // Ends the session; a success writes a notification for the blob as stored. errc::not_found
    // when the correlation id names no open session of this device; errc::argument_invalid
    // when a success is reported for a blob that was never stored. Blocks.
    result<void> notify(const std::string& device_id, std::string_view correlation_id, bool success,
                        sys_time now);

    // --- the blob endpoint: `path` is the blob's segments under the container, device first ---
    // errc::unauthorized for a missing, wrong or expired SAS or a path it does not name.
    result<void> authorize(const std::vector<std::string>& path,
                           const std::vector<std::pair<std::string, std::string>>& query,
                           sys_time now) const;
    // Put Blob. errc::request_too_large beyond max_bytes. Blocks.
    result<blob_info> put_blob(const std::vector<std::string>& path, std::string_view body,
                               sys_time now);
    // Put Block: stages `body` under `block_id`; returns the block's MD5 (Base64). Blocks.
    result<std::string> put_block(const std::vector<std::string>& path, std::string_view block_id,
                                  std::string_view body);
    // Put Block List: the blob becomes the named staged blocks in order; the staging area is
    // cleared. errc::argument_invalid for an unknown block. Blocks.
    result<blob_info> put_block_list(const std::vector<std::string>& path,
                                     const std::vector<std::string>& block_ids, sys_time now);

    // --- service side ---
    result<std::vector<blob_info>> list(std::optional<std::string> device_id) const;  // blocks
    // The blob's bytes; errc::not_found when there is none. Blocks.
    result<std::string> read(const std::string& device_id, std::string_view blob_name) const;

    // Notifications, as the service's /messages/serviceBound/filenotifications receives them:
    // the oldest unlocked one, locked for the lock timeout; nullopt when none. Memory only.
    std::optional<notification_delivery> receive_notification(sys_time now);
    // errc::message_lock_lost for an unknown or timed-out token. Complete and reject remove the
    // notification; abandon makes it available again (until it was delivered the maximum number
    // of times). Block.
    result<void> complete_notification(std::string_view lock_token, sys_time now);
    result<void> abandon_notification(std::string_view lock_token, sys_time now);
    result<void> reject_notification(std::string_view lock_token, sys_time now);
    std::size_t pending_notifications() const;
    // `notify` runs (it must only post work) whenever a notification becomes available.
    std::uint64_t watch_notifications(std::function<void()> notify);
    void unwatch_notifications(std::uint64_t token);

    // Times out locks and, with `expire`, drops old notifications; drops ended sessions and
    // stale staged blocks. Blocks; the hub calls it about once a second, expiring on one node of
    // a cluster only (its sweep duty).
    void sweep(sys_time now, bool expire = true);

    const upload_settings& settings() const { return settings_; }

  private:
    struct impl;
    std::unique_ptr<impl> impl_;
    upload_settings settings_;
};

}  // namespace iothub::file_upload
