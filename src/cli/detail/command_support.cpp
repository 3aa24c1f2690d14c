#include "cli/detail/command_support.hpp"

#include <algorithm>
#include <fstream>
#include <iostream>
#include <iterator>

namespace iothub::cli::detail {

hub_access connect(const invocation& inv, bool need_running) {
    auto hub = resolve_access(inv.access, need_running);
    if (!hub) throw failure{hub.error().message()};
    return std::move(*hub);
}

json::value request_json(const hub_access& hub, const std::string& method,
                         const std::string& target, const std::string& body,
                         const std::vector<std::pair<std::string, std::string>>& headers) {
    auto r = call(hub, method, target, body, headers);
    if (!r) throw failure{r.error().message()};
    if (r->status >= 300) throw failure{describe_failure(*r)};
    if (r->body.empty()) return nullptr;
    boost::system::error_code ec;
    auto v = json::parse(r->body, ec);
    if (ec) throw failure{"The hub answered with invalid JSON: " + ec.message()};
    return v;
}

json::array query_pages(const hub_access& hub, const std::string& target, const std::string& body,
                        std::size_t page, std::size_t top) {
    hub_connection conn(hub);
    json::array rows;
    std::string continuation;
    for (;;) {
        const auto wanted = top ? std::min(page, top - rows.size()) : page;
        std::vector<std::pair<std::string, std::string>> headers{
            {"Content-Type", "application/json"}, {"x-ms-max-item-count", std::to_string(wanted)}};
        if (!continuation.empty()) headers.emplace_back("x-ms-continuation", continuation);
        auto r = conn.call("POST", target, body, headers);
        if (!r) throw failure{r.error().message()};
        if (r->status >= 300) throw failure{describe_failure(*r)};
        boost::system::error_code ec;
        auto answer = json::parse(r->body, ec);
        if (ec || !answer.is_array()) throw failure{"The hub answered a query without rows."};
        for (auto& row : answer.get_array()) {
            if (top && rows.size() >= top) break;
            rows.push_back(std::move(row));
        }
        auto next = r->headers.find("x-ms-continuation");
        if (next == r->headers.end() || (top && rows.size() >= top)) break;
        continuation = next->second;
    }
    return rows;
}

std::string read_input(const std::string& path) {
    if (path == "-") return std::string((std::istreambuf_iterator<char>(std::cin)), {});
    std::ifstream in(path, std::ios::binary);
    if (!in) throw failure{"Cannot read " + path + "."};
    return std::string((std::istreambuf_iterator<char>(in)), {});
}

json::value json_argument(const std::string& text, const std::string& what) {
    std::string content = !text.empty() && text.front() == '@' ? read_input(text.substr(1)) : text;
    boost::system::error_code ec;
    auto v = json::parse(content, ec);
    if (ec) throw failure{what + " is not valid JSON: " + ec.message()};
    return v;
}

std::pair<std::string, std::string> key_value(const std::string& text, const std::string& option) {
    auto eq = text.find('=');
    if (eq == 0 || eq == std::string::npos)
        throw failure{option + " takes key=value, not '" + text + "'."};
    return {text.substr(0, eq), text.substr(eq + 1)};
}

void print_pretty(std::ostream& out, const json::value& v, int indent) {
    const std::string pad(static_cast<std::size_t>(indent) * 2, ' ');
    const std::string inner(static_cast<std::size_t>(indent + 1) * 2, ' ');
    if (v.is_object()) {
        const auto& o = v.get_object();
        if (o.empty()) {
            out << "{}";
            return;
        }
        out << "{\n";
        std::size_t i = 0;
        for (const auto& [k, val] : o) {
            out << inner << json::serialize(json::value(k)) << ": ";
            print_pretty(out, val, indent + 1);
            out << (++i < o.size() ? ",\n" : "\n");
        }
        out << pad << "}";
    } else if (v.is_array()) {
        const auto& a = v.get_array();
        if (a.empty()) {
            out << "[]";
            return;
        }
        out << "[\n";
        for (std::size_t i = 0; i < a.size(); ++i) {
            out << inner;
            print_pretty(out, a[i], indent + 1);
            out << (i + 1 < a.size() ? ",\n" : "\n");
        }
        out << pad << "]";
    } else {
        out << json::serialize(v);
    }
}

void print(const json::value& v) {
    print_pretty(std::cout, v, 0);
    std::cout << "\n";
}

}  // namespace iothub::cli::detail
