#include "telemetry/telemetry.hpp"

namespace iothub::telemetry {

result<void> telemetry_service::check(const storage::event_record& message) const {
    auto size = storage::event_size(message);
    if (size > max_message_size_)
        return error(errc::message_too_large, "The message is " + std::to_string(size) +
                                                  " bytes; the limit is " +
                                                  std::to_string(max_message_size_) + ".");
    return {};
}

void telemetry_service::ingest(const device_auth::device_principal& sender,
                               storage::event_record message,
                               std::function<void(result<void>)> done) {
    if (auto ok = check(message); !ok) return done(ok.error());
    std::vector<storage::event_record> batch;
    batch.push_back(std::move(message));
    ingest(sender, std::move(batch), std::move(done));
}

void telemetry_service::ingest(const device_auth::device_principal& sender,
                               std::vector<storage::event_record> messages,
                               std::function<void(result<void>)> done) {
    const std::string auth_method = sender.auth_method();
    for (auto& message : messages) {
        auto& sys = message.system_properties;
        // Connection properties are the hub's word on who sent it: anything the device claimed
        // under these names is replaced.
        std::erase_if(sys, [](const auto& p) {
            return p.first.rfind("iothub-connection-", 0) == 0 ||
                   p.first == "iothub-message-source";
        });
        sys.emplace_back("iothub-connection-device-id", sender.device_id);
        if (!sender.module_id.empty())
            sys.emplace_back("iothub-connection-module-id", sender.module_id);
        sys.emplace_back("iothub-connection-auth-method", auth_method);
        sys.emplace_back("iothub-connection-auth-generation-id", sender.generation_id);
        sys.emplace_back("iothub-message-source", "Telemetry");
    }
    log_.append(partition_of(sender.device_id), std::move(messages),
                [done = std::move(done)](result<std::vector<std::uint64_t>> r) {
                    if (!r) return done(r.error());
                    done({});
                });
}

}  // namespace iothub::telemetry
