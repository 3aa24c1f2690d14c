// Device-to-cloud telemetry: the one place every protocol hands a device's message to, whatever
// it arrived on. It enforces the message size limit, stamps who sent it (iothub-connection-*),
// marks the source, and appends it to the device's partition of the event log; the caller's
// completion runs once the message is durable, which is when MQTT may PUBACK, AMQP accept and
// HTTPS answer 204.
#pragma once

#include "device_auth/device_auth.hpp"
#include "storage/event_log.hpp"

#include <atomic>
#include <functional>
#include <vector>

namespace iothub::telemetry {

inline constexpr std::size_t default_max_message_size = 256 * 1024;

// Decides per message where device messages go, in place of one log: routing, when it works out
// each message's endpoints as the message arrives. `done` runs once every message is durable
// wherever it went (or failed); it must only post work.
class dispatcher {
  public:
    virtual ~dispatcher() = default;
    virtual void dispatch(int partition, std::vector<storage::event_record> messages,
                          std::function<void(result<void>)> done) = 0;
};

class telemetry_service {
  public:
    telemetry_service(storage::event_log& log,
                      std::size_t max_message_size = default_max_message_size)
        : log_(&log), max_message_size_(max_message_size) {}

    // Where device messages go from now on: the telemetry stream itself, or routing's ingest log
    // while routes decide where they go. Every log has the same partitions.
    void set_destination(storage::event_log& log) { log_.store(&log); }
    storage::event_log& destination() const { return *log_.load(); }
    // While set, device messages go to `d` instead of the destination log; nullptr ends that.
    void set_dispatcher(dispatcher* d) { dispatcher_.store(d); }
    bool dispatched() const { return dispatcher_.load() != nullptr; }

    // errc::message_too_large beyond the limit (body, property names and values).
    result<void> check(const storage::event_record& message) const;
    // A batch the device sent as one (AMQP batched messages, HTTPS batches): every message within
    // the limit, and the batch as a whole within it too, as Azure counts a batch. errc::
    // message_too_large names the first message over the limit or the batch's size; errc::
    // argument_invalid for an empty batch. All or nothing: the caller stores none on failure.
    result<void> check_batch(const std::vector<storage::event_record>& messages) const;

    // Checks, stamps and appends. `done` runs on the log's thread; it must only post work.
    void ingest(const device_auth::device_principal& sender, storage::event_record message,
                std::function<void(result<void>)> done);
    // The same for several messages from one sender, appended together: one completion, which
    // is what a protocol adapter wants for the messages one read brought. The caller has checked
    // each message's size. `stamp` is stamp_for(sender), made once per connection.
    void ingest(const device_auth::device_principal& sender,
                std::shared_ptr<const storage::property_list> stamp,
                std::vector<storage::event_record> messages,
                std::function<void(result<void>)> done);

    // The connection properties every message from `sender` carries (iothub-connection-*,
    // iothub-message-source), shared by all of them.
    static std::shared_ptr<const storage::property_list> stamp_for(
        const device_auth::device_principal& sender);

    // Hands stamped messages of one device's partition to wherever device messages go now.
    void append(int partition, std::vector<storage::event_record> messages,
                std::function<void(result<void>)> done);

    int partition_of(std::string_view device_id) const {
        return storage::partition_for(device_id, log_.load()->partition_count());
    }
    std::size_t max_message_size() const { return max_message_size_; }

  private:
    std::atomic<storage::event_log*> log_;
    std::atomic<dispatcher*> dispatcher_{nullptr};
    std::size_t max_message_size_;
};

}  // namespace iothub::telemetry
