// One device or module identity's presence on the hub, whatever protocol carries it: what every
// transport shares, written once. A protocol adapter (MQTT, AMQP, HTTPS) translates its wire into
// the calls below and implements device_port for what goes back to the device; it never talks to
// the telemetry, twin, C2D or method services itself.
//
// A session owns, for one identity:
//  - opening: authentication off the network thread, then one live connection per identity (the
//    connection table: a newer session of the same identity ends this one), the registry's live
//    fields, the stamp every message carries, the model id, a persistent session record;
//  - telemetry admission: the size limits, and the bytes read but not yet durable, charged to the
//    connection's telemetry_budget, which is one bound for every protocol (the adapter stops
//    reading while it is spent: backpressure instead of buffering); everything admitted during
//    one handler is appended as one write, and completions come back in admission order;
//  - twin requests in arrival order, one at a time;
//  - cloud-to-device delivery within the adapter's window, settlement, and abandon-on-close of
//    only the locks this session holds;
//  - method and desired-property readiness, and what the core pushes (device_channel);
//  - the end: takeover, revocation (disabled, deleted, new keys), token expiry, or the device
//    leaving. Connected and disconnected happen here and nowhere else.
//
// Threading: a session lives on one executor (its connection's shard). Every method is called
// there, and device_port callbacks run there. Blocking work goes to the blocking pool and comes
// back by posting. The channel the core sees (connections::device_channel) may be called from
// any thread; it posts.
#pragma once

#include "c2d/c2d.hpp"
#include "common/fifo.hpp"
#include "connections/connections.hpp"
#include "device_auth/device_auth.hpp"
#include "dps/registrations.hpp"
#include "methods/methods.hpp"
#include "runtime/shards.hpp"
#include "session/connect_limiter.hpp"
#include "storage/event_log.hpp"
#include "storage/kv_store.hpp"
#include "telemetry/telemetry.hpp"
#include "twin/twin.hpp"

#include <boost/asio/any_io_executor.hpp>

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <vector>

namespace iothub::session {

// The services a session works with, shared by every session of the hub.
struct services {
    device_auth::device_authenticator& authenticator;
    connections::connection_table& connections;
    telemetry::telemetry_service& telemetry;
    twin::twin_service& twins;
    methods::method_service& methods;
    c2d::c2d_service& c2d;
    storage::kv_store& kv;  // persistent session records
    runtime::blocking_pool& blocking;
    // The hub-wide connect rate, taken by every live open; none: unlimited.
    connect_limiter* connects = nullptr;
    // The provisioning service, for the protocols' registration clients; none: not served.
    dps::registration_service* provisioning = nullptr;
};

// Telemetry that one connection has read and the hub has not yet stored, across the sessions it
// carries (a gateway has many). While it is spent, the connection reads nothing more from its
// socket, so TCP flow control holds the device back. Touched only on the connection's executor.
class telemetry_budget {
  public:
    explicit telemetry_budget(std::size_t limit) : limit_(limit) {}
    bool spent() const { return used_ >= limit_; }
    std::size_t used() const { return used_; }
    std::size_t limit() const { return limit_; }
    void charge(std::size_t bytes) { used_ += bytes; }
    void release(std::size_t bytes) {
        const bool was_spent = spent();
        used_ -= std::min(used_, bytes);
        if (was_spent && !spent() && on_freed) on_freed();
    }
    // Runs when the budget stops being spent: the connection reads again.
    std::function<void()> on_freed;

  private:
    std::size_t limit_;
    std::size_t used_ = 0;
};

// Two maximum-size messages: enough to keep storage busy, small next to a socket's buffers.
inline constexpr std::size_t default_unstored_telemetry_bytes = 512 * 1024;

enum class c2d_outcome : std::uint8_t { complete, abandon, reject };

// A twin request as the device made it. `ticket` is the adapter's, handed back with the answer.
struct twin_request {
    enum class verb : std::uint8_t {
        get,
        patch_reported,
        subscribe_desired,    // AMQP PUT /notifications/twin/properties/desired
        unsubscribe_desired,  // AMQP DELETE of the same
        invalid,              // answered 400 in its turn, `body` says why
    };
    verb what = verb::get;
    std::string body;  // the patch (patch_reported) or the reason (invalid)
    std::optional<std::uint64_t> if_version;
    std::uint64_t ticket = 0;
};

// What a session says back to its adapter; the adapter turns each into its wire form. Called on
// the session's executor, never after the session closed. Defaults do nothing, for adapters
// without that feature.
class device_port {
  public:
    virtual ~device_port() = default;

    struct opening {
        std::optional<std::string> record;  // the persistent session record, when restored
    };
    // The outcome of open(): errc::unauthorized, errc::device_disabled, ... or the session is
    // open (and `record` holds what save_record stored last time, for a non-clean session).
    virtual void opened(const result<opening>& r) = 0;
    // Telemetry admitted with these tickets (in admission order) is durable, or could not be
    // stored (then nothing of it was). One call per append, so an adapter writes its answers
    // together.
    virtual void telemetry_stored(std::span<const std::uint64_t> /*tickets*/,
                                  const result<void>& /*r*/) {}
    virtual void twin_answered(std::uint64_t /*ticket*/, const twin::device_answer& /*answer*/) {}
    // Room for one more cloud-to-device message now (MQTT: in-flight window; AMQP: credit).
    virtual bool c2d_room() const { return false; }
    // Sends `d`; the device settles it later by its lock token (settle_c2d).
    virtual void c2d_deliver(const c2d::delivery& /*d*/) {}
    virtual void desired_update(const std::string& /*patch*/, std::uint64_t /*version*/) {}
    virtual void method_request(const std::string& /*name*/, const std::string& /*request_id*/,
                                const std::string& /*payload*/) {}
    // The hub ended the session (another connection took the identity over, its access was
    // revoked, its token expired). The session is closed already.
    virtual void ended(const std::string& /*reason*/) {}
};

class device_session : public std::enable_shared_from_this<device_session> {
  public:
    struct options {
        std::string model_id;  // a PnP model id the device announced (twin modelId)
        // A persistent session (MQTT clean session 0): the record under this key is read at open
        // and written by save_record; a clean open removes it. Empty: none.
        std::string record_key;
        bool clean = true;
        // Whether this session counts as the identity's live connection. A request-scoped session
        // (HTTPS) does not: it neither closes a connected one nor shows as connected.
        bool live = true;
    };

