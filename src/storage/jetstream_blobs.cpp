// Blobs in JetStream: one stream, `<prefix>_BLOBS`, a subject per key (`<prefix>.blob.` and each
// path segment in hex, so any name is a valid subject and a prefix is a subject filter).
//
// A value is written as chunks (each one message, well under NATS's payload limit) followed by a
// last message that carries the final chunk, the total size and the sequences of the others: the
// last message of a subject is the blob, and it names exactly its own chunks, so a reader never
// mixes two writes. Once it is stored, everything older on the subject is purged. A write that
// dies half-way leaves chunks no last message names; the next write of the key purges them.
#include "common/encoding.hpp"
#include "storage/detail/jetstream.hpp"

#include <charconv>

namespace iothub::storage::detail {

namespace {

constexpr std::size_t chunk_bytes = 256 * 1024;
constexpr const char* size_header = "Iothub-Blob-Size";
constexpr const char* parts_header = "Iothub-Blob-Parts";

std::uint64_t number(std::string_view s) {
    std::uint64_t n = 0;
    std::from_chars(s.data(), s.data() + s.size(), n);
    return n;
}

}  // namespace

jetstream_blobs::jetstream_blobs(jetstream_link& link)
    : link_(link),
      stream_(link.settings.prefix + "_BLOBS"),
      base_(link.settings.prefix + ".blob") {}

result<void> jetstream_blobs::start() {
    const std::string all = base_ + ".>";
    const char* subjects[] = {all.c_str()};
    jsStreamConfig cfg;
    jsStreamConfig_Init(&cfg);
    cfg.Name = stream_.c_str();
    cfg.Subjects = subjects;
    cfg.SubjectsLen = 1;
    cfg.Storage = js_FileStorage;
    cfg.Replicas = link_.settings.replicas;
    cfg.Retention = js_LimitsPolicy;
    return link_.ensure_stream(cfg);
}

std::string jetstream_blobs::subject(std::string_view key) const {
    std::string out = base_;
    while (!key.empty()) {
        auto slash = key.find('/');
        out += '.';
        out += hex_encode(key.substr(0, slash));
        key = slash == std::string_view::npos ? std::string_view() : key.substr(slash + 1);
    }
    return out;
}

std::optional<std::string> jetstream_blobs::key_of(std::string_view subject) const {
    if (!subject.starts_with(base_ + ".")) return std::nullopt;
    subject.remove_prefix(base_.size() + 1);
    std::string key;
    while (!subject.empty()) {
        auto dot = subject.find('.');
        auto segment = hex_decode(subject.substr(0, dot));
        if (!segment) return std::nullopt;
        if (!key.empty()) key += '/';
        key += *segment;
        subject = dot == std::string_view::npos ? std::string_view() : subject.substr(dot + 1);
    }
    return key;
}

result<std::uint64_t> jetstream_blobs::publish(const std::string& subject, std::string_view data,
                                               natsMsg* with_headers) {
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = link_.settings.timeout.count();
    jsPubAck* ack = nullptr;
    jsErrCode code = static_cast<jsErrCode>(0);
    auto st = link_.retry_while_electing(code, [&] {
        if (with_headers) return js_PublishMsg(&ack, link_.js.get(), with_headers, &po, &code);
        return js_Publish(&ack, link_.js.get(), subject.c_str(), data.data(),
                          static_cast<int>(data.size()), &po, &code);
    });
    if (st != NATS_OK) return nats_error("Writing a blob to " + stream_, st, code);
    nats_ptr<jsPubAck> owned(ack);
    return ack->Sequence;
}

result<void> jetstream_blobs::purge(const std::string& subject, std::uint64_t below) {
    // Nothing lies below the first sequence (and the server reads 1 as "everything").
    if (below == 1) return {};
    jsOptions o = link_.options();
    o.Stream.Purge.Subject = subject.c_str();
    o.Stream.Purge.Sequence = below;
    jsErrCode code = static_cast<jsErrCode>(0);
    if (auto st = js_PurgeStream(link_.js.get(), stream_.c_str(), &o, &code); st != NATS_OK)
        return nats_error("Purging a blob in " + stream_, st, code);
    return {};
}

result<void> jetstream_blobs::put(std::string_view key, std::string_view bytes) {
    if (auto ok = check_blob_key(key); !ok) return ok;
    const auto subj = subject(key);
    const std::uint64_t size = bytes.size();
    std::string parts;
    std::uint64_t first = 0;
    while (bytes.size() > chunk_bytes) {
        auto seq = publish(subj, bytes.substr(0, chunk_bytes), nullptr);
        if (!seq) return seq.error();
        if (!first) first = *seq;
        if (!parts.empty()) parts += ',';
        parts += std::to_string(*seq);
        bytes.remove_prefix(chunk_bytes);
    }
    natsMsg* raw = nullptr;
    if (auto st = natsMsg_Create(&raw, subj.c_str(), nullptr, bytes.data(),
                                 static_cast<int>(bytes.size()));
        st != NATS_OK)
        return nats_error("A blob message", st);
    nats_ptr<natsMsg> last(raw);
    natsMsgHeader_Set(last.get(), size_header, std::to_string(size).c_str());
    if (!parts.empty()) natsMsgHeader_Set(last.get(), parts_header, parts.c_str());
    auto seq = publish(subj, {}, last.get());
    if (!seq) return seq.error();
    // The blob is whole now: what came before on its subject (older values, chunks of a write
    // that died) goes.
    return purge(subj, first ? first : *seq);
}

result<nats_ptr<natsMsg>> jetstream_blobs::last_message(const std::string& subject) {
    natsMsg* raw = nullptr;
    jsErrCode code = static_cast<jsErrCode>(0);
    jsOptions o = link_.options();
    auto st = link_.retry_while_electing(code, [&] {
        return js_GetLastMsg(&raw, link_.js.get(), stream_.c_str(), subject.c_str(), &o, &code);
    });
    // 10037: no message on the subject.
    if (st == NATS_NOT_FOUND || code == static_cast<jsErrCode>(10037))
        return error(errc::not_found, "No such blob.");
    if (st != NATS_OK) return nats_error("Reading a blob from " + stream_, st, code);
    return nats_ptr<natsMsg>(raw);
}

result<std::string> jetstream_blobs::get(std::string_view key) {
    if (auto ok = check_blob_key(key); !ok) return ok.error();
    const auto subj = subject(key);
    // A write of the same key may purge the chunks being read: read its value instead.
    for (int attempt = 0;; ++attempt) {
        auto last = last_message(subj);
        if (!last) {
            if (last.error().code() == errc::not_found)
                return error(errc::not_found, "No blob '" + std::string(key) + "'.");
            return last.error();
        }
        const char* parts = nullptr;
        if (natsMsgHeader_Get(last->get(), parts_header, &parts) != NATS_OK) parts = nullptr;
        std::string out;
        bool whole = true;
        std::string_view list = parts ? parts : "";
        while (!list.empty()) {
            auto comma = list.find(',');
            natsMsg* raw = nullptr;
            jsErrCode code = static_cast<jsErrCode>(0);
            jsOptions o = link_.options();
            auto st = js_GetMsg(&raw, link_.js.get(), stream_.c_str(),
                                number(list.substr(0, comma)), &o, &code);
            if (st != NATS_OK) {
                if (st == NATS_NOT_FOUND || code == static_cast<jsErrCode>(10037)) {
                    whole = false;
                    break;
                }
                return nats_error("Reading a blob from " + stream_, st, code);
            }
            nats_ptr<natsMsg> chunk(raw);
            out.append(natsMsg_GetData(raw), static_cast<std::size_t>(natsMsg_GetDataLength(raw)));
            list = comma == std::string_view::npos ? std::string_view() : list.substr(comma + 1);
        }
        if (whole) {
            out.append(natsMsg_GetData(last->get()),
                       static_cast<std::size_t>(natsMsg_GetDataLength(last->get())));
            return out;
        }
        if (attempt == 3)
            return error(errc::service_unavailable,
                         "Blob '" + std::string(key) + "' is being rewritten; try again.");
    }
}

result<void> jetstream_blobs::remove(std::string_view key) {
    if (auto ok = check_blob_key(key); !ok) return ok;
    return purge(subject(key), 0);
}

result<std::vector<blob_entry>> jetstream_blobs::list(std::string_view prefix) {
    std::string filter = base_;
    if (!prefix.empty()) {
        auto trimmed = prefix.ends_with('/') ? prefix.substr(0, prefix.size() - 1) : prefix;
        if (auto ok = check_blob_key(trimmed); !ok) return ok.error();
        filter = subject(trimmed);
    }
    filter += ".>";
    jsOptions o = link_.options();
    o.Stream.Info.SubjectsFilter = filter.c_str();
    jsStreamInfo* raw = nullptr;
    jsErrCode code = static_cast<jsErrCode>(0);
    if (auto st = js_GetStreamInfo(&raw, link_.js.get(), stream_.c_str(), &o, &code); st != NATS_OK)
        return nats_error("Listing blobs in " + stream_, st, code);
    nats_ptr<jsStreamInfo> info(raw);
    std::vector<blob_entry> out;
    const auto* subjects = info->State.Subjects;
    for (int i = 0; subjects && i < subjects->Count; ++i) {
        const std::string subj = subjects->List[i].Subject;
        auto key = key_of(subj);
        if (!key) continue;
        auto last = last_message(subj);
        if (!last) {
            if (last.error().code() == errc::not_found) continue;  // removed meanwhile
            return last.error();
        }
        const char* size = nullptr;
        if (natsMsgHeader_Get(last->get(), size_header, &size) != NATS_OK || !size)
            continue;  // a write still under way
        out.push_back({std::move(*key), number(size),
                       sys_time(std::chrono::nanoseconds(natsMsg_GetTime(last->get())))});
    }
    return out;
}

}  // namespace iothub::storage::detail
