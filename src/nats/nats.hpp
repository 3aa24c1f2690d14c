// The hub's NATS connections (the JetStream engine's, the cluster bus's): how they are set up from
// the cluster settings, their libnats handles owned, and how NATS failures read as the hub's
// errors: when the cluster cannot answer (no servers, no quorum, timeouts) the caller sees
// errc::service_unavailable, which every protocol turns into its "server busy" answer.
#pragma once

#include "common/error.hpp"
#include "nats/settings.hpp"

#include <nats/nats.h>

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace iothub::nats {

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

// Connects, reconnecting for ever afterwards (a hub node outlives any NATS outage). Fails with
// errc::service_unavailable when no server answers, errc::argument_invalid for bad settings
// (files that do not load).
result<nats_ptr<natsConnection>> connect(const connection_settings& settings);

// JetStream's "wrong last sequence" (a compare-and-set that lost).
inline constexpr jsErrCode js_wrong_last_sequence = static_cast<jsErrCode>(10071);

// Whether a failure says NATS cannot answer now (no servers, no quorum, a timeout), so that the
// same request may succeed later.
bool unavailable(natsStatus status, jsErrCode code = static_cast<jsErrCode>(0));

// Whether a failure came back at once and proves the request was not carried out (no responders,
// no stream or meta leader: an election after a server restart), so it may be sent again as is.
bool refused_at_once(natsStatus status, jsErrCode code);

// "what: libnats' words (its last error)".
std::string nats_text(std::string_view what, natsStatus status);

// For the storage engine: unavailable reads as "The storage cluster is unavailable. ...".
error nats_error(std::string_view what, natsStatus status,
                 jsErrCode code = static_cast<jsErrCode>(0));

}  // namespace iothub::nats
