#include "endpoints/blob_sink.hpp"

#include "endpoints/blob_format.hpp"

#include <spdlog/spdlog.h>

#include <ctime>
#include <map>

namespace iothub::endpoints {
namespace {

std::string property(const storage::property_list& l, std::string_view name) {
    const auto* v = storage::find_property(l, name);
    return v ? *v : std::string();
}

class blob_sink final : public routing::sink {
  public:
    blob_sink(const routing::endpoint& e, file_upload::blob_containers& blobs,
              storage::kv_store& kv, std::string hub)
        : e_(e), blobs_(blobs), kv_(kv), hub_(std::move(hub)) {}

    result<void> deliver(int partition, std::vector<storage::event_record> events,
                         std::span<const std::uint64_t>, storage::kv_write cursor) override {
        auto& b = batches_[partition];
        if (!events.empty() && b.messages.empty()) b.started = iothub::now();
        for (auto& e : events) {
            blob_message m;
            m.enqueued_time = parse_iso8601(property(e.system_properties, "iothub-enqueuedtime"))
                                  .value_or(iothub::now());
            b.bytes += storage::event_size(e);
            m.properties = std::move(e.application_properties);
            m.system_properties = std::move(e.system_properties);
            m.body = std::move(e.body);
            b.messages.push_back(std::move(m));
        }
        b.cursors.hold(std::move(cursor));
        if (b.bytes >= e_.max_chunk_bytes) return write(partition, b);
        return {};
    }

    // A batch that waits keeps its positions unsaved, at the hub's stop too: its messages are
    // read again on the next start.
    result<void> flush(sys_time now, bool) override {
        for (auto& [p, b] : batches_) {
            if (b.messages.empty()) {
                if (auto r = b.cursors.write(kv_); !r) return r;
            } else if (now - b.started >= std::chrono::seconds(e_.batch_frequency_seconds)) {
                if (auto r = write(p, b); !r) return r;
            }
        }
        return {};
    }

  private:
    struct batch {
        std::vector<blob_message> messages;
        std::size_t bytes = 0;
        sys_time started;
        routing::held_cursors cursors;
    };

    result<void> write(int partition, batch& b) {
        const auto bytes = encode_blob(b.messages, e_.encoding);
        const auto base = blob_name(e_.file_name_format, hub_, partition, b.started);
        auto name = base;
        for (int n = 1;; ++n) {
            auto taken = blobs_.exists(e_.container_name, name);
            if (!taken) return taken.error();
            if (!*taken) break;
            name = base + "-" + std::to_string(n);
        }
        const auto type =
            e_.encoding == routing::blob_encoding::json ? "application/json" : "avro/binary";
        auto put = blobs_.put(e_.container_name, name, bytes, type, iothub::now());
        if (!put) return put.error();
        if (auto r = b.cursors.write(kv_); !r) return r;
        b.messages.clear();
        b.bytes = 0;
        return {};
    }

    routing::endpoint e_;
    file_upload::blob_containers& blobs_;
    storage::kv_store& kv_;
    std::string hub_;
    std::map<int, batch> batches_;
};

}  // namespace

std::string blob_name(std::string_view format, std::string_view hub, int partition,
                      sys_time start) {
    const auto t = std::chrono::system_clock::to_time_t(
        std::chrono::time_point_cast<std::chrono::seconds>(start));
    std::tm tm{};
    gmtime_r(&t, &tm);
    auto two = [](int v) { return (v < 10 ? "0" : "") + std::to_string(v); };
    const std::pair<std::string_view, std::string> tokens[] = {
        {"{iothub}", std::string(hub)},
        {"{partition}", std::to_string(partition)},
        {"{YYYY}", std::to_string(tm.tm_year + 1900)},
        {"{MM}", two(tm.tm_mon + 1)},
        {"{DD}", two(tm.tm_mday)},
        {"{HH}", two(tm.tm_hour)},
        {"{mm}", two(tm.tm_min)}};
    std::string out(format);
    for (const auto& [token, value] : tokens)
        for (auto at = out.find(token); at != std::string::npos;
             at = out.find(token, at + value.size()))
            out.replace(at, token.size(), value);
    return out;
}

result<std::unique_ptr<routing::sink>> make_blob_sink(const routing::endpoint& e,
                                                      file_upload::blob_containers& blobs,
                                                      storage::kv_store& kv, std::string hub_name) {
    return std::unique_ptr<routing::sink>(
        std::make_unique<blob_sink>(e, blobs, kv, std::move(hub_name)));
}

}  // namespace iothub::endpoints
