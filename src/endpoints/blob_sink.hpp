// The storage-container endpoint the hub hosts itself (no connection string): routed messages are
// gathered per partition and written as one blob per batch into the hub's own Blob endpoint, in
// container `containerName`, named by `fileNameFormat` ({iothub} {partition} {YYYY} {MM} {DD}
// {HH} {mm}, the batch's start in UTC), encoded as Avro (Azure's schema), Avro with deflate or
// JSON lines. A batch is written when it reaches `maxChunkSizeInBytes` or has waited
// `batchFrequencyInSeconds`; the positions it covers are saved after the blob is durable, so a
// crash rewrites a batch (at least once), never loses one. A name already taken (several batches
// in one minute, which Azure's 60 s minimum never makes) gets `-1`, `-2`, ... appended. Unlike
// Azure, no empty blob is written for a window without messages.
#pragma once

#include "file_upload/blob_containers.hpp"
#include "routing/config.hpp"
#include "routing/sink.hpp"

#include <memory>

namespace iothub::endpoints {

// `{iothub}/{partition}/...` filled in for one batch.
std::string blob_name(std::string_view format, std::string_view hub, int partition, sys_time start);

result<std::unique_ptr<routing::sink>> make_blob_sink(const routing::endpoint& e,
                                                      file_upload::blob_containers& blobs,
                                                      storage::kv_store& kv, std::string hub_name);

}  // namespace iothub::endpoints
