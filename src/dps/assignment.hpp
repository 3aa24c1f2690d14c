// What an assignment is, between the registration service that decides it and the hubs that
// carry it out (this one's registry and twins, or a linked hub's service API): the hub, and the
// device identity and twin to create or update there.
#pragma once

#include <boost/json/object.hpp>

#include <optional>
#include <string>

namespace iothub::dps {

// A hub devices may be assigned to (linked_hubs.hpp keeps them).
struct linked_hub {
    std::string host_name;
    std::string connection_string;  // empty for this hub
    int allocation_weight = 1;
    bool apply_allocation_policy = true;
    std::string ca_file;  // trusted for this link besides the others

    bool is_self() const { return connection_string.empty(); }
};

enum class device_authentication { sas, self_signed, certificate_authority };

struct device_assignment {
    linked_hub hub;  // where the device goes
    std::string device_id;
    device_authentication authentication = device_authentication::sas;
    std::string primary_key, secondary_key;                // sas
    std::string primary_thumbprint, secondary_thumbprint;  // self_signed
    bool iot_edge = false;
    // Applied (tags and desired properties) when set.
    std::optional<boost::json::object> initial_twin;
    // The device moves from this hub and its data goes along: its twin there (tags and desired
    // properties), when it can be read, replaces initial_twin.
    std::optional<linked_hub> migrate_from;
};

// The part of a twin an assignment writes (tags and desired properties, without the desired
// properties' $metadata and $version): from an enrollment's initialTwin, a webhook's, or the twin
// of the hub a device leaves. Members of another shape are left out; empty when nothing is left.
boost::json::object twin_patch(const boost::json::object& twin);

}  // namespace iothub::dps
