// The service side of the hub's AMQP endpoint, for the command-line client and the benchmarks:
// cloud-to-device sends and the feedback queue (protocol.md 3.2, 3.9, 3.10).
//
// One connection, the way the Node service SDK makes it: TLS to the AMQP port trusting the hub's
// CA, no SASL, then a CBS put-token on `$cbs` with a service token for the hub. It runs on Qpid
// Proton's C++ container, whose event loop lives on a thread owned here; callers on other threads
// hand it work through the connection's work queue and wait for the answers.
#pragma once

#include "cli/hub_client.hpp"
#include "common/error.hpp"

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace iothub::cli {

struct c2d_message {
    std::string device_id;
    std::string body;
    std::vector<std::pair<std::string, std::string>> properties;  // application properties
    std::string ack;  // `iothub-ack`: none, positive, negative or full; empty: not sent
    std::string message_id, correlation_id, content_type;
    std::int64_t expiry_ms = 0;  // absolute-expiry-time, ms since the epoch; 0: the hub's default
};

// How the hub settled one send.
struct send_outcome {
    bool accepted = false;
    std::string condition;  // why not: the rejection's AMQP condition, or a connection failure
    std::string description;
};

class amqp_service_client {
  public:
    // Connects to the hub's AMQP port and authenticates, failing after `timeout`.
    static result<std::unique_ptr<amqp_service_client>> open(const hub_access& hub,
                                                             std::chrono::milliseconds timeout);
    ~amqp_service_client();  // closes the connection and joins the event loop
    amqp_service_client(const amqp_service_client&) = delete;
    amqp_service_client& operator=(const amqp_service_client&) = delete;

    // Sends once the hub grants credit (in call order); `done` runs on the event loop's thread
    // when the hub has settled the message, or the connection has failed.
    using send_callback = std::function<void(const send_outcome&)>;
    void send_async(c2d_message m, send_callback done);
    // Sends one message and waits for the hub's disposition.
    result<send_outcome> send(c2d_message m, std::chrono::milliseconds timeout);

    // Attaches the feedback receiver. Each feedback message's body (a JSON array of records) goes
    // to `on_batch` on the event loop's thread and is accepted when it returns; returning false
    // asks for no more. Credit is granted one message at a time, so nothing is accepted unseen.
    void receive_feedback(std::function<bool(const std::string& body)> on_batch);

    // Why the connection failed, or empty while it is healthy.
    std::string failure() const;

    struct impl;

  private:
    explicit amqp_service_client(std::unique_ptr<impl> i);
    std::unique_ptr<impl> impl_;
};

// Azure's error name for a rejected C2D send, for people: DeviceNotFound for amqp:not-found,
// DeviceMaximumQueueDepthExceeded for amqp:resource-limit-exceeded; else the condition itself.
std::string describe_rejection(const send_outcome& o);

}  // namespace iothub::cli
