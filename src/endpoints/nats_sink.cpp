#include "endpoints/nats_sink.hpp"

#include "endpoints/properties.hpp"
#include "nats/nats.hpp"

#include <spdlog/spdlog.h>

#include <condition_variable>
#include <mutex>
#include <unordered_set>

namespace iothub::endpoints {

namespace {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

constexpr std::string_view device_id_property = "iothub-connection-device-id";
constexpr std::string_view cursor_prefix = "routing/cursor/";
constexpr std::int64_t max_pending = 4096;  // JetStream publishes in flight at once

char hex_digit(unsigned v) {
    return static_cast<char>(v < 10 ? '0' + v : 'A' + v - 10);
}

void append_escaped(std::string& out, char c) {
    const auto u = static_cast<unsigned char>(c);
    out += '%';
    out += hex_digit(u >> 4);
    out += hex_digit(u & 0xf);
}

// One subject token: what NATS reads as a separator, a wildcard or the end of the subject.
void append_token(std::string& out, std::string_view value) {
    if (value.empty()) {
        out += "%00";  // an empty token would make the subject invalid
        return;
    }
    for (char c : value) {
        const auto u = static_cast<unsigned char>(c);
        if (c == '.' || c == '*' || c == '>' || c == '%' || u <= 0x20 || u == 0x7f)
            append_escaped(out, c);
        else
            out += c;
    }
}

// Header lines are `Name: value\r\n`: a name may not hold ':' or white space, a value no line end.
std::string header_name(std::string_view name) {
    std::string out;
    for (char c : name) {
        const auto u = static_cast<unsigned char>(c);
        if (c == ':' || u <= 0x20 || u == 0x7f)
            append_escaped(out, c);
        else
            out += c;
    }
    return out.empty() ? std::string("%00") : out;
}

std::string header_value(std::string_view value) {
    std::string out;
    for (char c : value) {
        if (c == '\r' || c == '\n' || c == '\0')
            append_escaped(out, c);
        else
            out += c;
    }
    return out;
}

class nats_sink final : public routing::sink {
  public:
    nats_sink(const routing::endpoint& e, storage::kv_store& kv, nats::connection_settings settings,
              const nats_sink_options& o)
        : name_(e.name),
          subject_(e.subject),
          jetstream_(e.jetstream),
          hub_(o.hub_name),
          timeout_(o.timeout),
          settings_(std::move(settings)),
          kv_(kv) {
        settings_.name = "iothub-route-" + name_;
    }

    ~nats_sink() override {
        if (js_) {
            // Acknowledgements still awaited are not wanted any more.
            natsMsgList pending{};
            if (js_PublishAsyncGetPendingList(&pending, js_.get()) == NATS_OK)
                natsMsgList_Destroy(&pending);
        }
        js_.reset();
        if (nc_) natsConnection_Close(nc_.get());
        nc_.reset();
    }

    result<void> deliver(int, std::vector<storage::event_record> events,
                         std::span<const std::uint64_t> sequence_numbers,
                         storage::kv_write cursor) override {
        if (events.empty()) {
            held_.hold(std::move(cursor));
            return {};
        }
        if (auto r = connect(); !r) return r;
        std::string id_prefix = hub_ + "/";
        id_prefix += std::string_view(cursor.key).starts_with(cursor_prefix)
                         ? std::string_view(cursor.key).substr(cursor_prefix.size())
                         : std::string_view(cursor.key);
        id_prefix += '/';
        std::vector<nats::nats_ptr<natsMsg>> messages;
        messages.reserve(events.size());
        for (std::size_t i = 0; i < events.size(); ++i) {
            // Without sequence numbers (callers that have none), ids are at least unique.
            auto id =
                id_prefix + (i < sequence_numbers.size() ? std::to_string(sequence_numbers[i])
                                                         : "x" + std::to_string(++unnumbered_));
            auto m = message(events[i], id);
            if (!m) return m.error();
            messages.push_back(std::move(*m));
        }
        auto sent = jetstream_ ? publish_to_stream(messages) : publish(messages);
        if (!sent) return sent;
        held_.hold(std::move(cursor));
        return {};
    }

    result<void> flush(sys_time, bool) override { return held_.write(kv_); }

  private:
    std::string text(std::string_view what) const {
        return "NATS endpoint '" + name_ + "': " + std::string(what);
    }

    error failure(std::string_view what, natsStatus status,
                  jsErrCode code = static_cast<jsErrCode>(0)) const {
        return error(
            nats::unavailable(status, code) ? errc::service_unavailable : errc::server_error,
            text(nats::nats_text(what, status)));
    }

