// What the benchmark commands share: provisioning devices and summarising latencies.
#pragma once

#include "cli/hub_client.hpp"

#include <boost/json/object.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace iothub::bench::detail {

// Creates (or refreshes) `<prefix>0 .. <prefix>N-1` with keys chosen here, 100 per bulk call, so
// no key has to be read back. Returns the keys in order; throws std::runtime_error on failure.
std::vector<std::string> create_devices(const cli::hub_access& hub, const std::string& prefix,
                                        std::size_t count);

// User plus system CPU seconds of process `pid` so far, from /proc/PID/stat; 0 if pid <= 0 or
// the process is gone.
double process_cpu_seconds(int pid);

// The p-th percentile of microsecond samples, in milliseconds (reorders `v`).
double percentile(std::vector<std::uint32_t>& v, double p);

// {"samples", "p50", "p90", "p99", "p999", "max"} in milliseconds.
boost::json::object latency_json(std::vector<std::uint32_t>& v);

}  // namespace iothub::bench::detail
