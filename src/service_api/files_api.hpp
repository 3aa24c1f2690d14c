// The service side of file upload over REST, a hub extension (Azure keeps uploaded files in a
// storage account the back end reads directly; here the hub holds them): ServiceConnect.
//
//   GET /files[?deviceId=ID]          [{"deviceId","blobName","sizeInBytes","lastUpdatedTime",
//                                       "etag","contentMD5"}]
//   GET /files/{deviceId}/{blobName}  the file's bytes (application/octet-stream)
//
// File notifications are AMQP-only, as in Azure, and live with the AMQP endpoint.
#pragma once

#include "auth/policy.hpp"
#include "file_upload/file_upload.hpp"
#include "http/router.hpp"

namespace iothub::service_api {

struct files_context {
    const auth::policy_set& policies;
    const auth::host_names& hosts;
    file_upload::file_upload_service& files;
};

void add_file_routes(http::router& routes, files_context ctx);

}  // namespace iothub::service_api