    result<void> connect() {
        if (nc_ && natsConnection_Status(nc_.get()) != NATS_CONN_STATUS_CLOSED) return {};
        js_.reset();
        nc_.reset();
        auto nc = nats::connect(settings_);
        if (!nc) return error(nc.error().code(), text(nc.error().message()));
        nc_ = std::move(*nc);
        if (!jetstream_) return {};
        jsOptions o;
        jsOptions_Init(&o);
        o.PublishAsync.MaxPending = max_pending;
        o.PublishAsync.AckHandler = &nats_sink::acknowledged;
        o.PublishAsync.AckHandlerClosure = this;
        o.PublishAsync.StallWait = timeout_.count();
        jsCtx* js = nullptr;
        if (auto st = natsConnection_JetStream(&js, nc_.get(), &o); st != NATS_OK)
            return failure("JetStream", st);
        js_.reset(js);
        return {};
    }

    result<nats::nats_ptr<natsMsg>> message(const storage::event_record& e,
                                            const std::string& id) const {
        const std::string* device = storage::find_property(e.system_properties, device_id_property);
        if (!device && e.stamp) device = storage::find_property(*e.stamp, device_id_property);
        const auto subject = nats_subject(subject_, device ? *device : std::string_view(), hub_);
        natsMsg* raw = nullptr;
        if (auto st = natsMsg_Create(&raw, subject.c_str(), nullptr, e.body.data(),
                                     static_cast<int>(e.body.size()));
            st != NATS_OK)
            return failure("message for '" + subject + "'", st);
        nats::nats_ptr<natsMsg> m(raw);
        natsStatus st = NATS_OK;
        auto add = [&](const std::string& name, std::string_view value) {
            if (st == NATS_OK)
                st = natsMsgHeader_Add(m.get(), name.c_str(), header_value(value).c_str());
        };
        for (const auto& [k, v] : e.application_properties) add(header_name(k), v);
        for (const auto& [k, v] : e.system_properties) add(header_name(system_header(k)), v);
        if (e.stamp)
            for (const auto& [k, v] : *e.stamp) add(header_name(system_header(k)), v);
        if (st == NATS_OK) st = natsMsgHeader_Set(m.get(), "Nats-Msg-Id", id.c_str());
        if (st != NATS_OK) return failure("headers for '" + subject + "'", st);
        return m;
    }

    // Core NATS: published in order, then a flush (a round trip) proves the server read them.
    result<void> publish(std::vector<nats::nats_ptr<natsMsg>>& messages) {
        for (auto& m : messages)
            if (auto st = natsConnection_PublishMsg(nc_.get(), m.get()); st != NATS_OK)
                return failure("publishing to '" + std::string(natsMsg_GetSubject(m.get())) + "'",
                               st);
        if (auto st = natsConnection_FlushTimeout(nc_.get(), timeout_.count()); st != NATS_OK)
            return failure("waiting for the server", st);
        return {};
    }

    // JetStream: every message in flight at once; done when each is acknowledged (a repeat the
    // stream dropped counts as acknowledged: it has the message).
    result<void> publish_to_stream(std::vector<nats::nats_ptr<natsMsg>>& messages) {
        {
            std::lock_guard lock(m_);
            outstanding_.clear();
            failure_.reset();
            for (auto& m : messages) {
                const char* id = nullptr;
                if (natsMsgHeader_Get(m.get(), "Nats-Msg-Id", &id) == NATS_OK && id)
                    outstanding_.insert(id);
            }
        }
        for (auto& m : messages) {
            const std::string subject = natsMsg_GetSubject(m.get());
            natsMsg* raw = m.release();
            if (auto st = js_PublishMsgAsync(js_.get(), &raw, nullptr); st != NATS_OK) {
                natsMsg_Destroy(raw);  // still ours when the call failed
                abandon();
                return failure("publishing to '" + subject + "'", st);
            }
        }
        std::unique_lock lock(m_);
        const bool done = cv_.wait_for(lock, timeout_, [&] { return outstanding_.empty(); });
        if (!done && !failure_) {
            lock.unlock();
            abandon();
            return error(errc::service_unavailable,
                         text("no acknowledgement from a stream within " +
                              std::to_string(timeout_.count()) + " ms."));
        }
        if (failure_) return *failure_;
        return {};
    }

