// The Event Hubs-compatible face of the telemetry stream, as `@azure/event-hubs` and Python's
// `azure.eventhub` consumers read it: the receiver's selector filter, the event message with its
// x-opt-* and iothub-* annotations, and the `$management` READ answers. No I/O; the AMQP server
// attaches these to links.
#pragma once

#include "common/error.hpp"
#include "storage/event_log.hpp"

#include <proton/message.h>

#include <optional>
#include <string>
#include <string_view>

namespace iothub::amqp {

// A receiver's `apache.org:selector-filter:string`, e.g. "amqp.annotation.x-opt-offset > '-1'"
// (earliest), "... > '@latest'", "amqp.annotation.x-opt-sequence-number >= '42'",
// "amqp.annotation.x-opt-enqueued-time > '1700000000000'". Offsets are sequence numbers as text.
// errc::argument_invalid for anything else.
result<storage::read_position> parse_selector(std::string_view filter);

// Reads the selector out of a source terminus's filter map; nullopt when there is none (then the
// receiver starts at the end of the stream, as Event Hubs does).
result<std::optional<storage::read_position>> selector_of(pn_data_t* filter);

// A stored telemetry event as an Event Hubs message.
void fill_event(pn_message_t* out, const storage::stored_event& e);

// `$management` READ answers: the body is an AMQP map (amqp-value).
void fill_eventhub_info(pn_message_t* out, std::string_view name, sys_time created,
                        int partition_count);
void fill_partition_info(pn_message_t* out, std::string_view name, int partition,
                         const storage::partition_info& info);

}  // namespace iothub::amqp
