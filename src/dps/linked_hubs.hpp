// The IoT hubs the provisioning service assigns devices to. This hub is always one of them (it
// cannot be removed; its weight and whether hashed allocation uses it can be changed); others are
// further iothub instances (or anything serving IoT Hub's service REST API) linked by an owner
// connection string, as a DPS instance links hubs in Azure: `allocationWeight` (1 to 1000) for
// hashed allocation and `applyAllocationPolicy` (false: only enrollments that name the hub in
// `iotHubs`, or a custom allocation, send devices there).
//
// A device assigned to another hub is created there over that hub's service API (GET, then PUT
// of the device with its credentials, then the twin patch), from the registration's blocking
// thread; the other hub's certificate must chain to the system's trusted CAs, this hub's own CA,
// or the link's `caFile`. A hub that could not be reached is not called again for 10 s: its
// registrations fail at once meanwhile instead of each holding a blocking thread for the deadline.
//
// State: kv `dps/linked-hub/<lower-case host name>`, the link as the API shows it plus its key.
#pragma once

#include "common/error.hpp"
#include "dps/assignment.hpp"
#include "storage/kv_store.hpp"

#include <boost/json/object.hpp>

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace iothub::dps {

inline constexpr int max_allocation_weight = 1000;

class linked_hub_store {
  public:
    linked_hub_store(storage::kv_store& kv, std::string own_host_name);

    // This hub first, then the others by host name.
    result<std::vector<linked_hub>> list();
    // Adds or replaces the link to `host_name` from its API form: {"connectionString",
    // "allocationWeight"?, "applyAllocationPolicy"?, "caFile"?}, the connection string's HostName
    // being `host_name`; for this hub only the weight and applyAllocationPolicy.
    // errc::argument_invalid naming the fault.
    result<linked_hub> put(const boost::json::object& body, std::string_view host_name);
    // errc::not_found for an unknown host; errc::argument_invalid for this hub.
    result<void> remove(std::string_view host_name);

    const std::string& own_host_name() const { return own_; }

  private:
    storage::kv_store& kv_;
    std::string own_;
};

// The API form: the connection string's key is not shown.
boost::json::object describe(const linked_hub& h);

// Creates or updates the device in a linked hub (not this one) over its service API, as
// assign_device does here: credentials brought to the attestation's, a disabled device left
// disabled, the initial twin patched in when given. `own_ca` is trusted besides the link's.
result<void> assign_in_linked_hub(const linked_hub& hub, const device_assignment& a,
                                  const std::vector<std::filesystem::path>& own_ca);
// The twin of a device in a linked hub, as its service API answers it (for migrating it);
// errc::device_not_found when it has none there.
result<boost::json::object> twin_in_linked_hub(const linked_hub& hub, std::string_view device_id,
                                               const std::vector<std::filesystem::path>& own_ca);

}  // namespace iothub::dps
