// Cloud-to-device messages: one durable FIFO queue per device, the locks that make delivery
// at-least-once, and the feedback stream that tells the back end what became of each message.
//
// Lifecycle (Azure IoT Hub's): a sent message is Enqueued; delivering it locks it (Invisible) for
// the lock timeout and counts a delivery; the device completes it (removed, feedback Success),
// abandons it (Enqueued again) or rejects it (removed, feedback Rejected). A lock that times out
// or a connection that ends with the message locked counts as an abandon. A message past its
// expiry is removed with feedback Expired; one delivered more than the maximum delivery count is
// removed with DeliveryCountExceeded; a purge removes everything with Purged. Feedback is written
// only when the message's ack mode asks for it (positive: Success; negative: the others; full:
// all).
//
// Messages and the feedback stream are queue::peek_lock_queue instances over the kv_store (one
// key per message, one per feedback record), so every engine serves them unchanged; every change
// and the feedback it causes commit in one `apply`, without a mutex held across the sync. Locks
// live in memory; delivery counts are written back when a lock ends unsettled, so a crash forgets
// at most the deliveries of messages that were locked at the time (they are delivered again:
// at-least-once). Feedback records keep their delivery counts the same way.
//
// Delivery is pulled by the protocol adapters (MQTT within its in-flight window, AMQP within link
// credit, HTTPS per poll) with receive(); when a message becomes available for a device that has
// a live connection, its connections::device_channel hears c2d_available() and pulls.
//
// Thread safety: every method may be called from any thread. Methods marked "blocks" write to
// storage and belong on the blocking pool; the others touch memory only.
#pragma once

