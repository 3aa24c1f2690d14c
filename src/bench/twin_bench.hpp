// `iothub bench-twin`: benchmarks for twins, direct methods and queries against a running hub.
//
//   --mode reported  devices update reported properties back to back: updates/s and the
//                    PATCH -> 204 latency;
//   --mode desired   the back end patches desired properties at a fixed rate: latency from the
//                    service call to the device's notification;
//   --mode method    the back end invokes a method at a fixed rate on devices that answer at
//                    once: round-trip latency;
//   --mode query     N twins (1% tagged): time for a selective WHERE, COUNT() and GROUP BY over
//                    all of them, every page included.
#pragma once

#include <CLI/CLI.hpp>

namespace iothub::bench {

void add_twin_command(CLI::App& app, int& exit_code);

}  // namespace iothub::bench
