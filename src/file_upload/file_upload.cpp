#include "file_upload/file_upload.hpp"

#include "common/crypto.hpp"
#include "common/encoding.hpp"
#include "queue/peek_lock_queue.hpp"

#include <boost/json.hpp>
#include <openssl/evp.h>
#include <spdlog/spdlog.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <map>
#include <mutex>
#include <unistd.h>

namespace iothub::file_upload {
namespace json = boost::json;

namespace {

constexpr std::string_view secret_key = "fileupload/secret";
constexpr std::string_view session_prefix = "fileup/";
constexpr std::string_view blob_prefix = "fileblob/";
constexpr std::string_view notification_prefix = "filenotif/";
constexpr std::size_t max_blob_name = 1024;  // Azure's limit for a blob name

std::string join(const std::vector<std::string>& segments, std::size_t from = 0) {
    std::string out;
    for (std::size_t i = from; i < segments.size(); ++i) {
        if (i > from) out.push_back('/');
        out += segments[i];
    }
    return out;
}

std::string canonical(std::string_view permissions, std::string_view expiry,
                      std::string_view container, std::string_view blob_path,
                      std::string_view version) {
    std::string s;
    s.append(permissions).append("\n").append(expiry).append("\n/");
    s.append(container).append("/").append(blob_path).append("\n").append(version);
    return s;
}

// Azure Storage writes the SAS expiry without fractions of a second.
std::string sas_time(sys_time t) {
    return format_iso8601(sys_time(std::chrono::floor<std::chrono::seconds>(t)));
}

std::string str(const json::object& o, std::string_view key) {
    auto* v = o.if_contains(key);
    return v && v->is_string() ? std::string(v->get_string()) : std::string();
}

std::int64_t num(const json::object& o, std::string_view key) {
    auto* v = o.if_contains(key);
    if (!v) return 0;
    if (v->is_int64()) return v->get_int64();
    if (v->is_uint64()) return static_cast<std::int64_t>(v->get_uint64());
    return 0;
}

sys_time from_millis(std::int64_t ms) {
    return sys_time(std::chrono::duration_cast<sys_time::duration>(std::chrono::milliseconds(ms)));
}

json::object to_json(const file_notification& n) {
    return {{"deviceId", n.device_id},   {"blobUri", n.blob_uri},
            {"blobName", n.blob_name},   {"lastUpdatedTime", format_iso8601(n.last_updated)},
            {"blobSizeInBytes", n.size}, {"enqueuedTimeUtc", format_iso8601(n.enqueued_time)}};
}

std::optional<file_notification> notification_from(std::string_view text) {
    boost::system::error_code ec;
    auto v = json::parse(text, ec);
    if (ec || !v.is_object()) return std::nullopt;
    const auto& o = v.get_object();
    file_notification n;
    n.device_id = str(o, "deviceId");
    n.blob_uri = str(o, "blobUri");
    n.blob_name = str(o, "blobName");
    auto updated = parse_iso8601(str(o, "lastUpdatedTime"));
    auto enqueued = parse_iso8601(str(o, "enqueuedTimeUtc"));
    if (n.device_id.empty() || !updated || !enqueued) return std::nullopt;
    n.last_updated = *updated;
    n.enqueued_time = *enqueued;
    n.size = static_cast<std::uint64_t>(num(o, "blobSizeInBytes"));
    return n;
}

}  // namespace

// --- pure helpers -------------------------------------------------------------------------------

result<std::vector<std::string>> safe_segments(std::string_view blob_name) {
    auto bad = [&](std::string why) {
        return error(errc::argument_invalid, "Invalid blob name: " + why + ".");
    };
    if (blob_name.empty()) return bad("it is empty");
    if (blob_name.size() > max_blob_name)
        return bad("longer than " + std::to_string(max_blob_name) + " characters");
    if (blob_name.front() == '/') return bad("an absolute path");
    std::vector<std::string> out;
    std::string_view rest = blob_name;
    for (;;) {
        auto slash = rest.find('/');
        auto seg = rest.substr(0, slash);
        if (seg.empty()) return bad("an empty path segment");
        if (seg == "." || seg == "..") return bad("'.' or '..' as a path segment");
        if (seg.find('\0') != std::string_view::npos) return bad("a NUL character");
        if (seg.find('\\') != std::string_view::npos) return bad("a backslash");
        out.emplace_back(seg);
        if (slash == std::string_view::npos) break;
        rest.remove_prefix(slash + 1);
    }
    return out;
}

std::string sign_sas(std::string_view secret, std::string_view container,
                     std::string_view blob_path, sys_time expiry) {
    const auto se = sas_time(expiry);
    const auto sig =
        base64_encode(hmac_sha256(secret, canonical("rw", se, container, blob_path, sas_version)));
    std::string out = "?sv=";
    out.append(sas_version).append("&sr=b&sig=").append(percent_encode(sig));
    out.append("&se=").append(percent_encode(se)).append("&sp=rw");
    return out;
}

result<void> check_sas(std::string_view secret, std::string_view container,
                       std::string_view blob_path,
                       const std::vector<std::pair<std::string, std::string>>& query,
                       sys_time now) {
    auto value = [&](std::string_view name) -> std::optional<std::string_view> {
        for (const auto& [k, v] : query)
            if (k == name) return std::string_view(v);
        return std::nullopt;
    };
    auto sv = value("sv"), sr = value("sr"), sig = value("sig"), se = value("se"), sp = value("sp");
    if (!sig || !se || !sp || !sv || !sr)
        return error(errc::unauthorized, "The request has no complete shared access signature.");
    if (*sr != "b") return error(errc::unauthorized, "The signature's resource must be a blob.");
    if (sp->find('w') == std::string_view::npos)
        return error(errc::unauthorized, "The signature does not grant write access.");
    auto expiry = parse_iso8601(*se);
    if (!expiry) return error(errc::unauthorized, "The signature's expiry is malformed.");
    const auto expected =
        base64_encode(hmac_sha256(secret, canonical(*sp, *se, container, blob_path, *sv)));
    if (!constant_time_equal(expected, *sig))
        return error(errc::unauthorized,
                     "Signature did not match: it was not issued for this blob by this hub.");
    if (*expiry <= now) return error(errc::unauthorized, "Signature not valid: it has expired.");
    return {};
}

result<std::vector<std::string>> parse_block_list(std::string_view xml) {
    // The body the Storage clients send is flat: an optional declaration, <BlockList>, then one
    // element per block. A small scanner is enough and refuses everything else.
    auto malformed = [] {
        return error(errc::argument_invalid,
                     "The block list is not valid XML of the form "
                     "<BlockList><Latest>id</Latest>...</BlockList>.");
    };
    auto open = xml.find("<BlockList>");
    auto close = xml.rfind("</BlockList>");
    if (open == std::string_view::npos || close == std::string_view::npos || close < open)
        return malformed();
    std::string_view body = xml.substr(open + 11, close - open - 11);
    std::vector<std::string> ids;
    auto skip_space = [&] {
        while (!body.empty() && std::isspace(static_cast<unsigned char>(body.front())))
            body.remove_prefix(1);
    };
    for (skip_space(); !body.empty(); skip_space()) {
        if (body.front() != '<') return malformed();
        auto gt = body.find('>');
        if (gt == std::string_view::npos) return malformed();
        std::string_view tag = body.substr(1, gt - 1);
        if (tag != "Latest" && tag != "Committed" && tag != "Uncommitted") return malformed();
        body.remove_prefix(gt + 1);
        std::string end_tag = "</" + std::string(tag) + ">";
        auto end = body.find(end_tag);
        if (end == std::string_view::npos) return malformed();
        std::string_view id = body.substr(0, end);
        if (id.empty() || id.find('<') != std::string_view::npos) return malformed();
        ids.emplace_back(id);
        body.remove_prefix(end + end_tag.size());
    }
    return ids;
}

std::string md5_base64(std::string_view data) {
    std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
    unsigned int len = 0;
    EVP_Digest(data.data(), data.size(), md.data(), &len, EVP_md5(), nullptr);
    return base64_encode(std::span<const std::uint8_t>(md.data(), len));
}

std::string notification_json(const file_notification& n) {
    return json::serialize(to_json(n));
}

// --- the service --------------------------------------------------------------------------------

struct file_upload_service::impl {
    storage::kv_store& kv;
    storage::blob_store& blobs;
    const upload_settings& settings;
    std::string secret;

