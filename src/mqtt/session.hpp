// One MQTT connection's protocol state, free of I/O: bytes and the clock go in, bytes to send and
// calls to a handler come out. The handler supplies the meaning (authentication, what a topic is
// for); this class supplies MQTT 3.1.1's rules:
//
//  - the first packet must be CONNECT, within the connect timeout; a second CONNECT closes;
//  - protocol level 4 only (else CONNACK 1); an empty client id is refused (CONNACK 2);
//  - while the handler authenticates, nothing else is decoded (reading_paused());
//  - keep-alive: silence longer than 1.5 x the client's keep-alive (capped) closes;
//  - QoS 2 in any form closes (IoT Hub does not support it); SUBACK grants at most QoS 1;
//  - inbound QoS 1 PUBLISHes are acknowledged in the order they arrived, each once the handler
//    has called acknowledge() for it (a D2C PUBACK after the message is durable);
//  - anything malformed closes the connection.
//
// Threading: none. The owner calls every method from one thread (the connection's shard).
#pragma once

#include "common/fifo.hpp"
#include "mqtt/codec.hpp"

#include <chrono>
#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <string_view>

namespace iothub::mqtt {

using clock = std::chrono::steady_clock;

struct session_limits {
    std::size_t max_packet_size = 256 * 1024 + 16 * 1024;  // a 256 KB message plus topic and bag
    std::chrono::seconds connect_timeout{10};
    std::uint16_t max_keep_alive = 1767;   // Azure's ceiling (seconds)
    std::size_t max_unacknowledged = 256;  // inbound QoS 1 in processing before reading pauses
    std::size_t max_outbound_inflight = 16;
};

class session_handler {
  public:
    virtual ~session_handler() = default;
    // A CONNECT passed the protocol checks: answer with accept() or refuse(), now or later.
    virtual void on_connect(const connect_packet& connect) = 0;
    // A PUBLISH from the client. For QoS 1 call acknowledge(packet_id) when it is processed.
    virtual void on_publish(publish_packet&& publish) = 0;
    // Returns the granted QoS (0 or 1) or suback_failure. `s.qos` is already capped at 1.
    virtual std::uint8_t on_subscribe(const subscription& s) = 0;
    virtual void on_unsubscribe(const std::string& filter) = 0;
    // The client acknowledged a QoS 1 PUBLISH the hub sent.
    virtual void on_delivered(std::uint16_t packet_id) = 0;
};

class session {
  public:
    enum class state { awaiting_connect, authenticating, connected, closed };

    session(session_handler& handler, session_limits limits, clock::time_point now);

    void receive(std::string_view bytes, clock::time_point now);
    void accept(bool session_present);
    void refuse(connack_code code, std::string reason);
    void acknowledge(std::uint16_t packet_id);
    // Sends a PUBLISH to the client. QoS 1 gets a packet id (returned) that on_delivered reports.
    std::uint16_t publish(std::string_view topic, std::string_view payload, std::uint8_t qos,
                          bool dup = false);
    bool can_publish() const { return outbound_.size() < limits_.max_outbound_inflight; }
    void close(std::string reason);
    // Checks timeouts; call at deadline().
    void tick(clock::time_point now);
    clock::time_point deadline() const;

    state current() const { return state_; }
    bool reading_paused() const;
    // Bytes to write; the owner takes them (swap) and writes them before closing.
    std::string& output() { return out_; }
    bool closed() const { return state_ == state::closed; }
    // Why the session closed, and whether the client said goodbye (DISCONNECT) first.
    const std::string& close_reason() const { return close_reason_; }
    bool graceful() const { return graceful_; }
    std::uint16_t keep_alive() const { return keep_alive_; }
    std::size_t unacknowledged() const { return inbound_.size(); }

  private:
    void dispatch(packet&& p);
    void flush_acks();

    session_handler& handler_;
    session_limits limits_;
    decoder decoder_;
    state state_ = state::awaiting_connect;
    clock::time_point opened_;
    clock::time_point last_received_;
    std::uint16_t keep_alive_ = 0;
    std::string out_;
    std::string close_reason_;
    bool graceful_ = false;
    // Inbound QoS 1 in arrival order; `done` once the handler acknowledged it.
    struct pending_ack {
        std::uint16_t packet_id;
        bool done;
    };
    fifo<pending_ack> inbound_;
    std::set<std::uint16_t> outbound_;
    std::uint16_t next_packet_id_ = 1;
};

}  // namespace iothub::mqtt
