#include "endpoints/webhook_sink.hpp"

namespace iothub::endpoints {
namespace {

bool header_safe(std::string_view v) {
    for (unsigned char c : v)
        if (c < 0x20 || c == 0x7f) return false;
    return true;
}

class webhook_sink final : public routing::sink {
  public:
    webhook_sink(const routing::endpoint& e, http::url url, storage::kv_store& kv,
                 http::client_options options)
        : headers_(e.headers), client_(std::move(url), std::move(options)), kv_(kv) {}

    result<void> deliver(int, std::vector<storage::event_record> events,
                         std::span<const std::uint64_t>, storage::kv_write cursor) override {
        for (const auto& m : events) {
            std::vector<std::pair<std::string, std::string>> h;
            std::string content_type = "application/octet-stream";
            for (const auto& [k, v] : m.system_properties) {
                if (k == "content-type") content_type = v;
                if (header_safe(v)) h.emplace_back(system_header(k), v);
            }
            for (const auto& [k, v] : m.application_properties)
                if (header_safe(v)) h.emplace_back(k, v);
            h.emplace_back("Content-Type", content_type);
            for (const auto& extra : headers_) h.push_back(extra);
            auto r = client_.post(m.body, h);
            if (!r) return r.error();
            if (r->status < 200 || r->status > 299)
                return error(errc::server_error,
                             "The webhook answered HTTP " + std::to_string(r->status) + ".");
        }
        held_.hold(std::move(cursor));
        return {};
    }

    result<void> flush(sys_time, bool) override { return held_.write(kv_); }

  private:
    std::vector<std::pair<std::string, std::string>> headers_;
    http::client client_;
    storage::kv_store& kv_;
    routing::held_cursors held_;
};

}  // namespace

result<std::unique_ptr<routing::sink>> make_webhook_sink(const routing::endpoint& e,
                                                         storage::kv_store& kv,
                                                         http::client_options options) {
    auto url = http::parse_url(e.endpoint_uri);
    if (!url) return url.error();
    return std::unique_ptr<routing::sink>(
        std::make_unique<webhook_sink>(e, std::move(*url), kv, std::move(options)));
}

}  // namespace iothub::endpoints
