// The HTTPS device API (what `azure-iot-device-http` and the C and C# SDKs' HTTP transports
// call), on the same port as the service API:
//
//   POST   /devices/{id}[/modules/{mid}]/messages/events         telemetry, one message or a batch
//   GET    /devices/{id}/messages/devicebound                    C2D poll: 204 empty, 200 a message
//   DELETE /devices/{id}/messages/devicebound/{lock}[?reject]    complete (or reject)
//   POST   /devices/{id}/messages/devicebound/{lock}/abandon     abandon
//   POST   /devices/{id}/files                                   start a file upload (a blob SAS)
//   POST   /devices/{id}/files/notifications[/{correlationId}]   report its outcome
//   PUT    /{container}/{deviceId}/{blobName...}                 the blob endpoint (files.cpp)
//
// Each request runs in a request-scoped device session for the identity in its path, which
// authenticates it (a SAS token in `Authorization`: the device's or module's key, or a policy
// with DeviceConnect; or the TLS client certificate) and holds every rule a device sees; the
// handlers translate only.
#pragma once

#include "device_auth/device_auth.hpp"
#include "file_upload/blob_containers.hpp"
#include "file_upload/file_upload.hpp"
#include "http/router.hpp"
#include "session/device_session.hpp"

namespace iothub::device_api {

inline constexpr std::size_t default_max_batch_bytes = 256 * 1024;

struct context {
    device_auth::device_authenticator& authenticator;  // the file routes
    session::services& sessions;
    std::size_t max_batch_bytes = default_max_batch_bytes;
    file_upload::file_upload_service* files = nullptr;  // null: no file upload routes
};

void add_routes(http::router& routes, context ctx);

// The identity a request's credentials prove, which must be the one in its path ({id}, {mid}):
// the rule every device route shares.
result<device_auth::device_principal> authenticate(device_auth::device_authenticator& auth,
                                                   const http::request& req);

// File upload: the device's session calls and the blob endpoint (files.cpp).
void add_file_routes(http::router& routes, device_auth::device_authenticator& auth,
                     file_upload::file_upload_service& files);

// Reads of the containers the hub writes (routing's storage endpoints), under an account SAS
// (blob_reads.cpp). Register last: `/{container}` would otherwise shadow API paths.
struct blob_read_context {
    file_upload::blob_containers& blobs;
    const auth::policy_set& policies;
};
void add_blob_read_routes(http::router& routes, blob_read_context ctx);

}  // namespace iothub::device_api