    // Gives up on the acknowledgements still awaited: a retry publishes the same ids again.
    void abandon() {
        natsMsgList pending{};
        if (js_PublishAsyncGetPendingList(&pending, js_.get()) == NATS_OK)
            natsMsgList_Destroy(&pending);
        std::lock_guard lock(m_);
        outstanding_.clear();
    }

    // On the connection's thread.
    static void acknowledged(jsCtx*, natsMsg* msg, jsPubAck*, jsPubAckErr* pae, void* closure) {
        auto* self = static_cast<nats_sink*>(closure);
        {
            std::lock_guard lock(self->m_);
            const char* id = nullptr;
            const bool ours = natsMsgHeader_Get(msg, "Nats-Msg-Id", &id) == NATS_OK && id &&
                              self->outstanding_.erase(id) > 0;
            if (ours && pae && !self->failure_) {
                std::string subject = natsMsg_GetSubject(msg);
                if (pae->Err == NATS_NO_RESPONDERS)
                    self->failure_ = error(
                        errc::service_unavailable,
                        self->text("no JetStream stream captures subject '" + subject + "'."));
                else
                    self->failure_ =
                        error(nats::unavailable(pae->Err, pae->ErrCode) ? errc::service_unavailable
                                                                        : errc::server_error,
                              self->text("the stream refused a message to '" + subject +
                                         "': " + (pae->ErrText ? pae->ErrText : "") + " (" +
                                         natsStatus_GetText(pae->Err) + ")."));
                // The rest of the call will be published again: stop waiting for it.
                self->outstanding_.clear();
            }
            // Under the lock: once the waiter has what it waited for it may destroy the sink,
            // condition variable included, and this thread must not touch it after unlocking.
            self->cv_.notify_all();
        }
        natsMsg_Destroy(msg);
    }

    std::string name_;
    std::string subject_;
    bool jetstream_;
    std::string hub_;
    milliseconds timeout_;
    nats::connection_settings settings_;
    storage::kv_store& kv_;
    routing::held_cursors held_;
    nats::nats_ptr<natsConnection> nc_;
    nats::nats_ptr<jsCtx> js_;
    std::uint64_t unnumbered_ = 0;

    std::mutex m_;
    std::condition_variable cv_;
    std::unordered_set<std::string> outstanding_;  // message ids awaiting their acknowledgement
    std::optional<error> failure_;                 // the first refusal of the call
};

}  // namespace

std::string nats_subject(std::string_view subject_template, std::string_view device_id,
                         std::string_view hub_name) {
    constexpr std::string_view device = "{deviceId}";
    constexpr std::string_view hub = "{iothub}";
    std::string out;
    out.reserve(subject_template.size() + device_id.size());
    while (!subject_template.empty()) {
        if (subject_template.starts_with(device)) {
            append_token(out, device_id);
            subject_template.remove_prefix(device.size());
        } else if (subject_template.starts_with(hub)) {
            append_token(out, hub_name);
            subject_template.remove_prefix(hub.size());
        } else {
            out += subject_template.front();
            subject_template.remove_prefix(1);
        }
    }
    return out;
}

result<std::unique_ptr<routing::sink>> make_nats_sink(const routing::endpoint& e,
                                                      storage::kv_store& kv,
                                                      const nats_sink_options& o) {
    if (e.kind != routing::endpoint_kind::nats)
        return error(errc::argument_invalid, "Endpoint '" + e.name + "' is not a NATS endpoint.");
    nats::connection_settings settings;
    if (e.servers.empty()) {
        if (!o.cluster)
            return error(errc::argument_invalid,
                         "NATS endpoint '" + e.name +
                             "' names no servers, and only a hub in cluster mode has NATS "
                             "servers of its own; give servers.");
        settings = *o.cluster;
    } else {
        settings.servers = e.servers;
        settings.credentials_file = e.credentials_file;
        settings.user = e.user;
        settings.password = e.password;
        settings.token = e.token;
        settings.ca_file = e.ca_file;
        settings.cert_file = e.cert_file;
        settings.key_file = e.key_file;
    }
    if (!o.reserved_prefix.empty() && e.servers.empty() &&
        (e.subject == o.reserved_prefix || e.subject.starts_with(o.reserved_prefix + ".")))
        return error(errc::argument_invalid, "NATS endpoint '" + e.name + "': subject '" +
                                                 e.subject + "' is below '" + o.reserved_prefix +
                                                 "', which the cluster uses for itself.");
    return std::unique_ptr<routing::sink>(
        std::make_unique<nats_sink>(e, kv, std::move(settings), o));
}

}  // namespace iothub::endpoints
