#include "nats/nats.hpp"

namespace iothub::nats {

bool unavailable(natsStatus status, jsErrCode code) {
    switch (status) {
        case NATS_TIMEOUT:
        case NATS_NO_RESPONDERS:
        case NATS_NO_SERVER:
        case NATS_CONNECTION_CLOSED:
        case NATS_CONNECTION_DISCONNECTED:
        case NATS_STALE_CONNECTION:
        case NATS_NOT_YET_CONNECTED:
        // A publish while reconnecting: connect() keeps no reconnect buffer.
        case NATS_INSUFFICIENT_BUFFER:
            return true;
        default:
            break;
    }
    // 10008: JetStream temporarily unavailable (no leader, no quorum); 10005: no peers to place
    // a stream on yet; 10023: not enough resources (servers missing).
    return code == static_cast<jsErrCode>(10008) || code == static_cast<jsErrCode>(10005) ||
           code == static_cast<jsErrCode>(10023);
}

bool refused_at_once(natsStatus status, jsErrCode code) {
    return status == NATS_NO_RESPONDERS || code == static_cast<jsErrCode>(10008);
}

std::string nats_text(std::string_view what, natsStatus status) {
    std::string text(what);
    text += ": ";
    text += natsStatus_GetText(status);
    if (const char* last = nats_GetLastError(nullptr); last && *last && status != NATS_TIMEOUT) {
        text += " (";
        text += last;
        text += ")";
    }
    return text;
}

error nats_error(std::string_view what, natsStatus status, jsErrCode code) {
    auto text = nats_text(what, status);
    if (code == js_wrong_last_sequence) return error(errc::precondition_failed, text);
    if (unavailable(status, code))
        return error(errc::service_unavailable, "The storage cluster is unavailable. " + text);
    return error(errc::server_error, text);
}

namespace {

// Connection failures say what they are without speaking for a caller (storage, bus, endpoint).
error connect_error(std::string_view what, natsStatus status) {
    return error(unavailable(status) ? errc::service_unavailable : errc::argument_invalid,
                 nats_text(what, status));
}

}  // namespace

result<nats_ptr<natsConnection>> connect(const connection_settings& s) {
    if (s.servers.empty()) return error(errc::argument_invalid, "No NATS server given.");
    natsOptions* raw = nullptr;
    if (auto st = natsOptions_Create(&raw); st != NATS_OK) return connect_error("NATS options", st);
    nats_ptr<natsOptions> opts(raw);
    std::vector<const char*> urls;
    for (const auto& u : s.servers) urls.push_back(u.c_str());
    natsStatus st = natsOptions_SetServers(opts.get(), urls.data(), static_cast<int>(urls.size()));
    if (st == NATS_OK) st = natsOptions_SetName(opts.get(), s.name.c_str());
    // Reconnect for ever: a hub node outlives any NATS outage and resumes by itself.
    if (st == NATS_OK) st = natsOptions_SetMaxReconnect(opts.get(), -1);
    if (st == NATS_OK) st = natsOptions_SetReconnectWait(opts.get(), 250);
    if (st == NATS_OK) st = natsOptions_SetTimeout(opts.get(), 2000);
    // Publishes while disconnected fail at once instead of queueing for a server that may not
    // come back before the caller's deadline.
    if (st == NATS_OK) st = natsOptions_SetReconnectBufSize(opts.get(), 0);
    if (st == NATS_OK && !s.credentials_file.empty())
        st = natsOptions_SetUserCredentialsFromFiles(opts.get(), s.credentials_file.c_str(),
                                                     nullptr);
    if (st == NATS_OK && !s.user.empty())
        st = natsOptions_SetUserInfo(opts.get(), s.user.c_str(), s.password.c_str());
    if (st == NATS_OK && !s.token.empty()) st = natsOptions_SetToken(opts.get(), s.token.c_str());
    if (st == NATS_OK && !s.ca_file.empty()) {
        st = natsOptions_SetSecure(opts.get(), true);
        if (st == NATS_OK)
            st = natsOptions_LoadCATrustedCertificates(opts.get(), s.ca_file.c_str());
    }
    if (st == NATS_OK && !s.cert_file.empty())
        st = natsOptions_LoadCertificatesChain(opts.get(), s.cert_file.c_str(), s.key_file.c_str());
    if (st != NATS_OK) return connect_error("NATS options", st);

    natsConnection* nc = nullptr;
    if (st = natsConnection_Connect(&nc, opts.get()); st != NATS_OK)
        return connect_error("Connecting to NATS", st);
    return nats_ptr<natsConnection>(nc);
}

}  // namespace iothub::nats