    device_session(services& svc, boost::asio::any_io_executor ex, device_port& port,
                   std::shared_ptr<telemetry_budget> budget);
    ~device_session();
    device_session(const device_session&) = delete;
    device_session& operator=(const device_session&) = delete;

    // A live open first takes a connect from services::connects; without one it fails at once
    // with errc::throttled, before any authentication or storage work.
    //
    // Authenticates (off the network thread), then opens; port.opened() tells the outcome, never
    // before this returns.
    void open(device_auth::device_credentials credentials, options o);
    // Opens for an identity authenticated already (an AMQP put-token). port.opened() runs before
    // this returns unless a session record has to be read first.
    void open(device_auth::device_principal who, options o);

    bool is_open() const { return state_ == state::open; }
    bool closed() const { return state_ == state::closed; }
    const device_auth::device_principal& principal() const { return *principal_; }
    // When the credential the session opened with stops being valid (a SAS token's expiry).
    std::optional<sys_time> expiry() const;
    // A renewed credential (AMQP put-token on the same connection) moves the expiry.
    void renew(std::optional<sys_time> expires);
    // Ends the session once its credential expired; the adapter calls it at expiry().
    void tick(sys_time now);

    // --- telemetry ---
    // Checks and admits one message (or a batch the device sent as one, settled as one); the
    // append follows once the current handler returns. An error leaves nothing admitted.
    result<void> admit(storage::event_record message, std::uint64_t ticket);
    result<void> admit_batch(std::vector<storage::event_record> messages, std::uint64_t ticket);

    // --- twin ---
    void twin(twin_request request);

    // --- what the device listens to ---
    void listen_desired(bool on);
    void listen_methods(bool on);
    // Starts (or stops) C2D delivery; only devices receive C2D, modules never do.
    void listen_c2d(bool on);
    // The adapter has room again: deliver what is waiting.
    void c2d_room_freed() { pump_c2d(); }
    // The device settled a message it received here. Failures (the lock timed out and the message
    // went out again) are logged; `done`, when given, hears the result on this executor.
    void settle_c2d(const std::string& lock_token, c2d_outcome how,
                    std::function<void(result<void>)> done = {});
    // One message for a device that polls (HTTPS): locked for the lock timeout and handed out;
    // the session keeps no claim on it.
    std::optional<c2d::delivery> take_c2d();

    // An answer to a direct method; false when no call with that id waits for this identity.
    bool method_response(std::string_view request_id, int status, std::string_view payload);

    // Stores the persistent session record (options::record_key) in the background.
    void save_record(std::string value);

    // The device left or the adapter gave up on the connection (EOF, protocol error, the last
    // AMQP link detached, the hub stopping). No port callback runs after this.
    void close(const std::string& reason);

    // Marks activity for lastActivityTime.
    void touch();

  private:
    class channel;
    enum class state : std::uint8_t { opening, open, closed };
    struct pending_telemetry {
        std::uint64_t ticket;
        std::size_t bytes;
    };

    void opened(device_auth::device_principal who, options o, std::optional<std::string> record);
    std::optional<error> throttle(const options& o) const;
    void fail_open(const error& e);
    void end(const std::string& reason);  // from the hub's side
    result<void> charge(std::vector<storage::event_record>& messages, std::uint64_t ticket);
    void flush_telemetry();
    void run_twin();
    void twin_done(std::uint64_t ticket, const twin::device_answer& answer);
    void pump_c2d();
    void release_locks();

    services& svc_;
    boost::asio::any_io_executor ex_;
    device_port* port_;
    std::shared_ptr<telemetry_budget> budget_;
    state state_ = state::opening;
    options options_;
    std::optional<device_auth::device_principal> principal_;
    std::shared_ptr<const storage::property_list> stamp_;  // connection properties, lazily
    std::shared_ptr<connections::connection_table::entry> entry_;
    std::shared_ptr<channel> channel_;

    std::vector<storage::event_record> admitted_;
    std::vector<pending_telemetry> admitted_tickets_;
    bool flush_posted_ = false;

    fifo<twin_request> twin_queue_;
    bool twin_running_ = false;

    bool c2d_listening_ = false;
    std::set<std::string> c2d_locks_;  // lock tokens delivered here and not settled
    // Settlements in the device's order: the front is in flight. Touched on the session's
    // executor only.
    struct settlement_queue {
        struct item {
            std::string lock_token;
            c2d_outcome how;
            std::function<void(result<void>)> done;
        };
        std::deque<item> pending;
    };
    std::shared_ptr<settlement_queue> settlements_;
    static void settle_next(std::shared_ptr<settlement_queue> q, services& svc,
                            boost::asio::any_io_executor ex, std::string device);
};

}  // namespace iothub::session
