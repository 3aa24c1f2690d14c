// The identity registry: devices and modules, their credentials and status, kept in the kv_store.
//
// Semantics follow Azure IoT Hub's registry API: create fails on an existing id, update needs an
// If-Match (`*` or the current ETag), keys left empty are generated, deleting a device takes its
// modules with it, bulk calls report per item. Every write is durable when it returns.
//
// Other subsystems learn about changes through observers (a disabled or deleted device must lose
// its connections; a deleted device its twin and queue); they run synchronously after the commit,
// on the caller's thread, so they must only post work elsewhere.
//
// Thread safety: all methods may be called concurrently; they block on storage.
#pragma once

#include "registry/identity.hpp"
#include "storage/kv_store.hpp"

#include <boost/json/value.hpp>

#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace iothub::registry {

// An HTTP If-Match precondition as the registry understands it.
struct if_match {
    enum class kind : std::uint8_t { absent, any, etag };
    kind what = kind::absent;
    std::string etag;  // bare, without quotes

    // Accepts `*`, `"*"`, `"etag"` and a bare `etag`; an empty header is `absent`.
    static if_match parse(std::string_view header);
};

struct registry_limits {
    std::size_t max_modules_per_device = 50;
    std::size_t max_bulk_items = 100;
    std::size_t max_list = 1000;
};

struct registry_statistics {
    std::uint64_t total = 0;
    std::uint64_t enabled = 0;
    std::uint64_t disabled = 0;
};

struct identity_change {
    std::optional<identity> before;  // empty on create
    std::optional<identity> after;   // empty on delete
};

// One entry of a bulk `POST /devices` call.
enum class import_mode : std::uint8_t {
    create,
    create_or_update,
    create_or_update_if_match_etag,
    update,
    update_if_match_etag,
    remove,
    remove_if_match_etag,
};
struct bulk_item {
    import_mode mode = import_mode::create_or_update;
    std::string mode_name;  // as the client spelled it, echoed in errors
    identity_spec spec;
};
struct bulk_error {
    std::string device_id;
    std::string module_id;
    std::string operation;
    error cause;
};
struct bulk_result {
    std::vector<bulk_error> errors;
    bool successful() const { return errors.empty(); }
};

// Parses and checks a bulk body as a whole (shape, item count, duplicate ids); a failure here
// rejects the entire request and changes nothing.
result<std::vector<bulk_item>> parse_bulk(const boost::json::value& body,
                                          const registry_limits& limits);
boost::json::object to_json(const bulk_result& r);

class device_registry {
  public:
    explicit device_registry(storage::kv_store& kv, registry_limits limits = {});

    // PUT semantics: If-Match absent creates (DeviceAlreadyExists if present); `*` or an ETag
    // updates an existing device (DeviceNotFound, PreconditionFailed).
    result<identity> put_device(identity_spec spec, const if_match& condition);
    result<identity> get_device(std::string_view device_id);
    result<void> delete_device(std::string_view device_id, const if_match& condition);
    // Up to `top` devices (capped by limits.max_list), in id order.
    result<std::vector<identity>> list_devices(std::size_t top);

    result<identity> put_module(identity_spec spec, const if_match& condition);
    result<identity> get_module(std::string_view device_id, std::string_view module_id);
    result<void> delete_module(std::string_view device_id, std::string_view module_id,
                               const if_match& condition);
    result<std::vector<identity>> list_modules(std::string_view device_id);

    // One page of live identities in storage-key order, for whole-registry reads (queries):
    // devices, or the modules of every live device. Start with an empty `start_after` and pass
    // the page's `last_key` on; a page may hold fewer than `limit` (invisible modules are
    // skipped) and the scan is over when `done`.
    struct identity_page {
        std::vector<identity> identities;
        std::string last_key;
        bool done = false;
    };
    result<identity_page> scan(bool modules, std::string_view start_after, std::size_t limit);

    result<bulk_result> bulk(std::vector<bulk_item> items);
    result<registry_statistics> statistics();

    void on_change(std::function<void(const identity_change&)> observer);

    // The identity change a storage change another cluster node made stands for; nullopt when
    // the key is not an identity record. Observers are not told (the node that wrote told its
    // own); the caller decides what this node does about it.
    static std::optional<identity_change> remote_change(const storage::kv_change& change);

    const registry_limits& limits() const { return limits_; }

  private:
    result<std::optional<identity>> load(const std::string& key);
    result<identity> load_live_device(std::string_view device_id);
    result<std::optional<identity>> load_live_module(std::string_view device_id,
                                                     std::string_view module_id);
    // Builds the record to write for `spec` over `current` (nullopt: a create).
    identity prepare(identity fields, const std::optional<identity>& current) const;
    void notify(const identity_change& change);
    // Removes the module records left under a deleted device and tells observers about the ones
    // that belonged to its last generation. Best effort: they are invisible already.
    void reclaim_modules(const identity& deleted_device);

    storage::kv_store& kv_;
    registry_limits limits_;
    std::mutex observers_mutex_;
    std::vector<std::function<void(const identity_change&)>> observers_;
};

// Storage keys: "d/<deviceId>" and "m/<deviceId>/<moduleId>"; '/' cannot occur in an id.
std::string device_key(std::string_view device_id);
std::string module_key(std::string_view device_id, std::string_view module_id);

}  // namespace iothub::registry