    // The notification stream: one lane of a peek-lock queue.
    queue::peek_lock_queue<file_notification> notes;
    mutable std::mutex mutex;  // the watchers
    std::map<std::uint64_t, std::function<void()>> watchers;
    std::uint64_t next_watch = 1;
    sys_time next_housekeeping{};

    impl(storage::kv_store& k, storage::blob_store& b, const upload_settings& s)
        : kv(k),
          blobs(b),
          settings(s),
          notes(k, note_traits(s),
                {s.lock_timeout,
                 s.max_delivery_count,
                 1,
                 0,
                 [](std::string_view) {
                     return error(errc::message_lock_lost,
                                  "The lock token does not name a locked file notification; it "
                                  "was settled or its lock expired.");
                 },
                 {}},
                {{}, [this](const std::vector<std::string>&) { tell_watchers(); }}) {}

    // `filenotif/<16 hex digits>` -> the notification's JSON with its delivery count.
    static queue::peek_lock_queue<file_notification>::traits note_traits(const upload_settings& s) {
        return {std::string(notification_prefix),
                [](std::string_view, std::uint64_t seq) {
                    return std::string(notification_prefix) + hex16(seq);
                },
                [](std::string_view key) -> std::optional<std::pair<std::string, std::uint64_t>> {
                    auto seq = parse_hex16(key.substr(notification_prefix.size()));
                    if (!seq) return std::nullopt;
                    return std::pair{std::string(), *seq};
                },
                [](const file_notification& n, const queue::meta& m) {
                    auto o = to_json(n);
                    o["deliveries"] = m.deliveries;
                    return json::serialize(o);
                },
                [ttl = s.notification_ttl](std::string_view text)
                    -> std::optional<std::pair<file_notification, queue::meta>> {
                    auto n = notification_from(text);
                    if (!n) return std::nullopt;
                    boost::system::error_code ec;
                    auto v = json::parse(text, ec);
                    auto deliveries = static_cast<std::uint32_t>(num(v.as_object(), "deliveries"));
                    const auto at = n->enqueued_time;
                    return std::pair{std::move(*n), queue::meta{at, at + ttl, deliveries}};
                }};
    }

