// `iothub bench-c2d`: cloud-to-device throughput and latency against a running hub.
//
// It creates N devices, connects each as an MQTT client subscribed to its C2D topic (QoS 1, so
// each PUBACK completes the message), and from one AMQP service connection sends `--count`
// messages round-robin, at `--rate` per second or, with rate 0, as fast as the hub grants credit
// while keeping each device's queue under its depth limit. It reports send -> device latency
// (the send time travels in the body), messages per second received, and the hub's CPU seconds
// from /proc (the pid from the data directory's runtime.json, or --server-pid), hence messages
// per server CPU-second.
#pragma once

#include <CLI/CLI.hpp>

namespace iothub::bench {

void add_c2d_command(CLI::App& app, int& exit_code);

}  // namespace iothub::bench
