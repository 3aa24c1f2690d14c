#include "bench/detail/support.hpp"

#include "common/crypto.hpp"

#include <boost/json.hpp>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <unistd.h>

namespace iothub::bench::detail {
namespace json = boost::json;

std::vector<std::string> create_devices(const cli::hub_access& hub, const std::string& prefix,
                                        std::size_t count) {
    std::vector<std::string> keys;
    keys.reserve(count);
    cli::hub_connection conn(hub);
    for (std::size_t i = 0; i < count; i += 100) {
        json::array batch;
        for (std::size_t j = i; j < std::min(count, i + 100); ++j) {
            keys.push_back(generate_key());
            batch.push_back(json::object{
                {"id", prefix + std::to_string(j)},
                {"importMode", "createOrUpdate"},
                {"status", "enabled"},
                {"authentication",
                 json::object{{"type", "sas"},
                              {"symmetricKey", json::object{{"primaryKey", keys.back()},
                                                            {"secondaryKey", keys.back()}}}}}});
        }
        auto r = conn.call("POST", "/devices?api-version=2021-04-12", json::serialize(batch));
        if (!r || r->status != 200)
            throw std::runtime_error("Creating the bench devices failed: " +
                                     (r ? cli::describe_failure(*r) : r.error().message()));
    }
    return keys;
}

double process_cpu_seconds(int pid) {
    if (pid <= 0) return 0;
    std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
    std::string text((std::istreambuf_iterator<char>(in)), {});
    auto close = text.rfind(')');
    if (close == std::string::npos) return 0;
    std::istringstream fields(text.substr(close + 2));
    std::string f;
    std::vector<std::string> v;
    while (fields >> f) v.push_back(f);
    // After "pid (comm) ": state is field 3; utime and stime are fields 14 and 15.
    if (v.size() <= 12) return 0;
    return (std::stod(v[11]) + std::stod(v[12])) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

double percentile(std::vector<std::uint32_t>& v, double p) {
    if (v.empty()) return 0;
    auto k = static_cast<std::size_t>(std::min<double>(v.size() - 1, p / 100.0 * v.size()));
    std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
    return v[k] / 1000.0;  // ms
}

json::object latency_json(std::vector<std::uint32_t>& v) {
    json::object o{{"samples", v.size()}};
    for (auto [name, p] :
         {std::pair{"p50", 50.0}, {"p90", 90.0}, {"p99", 99.0}, {"p999", 99.9}, {"max", 100.0}})
        o[name] = percentile(v, p);
    return o;
}

}  // namespace iothub::bench::detail
