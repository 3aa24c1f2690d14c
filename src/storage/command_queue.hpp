// Per-device durable command queues for cloud-to-device messages, and the feedback records that
// tell the service what became of each message.
//
// Semantics (Azure IoT Hub's): each device (or module) has one FIFO queue with a depth limit.
// Delivering a message locks it for a lock timeout and increments its delivery count; the device
// then completes it (removed, feedback Success), abandons it (unlocked for redelivery) or rejects
// it (removed, feedback Rejected). A lock that times out counts as an abandon. A message whose
// expiry passes is removed with feedback Expired; one abandoned more than the maximum delivery
// count is removed with feedback DeliveryCountExceeded; purging removes everything with feedback
// Purged. Order per device is preserved: the head is always delivered first.
//
// Durability as kv_store: an enqueue that returns success is in the write-ahead log (and fsync'ed
// with sync on); so is every state change and the feedback it generates, in the same commit.
//
// Thread safety: all methods may be called from any thread.
#pragma once

#include "common/error.hpp"
#include "common/time.hpp"
#include "storage/event_log.hpp"

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace iothub::storage {

struct queue_limits {
    std::size_t max_depth = 50;
    std::uint32_t max_delivery_count = 10;
    std::chrono::seconds lock_timeout{60};
};

struct command_message {
    std::string id;  // hub-assigned, unique per queue
    std::string message_id;
    std::string correlation_id;
    std::string user_id;
    std::string content_type;
    std::string content_encoding;
    std::string ack;  // none | positive | negative | full
    sys_time enqueued_time;
    sys_time expiry_time;
    std::uint32_t delivery_count = 0;
    std::string lock_token;  // set while locked
    property_list properties;
    std::string body;
};

enum class command_outcome : std::uint8_t {
    success,
    expired,
    delivery_count_exceeded,
    rejected,
    purged,
};

struct feedback_record {
    std::string original_message_id;
    std::string device_id;
    std::string module_id;
    std::string device_generation_id;
    command_outcome outcome = command_outcome::success;
    sys_time enqueued_time;
};

class command_queue {
  public:
    virtual ~command_queue() = default;

    // errc::queue_depth_exceeded when the queue is full.
    virtual result<void> enqueue(const std::string& queue, command_message message,
                                 const queue_limits& limits) = 0;

    // Locks and returns the head message that is neither locked nor expired, if any; expired
    // messages met on the way are removed (with feedback when their ack mode asks for it).
    virtual result<std::optional<command_message>> receive(const std::string& queue, sys_time now,
                                                           const queue_limits& limits) = 0;

    // errc::message_lock_lost when the token does not name a currently locked message.
    virtual result<void> complete(const std::string& queue, const std::string& lock_token) = 0;
    virtual result<void> abandon(const std::string& queue, const std::string& lock_token) = 0;
    virtual result<void> reject(const std::string& queue, const std::string& lock_token) = 0;

    // Removes every message; returns how many.
    virtual result<std::size_t> purge(const std::string& queue) = 0;
    virtual std::size_t depth(const std::string& queue) = 0;

    // Times out locks and expires messages across all queues.
    virtual void sweep(sys_time now, const queue_limits& limits) = 0;

    // The feedback stream: records wait here, durable, until the service completes the batch that
    // carried them; an abandoned or timed-out batch is offered again.
    struct feedback_batch {
        std::string lock_token;
        std::vector<feedback_record> records;
    };
    virtual result<std::optional<feedback_batch>> receive_feedback(std::size_t max_records,
                                                                   sys_time now) = 0;
    virtual result<void> complete_feedback(const std::string& lock_token) = 0;
    virtual result<void> abandon_feedback(const std::string& lock_token) = 0;
};

}  // namespace iothub::storage