    void tell_watchers() {
        std::vector<std::function<void()>> tell;
        {
            std::lock_guard lock(mutex);
            for (const auto& [t, fn] : watchers) tell.push_back(fn);
        }
        for (const auto& fn : tell) fn();
    }

    std::string content_key(const std::vector<std::string>& path) const {
        return settings.container + "/" + join(path);
    }
    // Where a blob's uncommitted blocks wait: `.staging/<hash of its path>/<block id in hex>`.
    std::string staging_prefix(const std::vector<std::string>& path) const {
        return ".staging/" + hex_encode(sha256(join(path))).substr(0, 32) + "/";
    }

    static std::string blob_key(std::string_view device, std::string_view name) {
        std::string k(blob_prefix);
        k.append(device).append("/").append(name);
        return k;
    }

    // Stores the content, then records the blob (a listed blob is always whole). Blocks.
    result<blob_info> commit(const std::vector<std::string>& path, std::string_view bytes,
                             std::string md5, sys_time now) {
        if (auto r = blobs.put(content_key(path), bytes); !r) {
            if (r.error().code() == errc::already_exists)
                return error(errc::already_exists,
                             "The blob cannot be stored at that name: a blob's name is the prefix "
                             "of another's.");
            return r.error();
        }
        const std::uint64_t size = bytes.size();
        blob_info info;
        info.device_id = path.front();
        info.blob_name = join(path, 1);
        info.size = size;
        info.last_modified = now;
        info.content_md5 = std::move(md5);
        json::object rec{
            {"size", size}, {"lastModified", unix_millis(now)}, {"contentMD5", info.content_md5}};
        auto v = kv.put(blob_key(info.device_id, info.blob_name), json::serialize(rec));
        if (!v) return v.error();
        info.etag = "\"0x" + hex16(*v) + "\"";
        return info;
    }

