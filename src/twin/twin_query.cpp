#include "twin/twin_query.hpp"

#include "common/encoding.hpp"
#include "query/query.hpp"

#include <boost/json.hpp>

namespace iothub::twin {
namespace json = boost::json;

namespace {

constexpr std::size_t scan_batch = 1000;

// Where a previous page stopped. `query` ties a token to its query text, so a token cannot be
// replayed against a different query by mistake.
struct cursor {
    std::string after;          // plain queries: resume after this identity key
    std::uint64_t emitted = 0;  // plain queries: rows already returned (for TOP)
    std::uint64_t offset = 0;   // aggregate queries: rows already returned
    std::uint64_t query = 0;
};

std::uint64_t fingerprint(std::string_view text) {
    std::uint64_t h = 1469598103934665603ull;  // FNV-1a
    for (unsigned char c : text) h = (h ^ c) * 1099511628211ull;
    return h;
}

std::string encode(const cursor& c) {
    json::object o{{"a", c.after}, {"e", c.emitted}, {"o", c.offset}, {"q", c.query}};
    return base64_encode(json::serialize(o));
}

result<cursor> decode(std::string_view token, std::uint64_t query) {
    cursor c;
    c.query = query;
    if (token.empty()) return c;
    auto bad = error(errc::argument_invalid, "The continuation token is not valid for this query.");
    auto text = base64_decode(token);
    if (!text) return bad;
    boost::system::error_code ec;
    auto v = json::parse(*text, ec);
    if (ec || !v.is_object()) return bad;
    const auto& o = v.get_object();
    const auto* a = o.if_contains("a");
    const auto* e = o.if_contains("e");
    const auto* off = o.if_contains("o");
    const auto* q = o.if_contains("q");
    if (!a || !a->is_string() || !e || !off || !q) return bad;
    try {
        c.after = a->get_string();
        c.emitted = e->to_number<std::uint64_t>();
        c.offset = off->to_number<std::uint64_t>();
        if (q->to_number<std::uint64_t>() != query) return bad;
    } catch (const std::exception&) {
        return bad;
    }
    return c;
}

std::string key_of(const json::object& twin) {
    const auto* d = twin.if_contains("deviceId");
    const auto* m = twin.if_contains("moduleId");
    std::string device = d && d->is_string() ? std::string(d->get_string()) : std::string();
    if (m && m->is_string()) return registry::module_key(device, m->get_string());
    return registry::device_key(device);
}

result<query_page> plain_query(twin_service& twins, const query::statement& s, bool modules,
                               std::size_t page_size, cursor c) {
    query_page page;
    page.item_type = s.selects_whole_rows() ? "Twin" : "Raw";
    const std::uint64_t top = s.top().value_or(UINT64_MAX);
    std::string after = c.after;  // the walk's position: the last key examined
    for (;;) {
        auto batch = twins.scan(modules, after, scan_batch);
        if (!batch) return batch.error();
        for (auto& twin : batch->twins) {
            auto key = key_of(twin);
            if (s.matches(twin)) {
                if (c.emitted >= top) return page;
                if (page.rows.size() == page_size) {
                    // Another row exists: the next page starts just before it.
                    c.after = after;
                    page.continuation = encode(c);
                    return page;
                }
                page.rows.push_back(s.selects_whole_rows() ? json::value(std::move(twin))
                                                           : json::value(s.project(twin)));
                ++c.emitted;
            }
            after = std::move(key);
        }
        if (batch->done) return page;
        after = batch->last_key;
    }
}

result<query_page> aggregate_query(twin_service& twins, const query::statement& s, bool modules,
                                   std::size_t page_size, cursor c) {
    query::aggregation agg(s);
    std::string after;
    for (;;) {
        auto batch = twins.scan(modules, after, scan_batch);
        if (!batch) return batch.error();
        for (const auto& twin : batch->twins)
            if (s.matches(twin)) agg.add(twin);
        if (batch->done) break;
        after = batch->last_key;
    }
    auto all = agg.finish();
    const std::uint64_t total = std::min<std::uint64_t>(all.size(), s.top().value_or(UINT64_MAX));
    query_page page;
    page.item_type = "Raw";
    for (auto i = c.offset; i < total && page.rows.size() < page_size; ++i)
        page.rows.push_back(std::move(all[static_cast<std::size_t>(i)]));
    if (c.offset + page.rows.size() < total) {
        c.offset += page.rows.size();
        page.continuation = encode(c);
    }
    return page;
}

}  // namespace

result<query_page> run_query(twin_service& twins, std::string_view text, std::size_t page_size,
                             std::string_view continuation) {
    auto s = query::parse(text);
    if (!s) return s.error();
    auto c = decode(continuation, fingerprint(text));
    if (!c) return c.error();
    if (page_size == 0) page_size = default_query_page;
    page_size = std::min(page_size, max_query_page);
    switch (s->from()) {
        case query::collection::jobs:
            // No jobs exist (scheduled jobs are not served), so the answer is always empty.
            return query_page{{}, "DeviceJob", std::nullopt};
        case query::collection::modules:
            return s->aggregates() ? aggregate_query(twins, *s, true, page_size, *c)
                                   : plain_query(twins, *s, true, page_size, *c);
        case query::collection::devices:
            break;
    }
    return s->aggregates() ? aggregate_query(twins, *s, false, page_size, *c)
                           : plain_query(twins, *s, false, page_size, *c);
}

}  // namespace iothub::twin
