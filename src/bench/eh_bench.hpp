// `iothub bench-eh`: how fast the Event Hubs-compatible endpoint delivers telemetry, against how
// fast devices write it, on a running hub.
//
// It creates N devices, each an MQTT client (TLS, or plain TCP with --mqtt-plain) on a thread of
// its own publishing QoS 0 telemetry at its share of `--rate` (0: as fast as the hub takes the
// bytes), while one Event Hubs reader (AMQP, every partition, from latest) reads the stream. The
// send time travels in the body, so it reports the write rate achieved, the read rate, the
// end-to-end latency (device send -> event received) and the hub's CPU seconds from /proc (the pid
// from the data directory's runtime.json, or --server-pid), hence events per hub CPU-second.
// QoS 0 keeps the writers from waiting on acknowledgements; the hub's TCP back-pressure is what
// holds a flat-out writer back, and events the hub did not store show as `lost`.
#pragma once

#include <CLI/CLI.hpp>

namespace iothub::bench {

void add_eh_command(CLI::App& app, int& exit_code);

}  // namespace iothub::bench
