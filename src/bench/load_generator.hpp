// `iothub bench`: a load generator for the MQTT device endpoint, and for any MQTT broker that
// accepts the same topics (mosquitto, for side-by-side comparison).
//
// It simulates N devices, each its own MQTT connection, publishing telemetry at QoS 0 or 1,
// unthrottled (each device keeps a window of messages in flight) or at a fixed total rate, for a
// duration or a message count. It measures, after a warm-up: messages per second, publish-to-
// PUBACK latency, publish-to-visible latency (the message read back from the hub's telemetry
// stream, or from an MQTT subscription on a plain broker), and, given the server's pid, the
// server's CPU time from /proc, hence messages per server CPU-second.
#pragma once

#include <CLI/CLI.hpp>

namespace iothub::bench {

void add_command(CLI::App& app, int& exit_code);

}  // namespace iothub::bench
