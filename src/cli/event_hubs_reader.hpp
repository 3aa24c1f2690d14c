// A reader of the hub's Event Hubs-compatible endpoint (protocol.md section 8), for `iothub
// monitor` and `iothub bench-eh`: the telemetry stream as an Event Hubs consumer sees it.
//
// One AMQP connection to the hub's AMQP port, the way the Event Hubs SDKs use it: TLS trusting the
// hub's CA, no SASL, a CBS put-token with an Event Hubs SAS token for `sb://{host}/{entity}`
// (signed with the policy key's text, as Event Hubs signs), a `$management` READ for the
// partition ids, then one receiver per partition on `{entity}/ConsumerGroups/{cg}/Partitions/{n}`
// whose selector filter says where to start. Events are accepted as they are handed over.
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

// Where each partition's receiver starts.
struct eh_start {
    enum kind_t { earliest, latest, sequence, time } kind = latest;
    std::int64_t value = 0;  // sequence: the first sequence number read; time: ms since the epoch,
                             // events enqueued after it
};

// The selector filter's text for a start position (protocol.md 8.4).
std::string selector_for(const eh_start& s);

struct eh_event {
    int partition = 0;
    std::int64_t sequence_number = 0;
    std::string offset;
    std::int64_t enqueued_ms = 0;                                        // x-opt-enqueued-time
    std::string body;                                                    // the data section's bytes
    std::vector<std::pair<std::string, std::string>> properties;         // application properties
    std::vector<std::pair<std::string, std::string>> system_properties;  // message properties
                                                                         // and IoT Hub annotations
};

struct eh_reader_options {
    std::string entity;  // empty: the built-in endpoint; else an event hub routing hosts
    std::string consumer_group = "$Default";
    std::vector<int> partitions;  // empty: every partition the hub reports
    eh_start start;
    int credit = 500;  // per partition receiver; replenished as events are taken
    // Runs on the reader's event loop thread, one event at a time, in order per partition.
    std::function<void(const eh_event&)> on_event;
};

class event_hubs_reader {
  public:
    // Connects, authenticates and attaches every partition receiver, failing after `timeout`.
    static result<std::unique_ptr<event_hubs_reader>> open(const hub_access& hub,
                                                           eh_reader_options options,
                                                           std::chrono::milliseconds timeout);
    ~event_hubs_reader();  // closes the connection and joins the event loop
    event_hubs_reader(const event_hubs_reader&) = delete;
    event_hubs_reader& operator=(const event_hubs_reader&) = delete;

    // The partitions being read.
    std::vector<int> partitions() const;
    // Why the connection failed, or empty while it is healthy.
    std::string failure() const;

    struct impl;

  private:
    explicit event_hubs_reader(std::unique_ptr<impl> i);
    std::unique_ptr<impl> impl_;
};

}  // namespace iothub::cli
