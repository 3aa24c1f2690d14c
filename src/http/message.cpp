#include "http/message.hpp"

#include "common/crypto.hpp"
#include "common/encoding.hpp"
#include "common/time.hpp"

#include <boost/json.hpp>

#include <atomic>

namespace iothub::http {

std::string_view request::header(std::string_view lower_name) const {
    for (const auto& [k, v] : headers)
        if (k == lower_name) return v;
    return {};
}

std::optional<std::string_view> request::query_value(std::string_view name) const {
    for (const auto& [k, v] : query)
        if (k == name) return std::string_view(v);
    return std::nullopt;
}

const std::string& request::param(std::string_view name) const {
    static const std::string empty;
    auto it = params.find(name);
    return it == params.end() ? empty : it->second;
}

std::string request::decoded_path() const {
    std::string out;
    for (const auto& s : segments) out += "/" + s;
    return out.empty() ? "/" : out;
}

response response::json(int status, const boost::json::value& body) {
    response r{status, {{"Content-Type", "application/json; charset=utf-8"}}, {}};
    r.body = boost::json::serialize(body);
    return r;
}

response error_response(const error& e) {
    const auto& d = e.descriptor();
    std::string tracking = hex_encode(random_bytes(16));
    boost::json::object body{
        {"Message", "ErrorCode:" + std::string(d.name) + ";" + e.message()},
        {"ExceptionMessage", "Tracking ID:" + tracking + "-TimeStamp:" + format_iso8601(now())},
    };
    auto r = response::json(d.http_status, body);
    r.with_header("iothub-errorcode", std::string(d.name));
    return r;
}

struct responder::state {
    sink target;
    std::atomic<bool> done{false};
    ~state() {
        if (!done.exchange(true))
            target(error_response(error(errc::server_error, "The request was not answered.")));
    }
};

responder::responder(sink s) : state_(std::make_shared<state>()) {
    state_->target = std::move(s);
}

void responder::operator()(response r) const {
    if (!state_->done.exchange(true)) state_->target(std::move(r));
}

result<parsed_target> parse_target(std::string_view target) {
    parsed_target out;
    auto q = target.find('?');
    std::string_view path = target.substr(0, q);
    out.path = std::string(path);
    if (path.empty() || path.front() != '/')
        return error(errc::bad_request, "The request target must start with '/'.");
    std::string_view rest = path.substr(1);
    while (true) {
        auto slash = rest.find('/');
        auto raw = rest.substr(0, slash);
        auto seg = percent_decode(raw);
        if (!seg)
            return error(errc::bad_request, "Malformed percent-encoding in the request path.");
        out.segments.push_back(std::move(*seg));
        if (slash == std::string_view::npos) break;
        rest = rest.substr(slash + 1);
    }
    while (!out.segments.empty() && out.segments.back().empty()) out.segments.pop_back();
    if (q != std::string_view::npos) {
        std::string_view query = target.substr(q + 1);
        while (!query.empty()) {
            auto amp = query.find('&');
            auto pair = query.substr(0, amp);
            query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
            if (pair.empty()) continue;
            auto eq = pair.find('=');
            std::string k(pair.substr(0, eq));
            std::string v(eq == std::string_view::npos ? std::string_view{} : pair.substr(eq + 1));
            for (auto* s : {&k, &v})
                for (auto& c : *s)
                    if (c == '+') c = ' ';  // form encoding in queries only
            auto dk = percent_decode(k), dv = percent_decode(v);
            if (!dk || !dv)
                return error(errc::bad_request, "Malformed percent-encoding in the query string.");
            out.query.emplace_back(std::move(*dk), std::move(*dv));
        }
    }
    return out;
}

}  // namespace iothub::http
