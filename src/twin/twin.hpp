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
// A write is a read-modify-write: the twin is read, the change computed, and the new record
// committed together with its twin-change event (event_log::append_with: one atomic commit, one
// sync) on the condition that the record has not changed meanwhile. Writes to one twin on this
// hub queue up behind each other (no thread waits: the next starts when the previous completes);
// a write that still loses the race (another writer elsewhere) reads again and retries. Commits to
// one twin are therefore in version order, and so are the desired-property notifications.
//
// Thread safety: every method may be called from any thread. Reads block on storage (call them on
// the blocking pool); writes do their reads there, then complete asynchronously: the completion
// runs on the storage thread once the commit is durable and must only post work. No thread waits
// for a write's sync.
#pragma once

#include "registry/registry.hpp"
#include "storage/event_log.hpp"
#include "storage/kv_store.hpp"
#include "twin/document.hpp"

#include <boost/json/object.hpp>

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>

namespace iothub::hub_events {
class interest;
}

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

    template <class T>
    using completion = std::function<void(result<T>)>;

    twin_service(storage::kv_store& kv, registry::device_registry& registry,
                 storage::event_log& hub_events, std::string hub_name, twin_limits limits = {});

    void set_live(live_function live) { live_ = std::move(live); }
    // Twin change events are committed with the change only while something reads them (every
    // change raises one when unset).
    void set_event_interest(const hub_events::interest* interest) { interest_ = interest; }
    // Where a write that lost a race reads again (the blocking pool); inline when unset.
    void set_offload(std::function<void(std::function<void()>)> offload) {
        offload_ = std::move(offload);
    }
    // Called after each committed desired-property change, in version order for a given twin,
    // with the twin's lock held: it must only post work elsewhere.
    void on_desired(std::function<void(const desired_change&)> observer) {
        desired_observer_ = std::move(observer);
    }

    // --- the back end (service API) ----------------------------------------------------------
    result<boost::json::object> get(std::string_view device_id, std::string_view module_id);
    // PATCH: merges `tags` and `properties.desired` (reported is device-owned and ignored);
    // `done` gets the twin as the service sees it.
    void update(std::string_view device_id, std::string_view module_id,
                const boost::json::value& body, const registry::if_match& condition,
                completion<boost::json::object> done);
    // PUT: replaces `tags` and `properties.desired` entirely.
    void replace(std::string_view device_id, std::string_view module_id,
                 const boost::json::value& body, const registry::if_match& condition,
                 completion<boost::json::object> done);

    // --- the device --------------------------------------------------------------------------
    // `{"desired":{...,"$version":n},"reported":{...,"$version":m}}`.
    result<boost::json::object> device_view(std::string_view device_id, std::string_view module_id);
    // Merges a reported-properties patch; `done` gets the new reported version. With
    // `if_version`, the patch applies only if the reported version is still that (else
    // PreconditionFailed).
    void update_reported(std::string_view device_id, std::string_view module_id,
                         const boost::json::value& patch, std::optional<std::uint64_t> if_version,
                         completion<std::uint64_t> done);
    // Records the model id a device announced when it connected (IoT Plug and Play).
    result<void> set_model_id(std::string_view device_id, std::string_view module_id,
                              std::string_view model_id);

    // --- whole-hub reads and housekeeping ----------------------------------------------------
    // A page of twins in identity order (see device_registry::scan).
    result<twin_page> scan(bool modules, std::string_view start_after, std::size_t limit);
    // The twin of `id` as GET /twins shows it, read for that identity record even when the registry
    // no longer has it (a deleted identity's last twin, before forget()).
    result<boost::json::object> view_of(const registry::identity& id);
    // Removes the twin of an identity that was deleted. Best effort: it is invisible already.
    void forget(const registry::identity& deleted);

    const twin_limits& limits() const { return limits_; }

  private:
    struct stored;
    struct loaded;
    struct change;
    struct write_op;
    result<loaded> load(const registry::identity& id);
    result<registry::identity> identity_of(std::string_view device_id, std::string_view module_id);
    boost::json::object service_view(const registry::identity& id, const loaded& twin) const;
    void service_write(std::string_view device_id, std::string_view module_id,
                       const boost::json::value& body, const registry::if_match& condition,
                       bool replace, completion<boost::json::object> done);
    // Queues `op` behind the writes to the same twin, then runs it.
    void start(std::shared_ptr<write_op> op);
    // Reads, plans, and commits the record with its event; retries a lost race.
    void run(std::shared_ptr<write_op> op);
    // The write at the head of the twin's queue ended: the next one starts.
    void finished(const std::string& key);
    storage::event_record change_event(const registry::identity& id, std::string_view op,
                                       boost::json::object body) const;

    storage::kv_store& kv_;
    registry::device_registry& registry_;
    storage::event_log& hub_events_;
    std::string hub_name_;
    twin_limits limits_;
    const hub_events::interest* interest_ = nullptr;
    live_function live_ = [](const registry::identity&) { return registry::live_state{}; };
    std::function<void(const desired_change&)> desired_observer_;
    std::function<void(std::function<void()>)> offload_;
    std::mutex queues_mutex_;
    std::map<std::string, std::deque<std::shared_ptr<write_op>>, std::less<>> queues_;
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
// Reads on the calling thread; `done` runs on the storage thread (it must only post).
void answer_reported_patch(twin_service& twins, std::string_view device_id,
                           std::string_view module_id, std::string_view patch_text,
                           std::optional<std::uint64_t> if_version,
                           std::function<void(device_answer)> done);

}  // namespace iothub::twin
