#include "lifecycle/lifecycle.hpp"

#include "device_auth/device_auth.hpp"

#include <boost/json/serialize.hpp>
#include <spdlog/spdlog.h>

namespace iothub::lifecycle {

std::optional<std::string> ending_reason(const registry::identity_change& change) {
    if (!device_auth::ends_connections(change)) return std::nullopt;
    if (!change.after) return "the identity was deleted";
    if (change.after->status == registry::device_status::disabled) return "the device was disabled";
    return "the identity's credentials changed";
}

lifecycle_service::lifecycle_service(registry::device_registry& registry, targets t)
    : t_(std::move(t)) {
    registry.on_change([this](const registry::identity_change& c) { changed(c); });
}

void lifecycle_service::on_access_ended(access_observer observer) {
    access_observers_.push_back(std::move(observer));
}

void lifecycle_service::raise(const registry::identity& id, bool created) {
    if (!t_.events || !t_.events->interest().wants(hub_events::lifecycle_source)) return;
    auto twin = t_.twins.view_of(id);
    if (!twin) {
        spdlog::warn("lifecycle: no {} event for {}: {}", created ? "created" : "deleted",
                     id.device_id, twin.error().message());
        return;
    }
    t_.events->device_lifecycle({id.device_id, id.module_id}, created,
                                boost::json::serialize(*twin));
}

void lifecycle_service::end_access(const registry::identity_change& c) {
    if (auto reason = ending_reason(c)) {
        const auto& id = c.before ? *c.before : *c.after;
        // A device's modules go with it.
        t_.connections.close(id.device_id, id.module_id, *reason, id.module_id.empty());
        for (const auto& observe : access_observers_) observe(id.device_id, id.module_id);
    }
}

void lifecycle_service::remote_changed(const registry::identity_change& c) {
    end_access(c);
    if (c.before && !c.after) t_.connections.forget(c.before->device_id, c.before->module_id);
}

void lifecycle_service::changed(const registry::identity_change& c) {
    if (!c.before && c.after) raise(*c.after, true);
    if (c.before && !c.after) raise(*c.before, false);
    end_access(c);
    if (c.before && !c.after) {
        auto gone = *c.before;
        t_.offload([t = t_, gone] {
            t.twins.forget(gone);
            if (!gone.is_module()) t.c2d.forget(gone.device_id);
            t.activity.forget(gone.device_id, gone.module_id);
        });
    }
}

}  // namespace iothub::lifecycle
