// Which linked hub a registration's device goes to, by the enrollment's allocationPolicy:
//
//   hashed  (the default; geoLatency too, as all hubs here are in one place) weighted rendezvous
//           hashing of the registration id over the candidates: the same device lands on the
//           same hub each time, and linking another hub moves only the devices it takes over.
//   static  the enrollment's single hub (`iotHubs[0]`, else `iotHubHostName`).
//   custom  a webhook (customAllocationDefinition.webhookUrl) is POSTed Azure's AllocationRequest
//           (the enrollment with its keys left out, the device's runtime context with its
//           `payload`, the candidates' host names) and answers {iotHubHostName, initialTwin?,
//           payload?}; the payload goes back to the device, the twin replaces the enrollment's.
//
// The candidates are the linked hubs the enrollment names in `iotHubs`, else those with
// applyAllocationPolicy. With reprovisionPolicy.updateHubAssignment false a device already
// assigned stays on its hub while that hub is linked.
#pragma once

#include "common/error.hpp"
#include "dps/enrollments.hpp"
#include "dps/linked_hubs.hpp"

#include <boost/json/object.hpp>

#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace iothub::dps {

struct allocation_input {
    const boost::json::object& enrollment;
    enrollment_kind kind;
    std::string_view registration_id;
    bool x509 = false;                  // how the device attested, for the webhook
    const boost::json::value& payload;  // what the device sent with its registration
    // The device's assignment before this one, if any.
    std::string current_hub, current_device_id;
};

struct allocation {
    linked_hub hub;
    std::optional<boost::json::object> initial_twin;  // a webhook's, overriding the enrollment's
    boost::json::value payload;                       // a webhook's, for the device
};

// POSTs an AllocationRequest and answers the response's JSON object. Errors say what went wrong.
using webhook_function = std::function<result<boost::json::object>(
    std::string_view url, const boost::json::object& request)>;
// The webhook over HTTP(S), trusting the system's CAs and `extra_ca`.
webhook_function http_webhook(std::vector<std::filesystem::path> extra_ca);

// errc::argument_invalid (no candidate, a hub that is not linked, a webhook answer naming another
// hub) or the webhook's failure; the registration then fails with that message.
result<allocation> allocate(const allocation_input& in, const std::vector<linked_hub>& hubs,
                            const webhook_function& webhook);

}  // namespace iothub::dps
