// The provisioning service's back-end REST API (DPS's, api-version 2021-10-01, any accepted), on
// the hub's HTTPS port, so the unmodified `ProvisioningServiceClient` works with
// `iothub connection-string --dps`: individual enrollments and enrollment groups (create or
// update with If-Match, get, delete, attestation mechanism, query with continuation, bulk).
// Literal path segments match in any case (the SDK writes both enrollmentGroups and
// enrollmentgroups), and registration states (get, delete, query by group). Requests are signed
// with the provisioningserviceowner policy's key; reads need EnrollmentRead (registration states
// RegistrationStatusRead), writes EnrollmentWrite (RegistrationStatusWrite).
//
// And the device side (DPS's runtime API over HTTPS, for `azure-iot-provisioning-device-http`):
// `PUT /{idScope}/registrations/{id}/register` answers 202 with an operation id and Retry-After,
// `GET /{idScope}/registrations/{id}/operations/{operationId}` the outcome, `POST
// /{idScope}/registrations/{id}` the registration state; the device signs with its SAS.
// Failures answer with DPS's error body.
//
// And the hubs devices are assigned to: `GET /linkedHubs`, `PUT /linkedHubs/{hostName}` with
// {connectionString, allocationWeight?, applyAllocationPolicy?, caFile?} (this hub: only
// allocationWeight and applyAllocationPolicy), `DELETE /linkedHubs/{hostName}`; keys are never
// shown.
#pragma once

#include "auth/policy.hpp"
#include "dps/enrollments.hpp"
#include "dps/linked_hubs.hpp"
#include "dps/registrations.hpp"
#include "http/router.hpp"

namespace iothub::service_api {

struct dps_context {
    const auth::policy_set& policies;
    const auth::host_names& hosts;
    dps::enrollment_store& enrollments;
    dps::registration_service& registrations;
    dps::linked_hub_store& linked_hubs;
};

void add_dps_routes(http::router& routes, dps_context ctx);

}  // namespace iothub::service_api
