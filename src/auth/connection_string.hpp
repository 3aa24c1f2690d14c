// Azure connection strings: `Key=Value` pairs separated by ';', keys case-sensitive, values may
// contain '=' (Base64 keys) but not ';'.
#pragma once

#include "common/error.hpp"

#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace iothub::auth {

class connection_string {
  public:
    static result<connection_string> parse(std::string_view text);

    // Keys are case-sensitive, as the IoT Hub SDKs read them; keys and values are trimmed of
    // spaces at parse.
    std::optional<std::string> get(std::string_view key) const;
    // Event Hubs connection strings match keys ignoring case (`EntityPath`, `entityPath`).
    std::optional<std::string> get_ignoring_case(std::string_view key) const;
    bool has(std::string_view key) const { return fields_.contains(std::string(key)); }
    void set(std::string key, std::string value) { fields_[std::move(key)] = std::move(value); }

    // Fields in the conventional Azure order (HostName, DeviceId, ModuleId, key fields), then the
    // rest alphabetically.
    std::string to_string() const;

  private:
    std::map<std::string, std::string, std::less<>> fields_;
};

std::string service_connection_string(std::string_view host, std::string_view policy,
                                      std::string_view key);
std::string device_connection_string(std::string_view host, std::string_view device_id,
                                     std::string_view key);

// The hub's Event Hubs-compatible entity is named after the first label of its host name
// ("myhub.example" -> "myhub"), and clients reach it with an Event Hubs connection string.
std::string event_hub_name(std::string_view host);
std::string event_hubs_connection_string(std::string_view host, std::string_view policy,
                                         std::string_view key);
std::string module_connection_string(std::string_view host, std::string_view device_id,
                                     std::string_view module_id, std::string_view key);

}  // namespace iothub::auth
