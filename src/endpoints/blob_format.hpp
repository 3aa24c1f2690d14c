// The bytes of one blob a storage-container endpoint writes: a batch of routed messages in one of
// the three encodings Azure offers (ARM's `encoding`: avro, avrodeflate, JSON), laid out as Azure
// lays them out so tools written against Azure's blobs read the hub's. This module owns the
// encoding only; naming, batching and uploading blobs belong to the storage sink.
#pragma once

#include "common/time.hpp"
#include "routing/config.hpp"
#include "routing/evaluation.hpp"
#include "storage/event_log.hpp"

#include <span>
#include <string>

namespace iothub::endpoints {

using routing::blob_encoding;
using routing::body_is_json;
using routing::keyword_of;

struct blob_message {
    sys_time enqueued_time;
    storage::property_list properties;  // application properties, enrichments included
    // By wire name (content-type, message-id, iothub-connection-device-id, ...), the connection's
    // stamp folded in.
    storage::property_list system_properties;
    std::string body;
};

// avro / avro_deflate: an Avro object container file (header only for an empty batch) of
// Azure's `Microsoft.Azure.Devices.Message` records. json: one JSON object per message, the
// records separated by "\n" (an empty batch is an empty blob). Throws std::bad_alloc when zlib
// cannot get memory, like any other allocation here.
std::string encode_blob(std::span<const blob_message> messages, blob_encoding encoding);

}  // namespace iothub::endpoints
