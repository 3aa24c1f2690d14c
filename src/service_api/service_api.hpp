// The service-facing REST API (what `azure-iothub` Registry and the CLI call): identity registry
// and statistics, each route authenticated with a shared access policy holding the right it needs
// (RegistryRead for reads, RegistryWrite for changes, ServiceConnect for service statistics).
//
// Handlers only translate HTTP to registry calls and back; every rule lives in the registry.
#pragma once

#include "auth/policy.hpp"
#include "http/router.hpp"
#include "registry/registry.hpp"

#include <functional>

namespace iothub::service_api {

struct context {
    registry::device_registry& registry;
    const auth::policy_set& policies;
    const auth::host_names& hosts;
    // What the registry does not store: connection state, last activity, queue depth.
    std::function<registry::live_state(const registry::identity&)> live =
        [](const registry::identity&) { return registry::live_state{}; };
    std::function<std::uint64_t()> connected_devices = [] { return std::uint64_t{0}; };
};

void add_routes(http::router& routes, context ctx);

}  // namespace iothub::service_api
