// Device and module twins: the stored document of every identity, the back end's reads and writes
// (GET/PATCH/PUT /twins), the device's own (GET, reported-properties PATCH), and what follows a
// change: a connected device hears about new desired properties, and a twin-change event is
// recorded in the hub's event log for routing.
//
// A twin belongs to one incarnation of its identity. Its record carries the identity's generation
// id, and a record left behind by a deleted identity reads as a fresh twin, so creating and
// deleting identities needs no multi-key transaction; deleted identities' records are removed
// lazily (forget()).
//
// Writes to one twin are serialised (a striped lock), which keeps compare-and-set retries away and
// makes desired-property notifications leave in version order.
//
// Thread safety: every method may be called from any thread; they block on storage.
#pragma once

#include "registry/registry.hpp"
#include "storage/event_log.hpp"
#include "storage/kv_store.hpp"
#include "twin/document.hpp"

#include <boost/json/object.hpp>

#include <array>
#include <functional>
#include <mutex>

namespace iothub::twin {

// What a connected device is told when its desired properties change.
struct desired_change {
    std::string device_id;
    std::string module_id;
    boost::json::object patch;  // includes "$version"
    std::uint64_t version = 0;
};

// One row of a whole-hub read: a twin as the service API shows it.
struct twin_page {
    std::vector<boost::json::object> twins;
    std::string last_key;  // pass back as start_after for the next page
    bool done = false;
};

class twin_service {
  public:
    using live_function = std::function<registry::live_state(const registry::identity&)>;

    twin_service(storage::kv_store& kv, registry::device_registry& registry,
                 storage::event_log& hub_events, std::string hub_name, twin_limits limits = {});

    void set_live(live_function live) { live_ = std::move(live); }
    // Called after each committed desired-property change, in version order for a given twin,
    // with the twin's lock held: it must only post work elsewhere.
    void on_desired(std::function<void(const desired_change&)> observer) {
        desired_observer_ = std::move(observer);
    }

    // --- the back end (service API) ----------------------------------------------------------
    result<boost::json::object> get(std::string_view device_id, std::string_view module_id);
    // PATCH: merges `tags` and `properties.desired` (reported is device-owned and ignored).
    result<boost::json::object> update(std::string_view device_id, std::string_view module_id,
                                       const boost::json::value& body,
                                       const registry::if_match& condition);
    // PUT: replaces `tags` and `properties.desired` entirely.
    result<boost::json::object> replace(std::string_view device_id, std::string_view module_id,
                                        const boost::json::value& body,
                                        const registry::if_match& condition);

    // --- the device --------------------------------------------------------------------------
    // `{"desired":{...,"$version":n},"reported":{...,"$version":m}}`.
    result<boost::json::object> device_view(std::string_view device_id, std::string_view module_id);
    // Merges a reported-properties patch; returns the new reported version. With `if_version`,
    // the patch applies only if the reported version is still that (else PreconditionFailed).
    result<std::uint64_t> update_reported(std::string_view device_id, std::string_view module_id,
                                          const boost::json::value& patch,
                                          std::optional<std::uint64_t> if_version = {});
    // Records the model id a device announced when it connected (IoT Plug and Play).
    result<void> set_model_id(std::string_view device_id, std::string_view module_id,
                              std::string_view model_id);

    // --- whole-hub reads and housekeeping ----------------------------------------------------
    // A page of twins in identity order (see device_registry::scan).
    result<twin_page> scan(bool modules, std::string_view start_after, std::size_t limit);
    // Removes the twin of an identity that was deleted. Best effort: it is invisible already.
    void forget(const registry::identity& deleted);

    const twin_limits& limits() const { return limits_; }

  private:
    struct stored;
    struct loaded;
    result<loaded> load(const registry::identity& id);
    result<registry::identity> identity_of(std::string_view device_id, std::string_view module_id);
    boost::json::object service_view(const registry::identity& id, const loaded& twin) const;
    result<boost::json::object> service_write(std::string_view device_id,
                                              std::string_view module_id,
                                              const boost::json::value& body,
                                              const registry::if_match& condition, bool replace);
    // Commits `after` over `before`, tells observers, records the change event.
    result<loaded> commit(const registry::identity& id, loaded before, stored after,
                          std::string_view op, boost::json::object event_body,
                          std::optional<boost::json::object> desired_patch);
    void record_event(const registry::identity& id, std::string_view op, boost::json::object body);
    std::mutex& lock_for(std::string_view key);

    storage::kv_store& kv_;
    registry::device_registry& registry_;
    storage::event_log& hub_events_;
    std::string hub_name_;
    twin_limits limits_;
    live_function live_ = [](const registry::identity&) { return registry::live_state{}; };
    std::function<void(const desired_change&)> desired_observer_;
    std::array<std::mutex, 64> locks_;
};

std::string twin_key(std::string_view device_id, std::string_view module_id);

// A device's own twin request, answered the way every protocol carries it: the status (200 with
// the twin for a GET, 204 with the new version for a reported patch, else the error's HTTP
// status) and a body that has `errorCode` on failure, which is what the Node SDK looks for while
// C and C# read the status.
struct device_answer {
    int status = 200;
    std::string body;
    std::optional<std::uint64_t> version;
};
device_answer answer_get(twin_service& twins, std::string_view device_id,
                         std::string_view module_id);
device_answer answer_reported_patch(twin_service& twins, std::string_view device_id,
                                    std::string_view module_id, std::string_view patch_text,
                                    std::optional<std::uint64_t> if_version = {});

}  // namespace iothub::twin
