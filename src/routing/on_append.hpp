// The appender: device messages' routes decided as the messages arrive, on the thread that
// received them, when the configuration allows it (router_settings::route_on_append). Internal to
// the module.
#pragma once

#include "routing/delivery.hpp"
#include "telemetry/telemetry.hpp"

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace iothub::routing {

class router::appender final : public telemetry::dispatcher {
  public:
    explicit appender(router& r);
    ~appender() override;

    // Whether `c` can be decided on append: every enabled device-message route and the fallback
    // lead to the built-in stream or a hosted event hub, and neither their conditions nor those
    // endpoints' enrichments read the twin (a lookup that may block).
    static bool decidable(const routing_config& c);
    // The endpoints (lower-case) that take device messages under `c`.
    static std::vector<std::string> takers(const routing_config& c);

    // Works out what `c` asks of each message: the hosted event hubs' logs by lower-case name,
    // and each endpoint's health (its worker's) by the same key. Until a dispatch sees it, the
    // previous plan serves.
    result<void> prepare(
        std::shared_ptr<const routing_config> c,
        const std::map<std::string, storage::event_log*>& hosted,
        const std::function<std::shared_ptr<health_cell>(const std::string&)>& health_of);

    // Evaluates each message's routes and appends it to the log of every endpoint they lead to;
    // one completion when all are durable. The router has prepared a plan.
    void dispatch(int partition, std::vector<storage::event_record> messages,
                  std::function<void(result<void>)> done) override;

  private:
    struct plan;
    router& r_;
    std::mutex m_;
    std::shared_ptr<const plan> plan_;
};

}  // namespace iothub::routing