#include "common/error.hpp"
#include "common/time.hpp"
#include "connections/connections.hpp"
#include "registry/registry.hpp"
#include "storage/event_log.hpp"
#include "storage/kv_store.hpp"

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace iothub::c2d {

struct c2d_limits {
    std::size_t max_depth = 50;  // messages per device queue
    std::uint32_t max_delivery_count = 10;
    std::chrono::seconds lock_timeout{60};
    std::chrono::seconds default_ttl{std::chrono::hours(1)};
    std::chrono::seconds max_ttl{std::chrono::hours(48)};  // caps a sender's absolute-expiry-time
    std::size_t max_message_bytes = 64 * 1024;             // body plus property names and values
    std::chrono::seconds feedback_ttl{std::chrono::hours(1)};
    std::uint32_t feedback_max_delivery_count = 100;
    std::size_t feedback_batch_records = 64;  // records per feedback message at most
};

enum class ack_mode : std::uint8_t { none, positive, negative, full };

// `iothub-ack` values; anything else is errc::argument_invalid. Empty is `none`.
result<ack_mode> parse_ack(std::string_view text);
std::string_view to_string(ack_mode a);

// What the service sends. Strings are empty when the sender did not set them.
struct message {
    std::string message_id;
    std::string correlation_id;
    std::string user_id;
    std::string content_type;
    std::string content_encoding;
    ack_mode ack = ack_mode::none;
    std::optional<sys_time> expiry;  // the sender's absolute-expiry-time
    storage::property_list properties;
    std::string body;
};

// Body, property names and values, and the system strings: what counts against the size limit.
std::size_t message_size(const message& m);

// A message handed to a device, locked until settled or until `lock_until`.
struct delivery {
    std::string lock_token;  // a GUID's text form; AMQP sends its 16 bytes as the delivery tag
    std::uint64_t sequence_number = 0;
    sys_time enqueued_time;
    sys_time expiry_time;              // the effective one (default TTL, capped by max TTL)
    std::uint32_t delivery_count = 0;  // including this delivery
    std::shared_ptr<const message> content;
};

enum class outcome : std::uint8_t { success, expired, delivery_count_exceeded, rejected, purged };
std::string_view to_string(outcome o);  // "Success", "Expired", ...

struct feedback_record {
    std::string original_message_id;
    std::string device_id;
    std::string device_generation_id;
    sys_time enqueued_time;  // when the outcome happened
    outcome what = outcome::success;
};

// Several records delivered to the service as one message, locked like a C2D message.
struct feedback_batch {
    std::string lock_token;
    sys_time enqueued_time;  // of the oldest record in the batch
    std::vector<feedback_record> records;
};

// The feedback message body: a JSON array of {originalMessageId, deviceGenerationId, deviceId,
// enqueuedTimeUtc, statusCode, description}.
std::string feedback_json(const std::vector<feedback_record>& records);

// What a storage key of this module belongs to (for changes another cluster node made): a
// device's queue (the device id), the feedback, or neither.
struct key_owner {
    std::optional<std::string> device;
    bool feedback = false;
};
key_owner owner_of_key(std::string_view key);

class c2d_service {
  public:
    c2d_service(storage::kv_store& kv, registry::device_registry& registry,
                connections::connection_table& connections, c2d_limits limits = {});
    ~c2d_service();

    // Rebuilds queues and the feedback stream from storage. Blocks. Call once, before serving.
    result<void> load();

    // Enqueues durably. errc::device_not_found for an unknown device, errc::queue_depth_exceeded
    // when its queue is full, errc::message_too_large beyond the limit. Then tells the device's
    // live connection, if any. Blocks.
    result<void> send(const std::string& device_id, message m, sys_time now);
    // The same for several messages, each with its own result, committed together (one sync):
    // what a protocol adapter wants for the messages one read brought. In order per device.
    struct outgoing {
        std::string device_id;
        message content;
    };
    std::vector<result<void>> send_many(std::vector<outgoing> batch, sys_time now);

    // Locks the oldest message that is neither locked nor expired and counts the delivery;
    // nullopt when there is none. Memory only.
    std::optional<delivery> receive(const std::string& device_id, sys_time now);

    // errc::message_lock_lost when `lock_token` does not name a message this device holds locked
    // (already settled, timed out, or never issued). Block.
    result<void> complete(const std::string& device_id, std::string_view lock_token, sys_time now);
    result<void> abandon(const std::string& device_id, std::string_view lock_token, sys_time now);
    result<void> reject(const std::string& device_id, std::string_view lock_token, sys_time now);
    // Abandons every message the device holds locked: its connection ended. Blocks.
    void release_all(const std::string& device_id, sys_time now);

    // Removes every message of the device with feedback Purged; returns how many. Blocks.
    result<std::size_t> purge(const std::string& device_id, sys_time now);
    // The device was deleted: drops its queue without feedback. Blocks.
    void forget(const std::string& device_id);

    std::size_t depth(const std::string& device_id) const;

    // Another cluster node changed this device's queue (or the feedback) in storage: memory
    // follows, and a connected device hears of new messages. Block.
    void refresh(const std::string& device_id);
    void refresh_feedback();

    // Times out locks and, with `expire`, expires messages and old feedback, across all queues.
    // Blocks; the hub calls it about once a second, expiring on one node of a cluster only (its
    // sweep duty), so an expiry reaches feedback once.
    void sweep(sys_time now, bool expire = true);

    // --- feedback (the service's /messages/serviceBound/feedback) --------------------------
    // Locks up to limits.feedback_batch_records unlocked records, oldest first; nullopt when
    // there are none. Memory only.
    std::optional<feedback_batch> receive_feedback(sys_time now);
    // Complete removes the batch's records; abandon unlocks them for another receiver; reject
    // drops them (the service refused them). errc::message_lock_lost for an unknown token. Block.
    result<void> complete_feedback(std::string_view lock_token, sys_time now);
    result<void> abandon_feedback(std::string_view lock_token, sys_time now);
    result<void> reject_feedback(std::string_view lock_token, sys_time now);
    std::size_t pending_feedback() const;

    // `notify` runs (on the thread that made the change; it must only post work) whenever
    // feedback becomes available to receive. Returns a token for unwatch_feedback.
    std::uint64_t watch_feedback(std::function<void()> notify);
    void unwatch_feedback(std::uint64_t token);

    const c2d_limits& limits() const { return limits_; }

  private:
    struct impl;
    std::unique_ptr<impl> impl_;
    c2d_limits limits_;
};

}  // namespace iothub::c2d
