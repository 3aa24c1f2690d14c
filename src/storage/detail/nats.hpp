// The libnats handles the JetStream engine holds, owned, and how NATS failures read as the hub's
// errors: when the storage cluster cannot answer (no servers, no quorum, timeouts) the caller
// sees errc::service_unavailable, which every protocol turns into its "server busy" answer.
#pragma once

#include "common/error.hpp"

#include <nats/nats.h>

#include <memory>
#include <string>
#include <string_view>

namespace iothub::storage::detail {

struct nats_deleter {
    void operator()(natsConnection* p) const { natsConnection_Destroy(p); }
    void operator()(natsOptions* p) const { natsOptions_Destroy(p); }
    void operator()(jsCtx* p) const { jsCtx_Destroy(p); }
    void operator()(natsMsg* p) const { natsMsg_Destroy(p); }
    void operator()(natsSubscription* p) const { natsSubscription_Destroy(p); }
    void operator()(jsStreamInfo* p) const { jsStreamInfo_Destroy(p); }
    void operator()(jsPubAck* p) const { jsPubAck_Destroy(p); }
    void operator()(jsMsgMetaData* p) const { jsMsgMetaData_Destroy(p); }
};
template <class T>
using nats_ptr = std::unique_ptr<T, nats_deleter>;

// JetStream's "wrong last sequence" (a compare-and-set that lost).
inline constexpr jsErrCode js_wrong_last_sequence = static_cast<jsErrCode>(10071);

error nats_error(std::string_view what, natsStatus status,
                 jsErrCode code = static_cast<jsErrCode>(0));

// Stream names allow letters, digits, '-' and '_'; subjects use '.' between tokens. Log names
// ("[A-Za-z0-9._-]+") keep letters, digits and '-'; anything else is written as "_XX" (hex), so
// two names never map to one stream.
std::string stream_token(std::string_view name);

}  // namespace iothub::storage::detail
