// The running hub: wires storage, registry, TLS, listeners and APIs together in start order, and
// takes them down in reverse. This is the only place that knows every subsystem.
//
// start() returns once every listener is bound (so /health answers 200 from then on);
// wait_for_signal() blocks until SIGINT or SIGTERM; stop() stops accepting, lets requests in
// flight finish within the grace period, flushes storage and removes runtime.json.
#pragma once

#include "common/error.hpp"
#include "config/settings.hpp"

#include <memory>
#include <string>

namespace iothub::app {

struct bound_ports {
    std::uint16_t https = 0;
    std::uint16_t mqtt = 0;
    std::uint16_t amqp = 0;
    std::uint16_t mqtt_plain = 0;  // 0 when off
};

class hub {
  public:
    static result<std::unique_ptr<hub>> start(const config::settings& settings);
    ~hub();

    const bound_ports& ports() const;
    void wait_for_signal();
    void stop();

  private:
    struct impl;
    explicit hub(std::unique_ptr<impl> i);
    std::unique_ptr<impl> impl_;
};

// First-start work without serving: data directory, identity and development certificates.
// Lets scripts learn the CA path and connection strings before the hub runs.
result<void> initialise(const config::settings& settings);

void configure_logging(const std::string& level);

// Call first thing in main, before any thread starts: SIGINT and SIGTERM are then delivered only
// to wait_for_signal(), whichever moment they arrive. SIGPIPE is ignored.
void block_stop_signals();

}  // namespace iothub::app