    std::optional<blob_info> blob_from(std::string_view key, const storage::versioned_value& v) {
        boost::system::error_code ec;
        auto j = json::parse(v.value, ec);
        if (ec || !j.is_object()) return std::nullopt;
        key.remove_prefix(blob_prefix.size());
        auto slash = key.find('/');
        if (slash == std::string_view::npos) return std::nullopt;
        const auto& o = j.get_object();
        blob_info b;
        b.device_id = std::string(key.substr(0, slash));
        b.blob_name = std::string(key.substr(slash + 1));
        b.size = static_cast<std::uint64_t>(num(o, "size"));
        b.last_modified = from_millis(num(o, "lastModified"));
        b.content_md5 = str(o, "contentMD5");
        b.etag = "\"0x" + hex16(v.version) + "\"";
        return b;
    }

    void housekeeping(sys_time now) {
        // Ended sessions: their SAS has expired and the device can no longer report.
        std::string after;
        for (;;) {
            auto page = kv.scan(session_prefix, after, 500);
            if (!page || page->empty()) break;
            for (const auto& e : *page) {
                boost::system::error_code ec;
                auto j = json::parse(e.data.value, ec);
                auto expiry = !ec && j.is_object() ? num(j.get_object(), "expiry") : 0;
                // Housekeeping: a session that fails to go now goes on the next pass.
                if (from_millis(expiry) + std::chrono::hours(1) <= now) (void)kv.remove(e.key);
            }
            after = page->back().key;
        }
        // Staged blocks nobody committed.
        auto staged = blobs.list(".staging/");
        if (!staged) return;
        for (const auto& b : *staged)
            if (b.modified + settings.staging_ttl < now) (void)blobs.remove(b.key);
    }
};

file_upload_service::file_upload_service(storage::kv_store& kv, storage::blob_store& blobs,
                                         upload_settings settings)
    : impl_(nullptr), settings_(std::move(settings)) {
    impl_ = std::make_unique<impl>(kv, blobs, settings_);
}

file_upload_service::~file_upload_service() = default;

result<void> file_upload_service::load() {
    auto& im = *impl_;
    auto existing = im.kv.get(secret_key);
    if (!existing) return existing.error();
    if (*existing) {
        im.secret = (*existing)->value;
    } else {
        im.secret = generate_key();
        if (auto r = im.kv.put(secret_key, im.secret, storage::precondition::absent()); !r)
            return r.error();
    }

    return im.notes.load();
}

result<upload_grant> file_upload_service::start_upload(const std::string& device_id,
                                                       std::string_view blob_name, sys_time now) {
    auto segments = safe_segments(blob_name);
    if (!segments) return segments.error();
    upload_grant g;
    g.correlation_id = random_uuid();
    g.host_name = settings_.host_name;
    g.container = settings_.container;
    g.blob_name = device_id + "/" + join(*segments);
    const auto expiry = now + settings_.sas_ttl;
    g.sas_token = sign_sas(impl_->secret, g.container, g.blob_name, expiry);
    json::object rec{{"deviceId", device_id},
                     {"blobName", join(*segments)},
                     {"container", g.container},
                     {"expiry", unix_millis(expiry)},
                     {"created", unix_millis(now)}};
    auto r = impl_->kv.put(std::string(session_prefix) + g.correlation_id, json::serialize(rec),
                           storage::precondition::absent());
    if (!r) return r.error();
    return g;
}

result<void> file_upload_service::notify(const std::string& device_id,
                                         std::string_view correlation_id, bool success,
                                         sys_time now) {
    auto& im = *impl_;
    const std::string key = std::string(session_prefix) + std::string(correlation_id);
    auto unknown = [&] {
        return error(errc::not_found, "No file upload with correlation id '" +
                                          std::string(correlation_id) + "' is open for device '" +
                                          device_id + "'.");
    };
    auto got = im.kv.get(key);
    if (!got) return got.error();
    if (!*got) return unknown();
    boost::system::error_code ec;
    auto j = json::parse((*got)->value, ec);
    if (ec || !j.is_object() || str(j.get_object(), "deviceId") != device_id) return unknown();
    const auto blob_name = str(j.get_object(), "blobName");
    const auto container = str(j.get_object(), "container");

    queue::change c;
    c.writes.push_back(
        {storage::kv_write::op::remove, key, {}, storage::precondition::version((*got)->version)});
    if (success) {
        auto blob = im.kv.get(impl::blob_key(device_id, blob_name));
        if (!blob) return blob.error();
        auto info =
            *blob ? im.blob_from(impl::blob_key(device_id, blob_name), **blob) : std::nullopt;
        if (!info)
            return error(errc::argument_invalid, "The upload is reported as a success, but blob '" +
                                                     device_id + "/" + blob_name +
                                                     "' was never stored.");
        file_notification n;
        n.device_id = device_id;
        n.blob_name = device_id + "/" + blob_name;
        n.blob_uri = "https://" + settings_.host_name + "/" + container + "/" + n.blob_name;
        n.last_updated = info->last_modified;
        n.size = info->size;
        n.enqueued_time = now;
        im.notes.stage(c, "", std::move(n), queue::meta{now, now + settings_.notification_ttl, 0});
    }
    // The session's end and its notification commit together.
    if (auto r = queue::commit(im.kv, c); !r)
        return r.error().code() == errc::not_found || r.error().code() == errc::precondition_failed
                   ? unknown()
                   : r.error();
    for (auto& fn : c.committed) fn();
    for (auto& fn : c.tell) fn();
    return {};
}

result<void> file_upload_service::authorize(
    const std::vector<std::string>& path,
    const std::vector<std::pair<std::string, std::string>>& query, sys_time now) const {
    if (path.size() < 2) return error(errc::unauthorized, "The path names no device's blob.");
    for (const auto& s : path)
        if (s.empty() || s == "." || s == ".." ||
            s.find_first_of(std::string_view("/\\\0", 3)) != std::string::npos)
            return error(errc::unauthorized, "The blob path is not one this hub issues.");
    return check_sas(impl_->secret, settings_.container, join(path), query, now);
}

result<blob_info> file_upload_service::put_blob(const std::vector<std::string>& path,
                                                std::string_view body, sys_time now) {
    if (body.size() > settings_.max_bytes)
        return error(errc::request_too_large, "The blob is larger than the limit of " +
                                                  std::to_string(settings_.max_bytes) + " bytes.");
    return impl_->commit(path, body, md5_base64(body), now);
}

result<std::string> file_upload_service::put_block(const std::vector<std::string>& path,
                                                   std::string_view block_id,
                                                   std::string_view body) {
    if (block_id.empty() || block_id.size() > 64)
        return error(errc::argument_invalid, "A block id is 1 to 64 bytes.");
    const auto staging = impl_->staging_prefix(path);
    const auto key = staging + hex_encode(block_id);
    auto staged = impl_->blobs.list(staging);
    if (!staged) return staged.error();
    // Staged blocks count against the blob's limit too, or uncommitted blocks could fill a disk.
    std::uint64_t total = body.size();
    for (const auto& b : *staged)
        if (b.key != key) total += b.size;
    if (total > settings_.max_bytes)
        return error(errc::request_too_large, "The blob's blocks are larger than the limit of " +
                                                  std::to_string(settings_.max_bytes) + " bytes.");
    if (auto r = impl_->blobs.put(key, body); !r) return r.error();
    return md5_base64(body);
}

result<blob_info> file_upload_service::put_block_list(const std::vector<std::string>& path,
                                                      const std::vector<std::string>& block_ids,
                                                      sys_time now) {
    const auto staging = impl_->staging_prefix(path);
    auto staged = impl_->blobs.list(staging);
    if (!staged) return staged.error();
    std::map<std::string, std::uint64_t> sizes;
    for (const auto& b : *staged) sizes.emplace(b.key, b.size);
    std::uint64_t total = 0;
    for (const auto& id : block_ids) {
        auto it = sizes.find(staging + hex_encode(id));
        if (it == sizes.end())
            return error(errc::argument_invalid,
                         "The block list names a block ('" + id + "') that was not staged.");
        total += it->second;
    }
    if (total > settings_.max_bytes)
        return error(errc::request_too_large, "The blob is larger than the limit of " +
                                                  std::to_string(settings_.max_bytes) + " bytes.");
    std::string content;
    content.reserve(total);
    for (const auto& id : block_ids) {
        auto block = impl_->blobs.get(staging + hex_encode(id));
        if (!block) return block.error();
        content += *block;
    }
    auto info = impl_->commit(path, content, md5_base64(content), now);
    if (info)
        for (const auto& b : *staged) (void)impl_->blobs.remove(b.key);
    return info;
}

result<std::vector<blob_info>> file_upload_service::list(
    std::optional<std::string> device_id) const {
    std::string prefix(blob_prefix);
    if (device_id) prefix.append(*device_id).append("/");
    std::vector<blob_info> out;
    std::string after;
    for (;;) {
        auto page = impl_->kv.scan(prefix, after, 1000);
        if (!page) return page.error();
        if (page->empty()) break;
        for (const auto& e : *page)
            if (auto b = impl_->blob_from(e.key, e.data)) out.push_back(std::move(*b));
        after = page->back().key;
    }
    return out;
}

result<std::string> file_upload_service::read(const std::string& device_id,
                                              std::string_view blob_name) const {
    auto segments = safe_segments(blob_name);
    if (!segments) return segments.error();
    auto rec = impl_->kv.get(impl::blob_key(device_id, join(*segments)));
    if (!rec) return rec.error();
    auto missing = [&] {
        return error(errc::not_found,
                     "Device '" + device_id + "' has no file '" + std::string(blob_name) + "'.");
    };
    if (!*rec || device_id.empty() || device_id == "." || device_id == ".." ||
        device_id.find('/') != std::string::npos)
        return missing();
    segments->insert(segments->begin(), device_id);
    auto data = impl_->blobs.get(impl_->content_key(*segments));
    if (!data && data.error().code() == errc::not_found) return missing();
    return data;
}

std::optional<notification_delivery> file_upload_service::receive_notification(sys_time now) {
    auto l = impl_->notes.receive("", now);
    if (!l) return std::nullopt;
    return notification_delivery{l->lock_token, *l->items.front().item};
}

result<void> file_upload_service::complete_notification(std::string_view lock_token, sys_time now) {
    return impl_->notes.settle("", lock_token, queue::settlement::complete, now);
}

// The service refused it: like Azure, the notification is dead-lettered (dropped).
result<void> file_upload_service::reject_notification(std::string_view lock_token, sys_time now) {
    return impl_->notes.settle("", lock_token, queue::settlement::reject, now);
}

result<void> file_upload_service::abandon_notification(std::string_view lock_token, sys_time now) {
    return impl_->notes.settle("", lock_token, queue::settlement::abandon, now);
}

std::size_t file_upload_service::pending_notifications() const {
    return impl_->notes.size();
}

std::uint64_t file_upload_service::watch_notifications(std::function<void()> notify) {
    std::lock_guard lock(impl_->mutex);
    auto token = impl_->next_watch++;
    impl_->watchers.emplace(token, std::move(notify));
    return token;
}

void file_upload_service::unwatch_notifications(std::uint64_t token) {
    std::lock_guard lock(impl_->mutex);
    impl_->watchers.erase(token);
}

void file_upload_service::sweep(sys_time now, bool expire) {
    auto& im = *impl_;
    im.notes.sweep(now, expire);
    if (now >= im.next_housekeeping) {
        im.next_housekeeping = now + std::chrono::minutes(1);
        im.housekeeping(now);
    }
}

}  // namespace iothub::file_upload
