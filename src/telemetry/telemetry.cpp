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

result<void> telemetry_service::check_batch(
    const std::vector<storage::event_record>& messages) const {
    if (messages.empty()) return error(errc::argument_invalid, "The batch holds no messages.");
    std::size_t total = 0;
    for (std::size_t i = 0; i < messages.size(); ++i) {
        auto size = storage::event_size(messages[i]);
        if (size > max_message_size_)
            return error(errc::message_too_large, "Message " + std::to_string(i + 1) +
                                                      " of the batch is " + std::to_string(size) +
                                                      " bytes; the limit is " +
                                                      std::to_string(max_message_size_) + ".");
        total += size;
    }
    if (total > max_message_size_)
        return error(errc::message_too_large, "The batch is " + std::to_string(total) +
                                                  " bytes; the limit is " +
                                                  std::to_string(max_message_size_) + ".");
    return {};
}

std::shared_ptr<const storage::property_list> telemetry_service::stamp_for(
    const device_auth::device_principal& sender) {
    auto stamp = std::make_shared<storage::property_list>();
    stamp->emplace_back("iothub-connection-device-id", sender.device_id);
    if (!sender.module_id.empty())
        stamp->emplace_back("iothub-connection-module-id", sender.module_id);
    stamp->emplace_back("iothub-connection-auth-method", sender.auth_method());
    stamp->emplace_back("iothub-connection-auth-generation-id", sender.generation_id);
    stamp->emplace_back("iothub-message-source", "Telemetry");
    return stamp;
}

void telemetry_service::ingest(const device_auth::device_principal& sender,
                               storage::event_record message,
                               std::function<void(result<void>)> done) {
    if (auto ok = check(message); !ok) return done(ok.error());
    std::vector<storage::event_record> batch;
    batch.push_back(std::move(message));
    ingest(sender, stamp_for(sender), std::move(batch), std::move(done));
}

void telemetry_service::ingest(const device_auth::device_principal& sender,
                               std::shared_ptr<const storage::property_list> stamp,
                               std::vector<storage::event_record> messages,
                               std::function<void(result<void>)> done) {
    for (auto& message : messages) {
        // Connection properties are the hub's word on who sent it: anything the device claimed
        // under these names is dropped, and the stamp supplies the real ones.
        std::erase_if(message.system_properties, [](const auto& p) {
            return p.first.rfind("iothub-connection-", 0) == 0 ||
                   p.first == "iothub-message-source";
        });
        message.stamp = stamp;
    }
    append(partition_of(sender.device_id), std::move(messages), std::move(done));
}

void telemetry_service::append(int partition, std::vector<storage::event_record> messages,
                               std::function<void(result<void>)> done) {
    if (auto* d = dispatcher_.load())
        return d->dispatch(partition, std::move(messages), std::move(done));
    log_.load()->append(partition, std::move(messages),
                        [done = std::move(done)](result<std::vector<std::uint64_t>> r) {
                            if (!r) return done(r.error());
                            done({});
                        });
}

}  // namespace iothub::telemetry
