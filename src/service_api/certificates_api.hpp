// CA certificates for X.509 device authentication, managed over the service API in Azure's
// resource style (RegistryRead to read, RegistryWrite to change):
//
//   PUT    /certificates/{name}   {"properties":{"certificate":"<PEM or Base64
//   DER>","isVerified":false}} GET    /certificates/{name}, GET /certificates  (-> {"value":[...]})
//   DELETE /certificates/{name}
//   POST   /certificates/{name}/generateVerificationCode  -> properties.verificationCode
//   POST   /certificates/{name}/verify  {"certificate":"<proof: CN = code, signed by the CA>"}
//
// A certificate: {"name","etag","properties":{"subject","expiry","thumbprint","isVerified",
// "created","updated","certificate"[,"verificationCode"]}}. If-Match is honoured.
#pragma once

#include "auth/policy.hpp"
#include "certificates/ca_store.hpp"
#include "http/router.hpp"

namespace iothub::service_api {

struct certificates_context {
    const auth::policy_set& policies;
    const auth::host_names& hosts;
    certificates::ca_store& store;
};

void add_certificate_routes(http::router& routes, certificates_context ctx);

}  // namespace iothub::service_api
