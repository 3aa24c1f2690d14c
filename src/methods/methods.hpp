// Direct methods: the back end calls a named method on a device (or module) and waits for the
// device's answer. This module owns the calls in flight: it validates a call, delivers it over the
// identity's live connection (any protocol, through connections::device_channel), correlates the
// answer by request id, and ends every call exactly once: with the device's answer, DeviceNotOnline
// (404103) when no connection takes methods within connectTimeoutInSeconds, or GatewayTimeout
// (504101) when the answer does not come within responseTimeoutInSeconds.
//
// Calls to one device run concurrently; each has its own request id (`$rid` on MQTT).
//
// Thread safety: every method may be called from any thread. Completions run on the timer
// executor or on the thread that delivered the answer; they must only post work elsewhere.
#pragma once

#include "common/error.hpp"
#include "connections/connections.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/json/value.hpp>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>

namespace iothub::methods {

struct method_limits {
    std::size_t max_payload_bytes = 128 * 1024;  // request and response, as JSON text
    std::chrono::seconds min_response_timeout{5};
    std::chrono::seconds max_response_timeout{300};
    std::chrono::seconds max_connect_timeout{300};
};

struct method_call {
    std::string device_id;
    std::string module_id;
    std::string name;
    std::string payload = "null";  // JSON text
    std::chrono::seconds response_timeout{30};
    std::chrono::seconds connect_timeout{0};
};

struct method_result {
    int status = 0;
    boost::json::value payload;  // the device's JSON; null when it sent nothing
};

// Reads a `POST /twins/{id}[/modules/{mid}]/methods` body: methodName (required), payload (any
// JSON), responseTimeoutInSeconds (5-300, default 30), connectTimeoutInSeconds (0-300, default 0).
result<method_call> parse_call(const boost::json::value& body, std::string device_id,
                               std::string module_id, const method_limits& limits = {});

// The `{"status":..,"payload":..}` body of a successful invocation.
boost::json::object to_json(const method_result& r);

// When calls time out. The hub uses Asio's steady timers; tests drive time themselves.
class timeout_clock {
  public:
    virtual ~timeout_clock() = default;
    // Calls `fire` once, `after` from now, from some thread, unless cancelled first. A firing
    // that races a cancel may still run: the service ignores firings it no longer expects.
    virtual std::uint64_t schedule(std::chrono::milliseconds after, std::function<void()> fire) = 0;
    virtual void cancel(std::uint64_t id) = 0;
};
// Steady timers on `ex`.
std::shared_ptr<timeout_clock> asio_timeouts(boost::asio::any_io_executor ex);

class method_service {
  public:
    using completion = std::function<void(result<method_result>)>;

    method_service(connections::connection_table& connections, boost::asio::any_io_executor timers,
                   method_limits limits = {});
    method_service(connections::connection_table& connections,
                   std::shared_ptr<timeout_clock> timeouts, method_limits limits = {});
    ~method_service();

    // Whether an identity is registered: errc::device_not_found or module_not_found when not.
    // Asked (and it may block on the registry) only for a call to an identity that is not
    // connected, so that an unknown id is DeviceNotFound rather than DeviceNotOnline.
    void set_registered(
        std::function<result<void>(const std::string& device_id, const std::string& module_id)>
            registered) {
        registered_ = std::move(registered);
    }

    // Where a call goes when its identity is not connected here (cluster mode: another node may
    // hold it). Returns true when it took the call (and will end it). It may block.
    void set_elsewhere(std::function<bool(const method_call&, completion&)> elsewhere) {
        elsewhere_ = std::move(elsewhere);
    }
    // May block on the registry (see set_registered): call it off the network threads.
    void invoke(method_call call, completion done);

    // A device's answer to request `request_id`; `payload` is the raw body. False when no such
    // call is in flight for this identity (late, unknown, or another identity's).
    bool respond(std::string_view device_id, std::string_view module_id,
                 std::string_view request_id, int status, std::string_view payload);

    // A connection of this identity now accepts methods: calls waiting for it are delivered.
    void device_ready(const std::string& device_id, const std::string& module_id);

    // Cluster mode: the identity connected to another node; calls waiting for it to connect go
    // there with the connect time they have left. May block (see invoke).
    void device_ready_elsewhere(const std::string& device_id, const std::string& module_id);
    // Whether calls wait here for this identity to connect. Memory only.
    bool waiting_for(const std::string& device_id, const std::string& module_id) const;

    // Ends every call in flight with ServiceUnavailable (the hub is stopping).
    void stop();

    std::size_t in_flight() const;
    const method_limits& limits() const { return limits_; }

  private:
    struct call_state;
    std::function<bool(const method_call&, completion&)> elsewhere_;
    void deliver(const std::shared_ptr<call_state>& c,
                 const std::shared_ptr<connections::device_channel>& channel);
    void arm(const std::shared_ptr<call_state>& c, std::chrono::seconds after);
    void timed_out(const std::shared_ptr<call_state>& c, std::uint64_t generation);
    void finish(const std::shared_ptr<call_state>& c, result<method_result> r);

    connections::connection_table& connections_;
    std::shared_ptr<timeout_clock> timeouts_;
    method_limits limits_;
    mutable std::mutex mutex_;
    std::map<std::string, std::shared_ptr<call_state>, std::less<>> delivered_;  // by request id
    std::multimap<std::string, std::shared_ptr<call_state>> waiting_;  // by identity, offline
    std::uint64_t next_id_ = 1;
    bool stopped_ = false;
    std::function<result<void>(const std::string&, const std::string&)> registered_;
};

}  // namespace iothub::methods
