#include "http/router.hpp"

#include "common/encoding.hpp"

#include <algorithm>

namespace iothub::http {

void router::add(std::string method, std::string_view pattern, handler fn, options opts) {
    route r{std::move(method), {}, std::move(fn), opts};
    std::string_view rest = pattern;
    while (!rest.empty() && rest.front() == '/') rest.remove_prefix(1);
    while (!rest.empty()) {
        auto slash = rest.find('/');
        r.pattern.emplace_back(rest.substr(0, slash));
        rest = slash == std::string_view::npos ? std::string_view{} : rest.substr(slash + 1);
    }
    routes_.push_back(std::move(r));
}

result<const router::route*> router::match(request& req) const {
    bool path_matched = false;
    for (const auto& r : routes_) {
        const bool rest = !r.pattern.empty() && r.pattern.back().ends_with("...}");
        if (rest ? req.segments.size() < r.pattern.size() : r.pattern.size() != req.segments.size())
            continue;
        std::map<std::string, std::string, std::less<>> captured;
        bool ok = true;
        for (std::size_t i = 0; i < r.pattern.size() && ok; ++i) {
            const auto& p = r.pattern[i];
            if (rest && i + 1 == r.pattern.size()) {
                std::string joined;
                for (std::size_t j = i; j < req.segments.size() && ok; ++j) {
                    if (req.segments[j].empty()) ok = false;
                    if (j > i) joined.push_back('/');
                    joined += req.segments[j];
                }
                captured[p.substr(1, p.size() - 5)] = std::move(joined);
            } else if (p.size() >= 2 && p.front() == '{' && p.back() == '}') {
                if (req.segments[i].empty())
                    ok = false;
                else
                    captured[p.substr(1, p.size() - 2)] = req.segments[i];
            } else {
                ok = r.opts.fold_case ? iequals(p, req.segments[i]) : p == req.segments[i];
            }
        }
        if (!ok) continue;
        path_matched = true;
        if (r.method != req.method) continue;
        req.params = std::move(captured);
        return &r;
    }
    if (path_matched)
        return error(errc::method_not_allowed,
                     "Method " + req.method + " is not supported on " + req.path + ".");
    return error(errc::not_found, "No resource at " + req.path + ".");
}

std::size_t router::largest_body(std::size_t fallback) const {
    for (const auto& r : routes_) fallback = std::max(fallback, r.opts.max_body);
    return fallback;
}

}  // namespace iothub::http
