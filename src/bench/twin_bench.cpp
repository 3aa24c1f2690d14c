#include "bench/twin_bench.hpp"

#include "bench/detail/support.hpp"
#include "bench/detail/sync_device.hpp"
#include "cli/commands.hpp"
#include "cli/hub_client.hpp"
#include "common/encoding.hpp"
#include "common/time.hpp"
#include "mqtt/codec.hpp"
#include "tls/context.hpp"

#include <boost/asio/ssl.hpp>
#include <boost/json.hpp>

#include <atomic>
#include <iostream>
#include <memory>
#include <thread>

namespace iothub::bench {
namespace asio = boost::asio;
namespace json = boost::json;
using steady = std::chrono::steady_clock;

namespace {

struct twin_options {
    std::string mode = "desired";
    std::string data_dir, connection_string, ca_file;
    std::size_t devices = 10;
    std::size_t count = 2000;   // desired / method operations
    double rate = 200;          // desired / method operations per second
    double duration = 10;       // reported mode
    std::size_t twins = 10000;  // query mode
    int repeat = 3;             // query mode
    std::string prefix = "tbench-";
    bool json_output = false;
};

std::uint32_t micros_since(steady::time_point t) {
    return static_cast<std::uint32_t>(
        std::chrono::duration_cast<std::chrono::microseconds>(steady::now() - t).count());
}

using detail::sync_device;

struct fixture {
    cli::hub_access hub;
    std::uint16_t mqtt_port = 8883;
    std::shared_ptr<asio::ssl::context> tls;
    std::vector<std::string> keys;
};

fixture prepare(const twin_options& o, std::size_t devices) {
    fixture f;
    auto access = cli::resolve_access({o.connection_string, o.data_dir, "", o.ca_file}, true);
    if (!access) throw std::runtime_error(access.error().message());
    f.hub = *access;
    if (access->layout) {
        auto running = instance::read_runtime(*access->layout);
        if (!running) throw std::runtime_error(running.error().message());
        f.mqtt_port = running->mqtt_port;
    }
    auto ctx = tls::make_client_context(f.hub.ca);
    if (!ctx) throw std::runtime_error(ctx.error().message());
    f.tls = *ctx;
    f.keys = detail::create_devices(f.hub, o.prefix, devices);
    return f;
}

std::string id_of(const twin_options& o, std::size_t i) {
    return o.prefix + std::to_string(i);
}

// Calls `op(i)` `count` times at `rate` per second from one thread (a fixed schedule, so a slow
// answer does not lower the offered load for long).
template <class Op>
void paced(std::size_t count, double rate, Op op) {
    const auto interval = std::chrono::nanoseconds(static_cast<std::int64_t>(1e9 / rate));
    auto next = steady::now();
    for (std::size_t i = 0; i < count; ++i) {
        std::this_thread::sleep_until(next);
        next += interval;
        op(i);
    }
}

json::object run_reported(const twin_options& o) {
    auto f = prepare(o, o.devices);
    std::vector<std::unique_ptr<sync_device>> devs;
    for (std::size_t i = 0; i < o.devices; ++i) {
        devs.push_back(
            std::make_unique<sync_device>(f.tls.get(), f.hub, f.mqtt_port, id_of(o, i), f.keys[i]));
        devs.back()->subscribe({"$iothub/twin/res/#"});
    }
    std::vector<std::vector<std::uint32_t>> latencies(o.devices);
    std::atomic<std::uint64_t> done{0};
    const auto deadline = steady::now() + std::chrono::duration<double>(o.duration);
    std::vector<std::thread> threads;
    for (std::size_t i = 0; i < o.devices; ++i)
        threads.emplace_back([&, i] {
            auto& d = *devs[i];
            for (std::uint64_t n = 1; steady::now() < deadline; ++n) {
                const auto rid = std::to_string(n);
                const auto t0 = steady::now();
                d.publish("$iothub/twin/PATCH/properties/reported/?$rid=" + rid,
                          json::serialize(json::object{{"counter", n}, {"temperature", 20.5}}));
                for (;;) {
                    auto p = d.read();
                    auto* pub = std::get_if<mqtt::publish_packet>(&p);
                    if (!pub || pub->topic.find("$rid=" + rid) == std::string::npos) continue;
                    if (pub->topic.rfind("$iothub/twin/res/204/", 0) != 0)
                        throw std::runtime_error("reported update refused: " + pub->topic);
                    break;
                }
                latencies[i].push_back(micros_since(t0));
                ++done;
            }
        });
    for (auto& t : threads) t.join();
    std::vector<std::uint32_t> all;
    for (auto& l : latencies) all.insert(all.end(), l.begin(), l.end());
    return {{"mode", "reported"},
            {"devices", o.devices},
            {"updates", done.load()},
            {"updatesPerSecond", static_cast<double>(done.load()) / o.duration},
            {"patchTo204", detail::latency_json(all)}};
}

// Devices that listen (desired notifications or method calls) on threads of their own.
struct listeners {
    std::vector<std::unique_ptr<sync_device>> devices;
    std::vector<std::thread> threads;
    ~listeners() {
        for (auto& d : devices) d->close();
        for (auto& t : threads) t.join();
    }
};

json::object run_desired(const twin_options& o) {
    auto f = prepare(o, o.devices);
    std::vector<std::atomic<std::int64_t>> sent_at(o.count);
    std::mutex mutex;
    std::vector<std::uint32_t> notified;
    std::atomic<std::size_t> received{0};
    listeners l;
    for (std::size_t i = 0; i < o.devices; ++i) {
        l.devices.push_back(
            std::make_unique<sync_device>(f.tls.get(), f.hub, f.mqtt_port, id_of(o, i), f.keys[i]));
        l.devices.back()->subscribe({"$iothub/twin/PATCH/properties/desired/#"});
    }
    for (auto& d : l.devices)
        l.threads.emplace_back([&, dev = d.get()] {
            try {
                for (;;) {
                    auto p = dev->read();
                    auto* pub = std::get_if<mqtt::publish_packet>(&p);
                    if (!pub) continue;
                    auto at = steady::now().time_since_epoch().count();
                    auto seq = json::parse(pub->payload).at("seq").to_number<std::size_t>();
                    std::lock_guard lock(mutex);
                    notified.push_back(
                        static_cast<std::uint32_t>((at - sent_at[seq].load()) / 1000));
                    ++received;
                }
            } catch (const std::exception&) {
                // closed at the end
            }
        });
    cli::hub_connection service(f.hub);
    std::vector<std::uint32_t> patch_latency;
    paced(o.count, o.rate, [&](std::size_t i) {
        const auto t0 = steady::now();
        sent_at[i] = t0.time_since_epoch().count();
        auto body = json::serialize(
            json::object{{"properties", json::object{{"desired", json::object{{"seq", i}}}}}});
        auto r = service.call(
            "PATCH",
            "/twins/" + percent_encode(id_of(o, i % o.devices)) + "?api-version=2021-04-12", body);
        if (!r || r->status != 200) throw std::runtime_error("twin update failed");
        patch_latency.push_back(micros_since(t0));
    });
    const auto wait_until = steady::now() + std::chrono::seconds(5);
    while (received < o.count && steady::now() < wait_until)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    std::lock_guard lock(mutex);
    return {{"mode", "desired"},
            {"devices", o.devices},
            {"updates", o.count},
            {"ratePerSecond", o.rate},
            {"notified", received.load()},
            {"serviceCallToDevice", detail::latency_json(notified)},
            {"servicePatchResponse", detail::latency_json(patch_latency)}};
}

json::object run_method(const twin_options& o) {
    auto f = prepare(o, o.devices);
    listeners l;
    for (std::size_t i = 0; i < o.devices; ++i) {
        l.devices.push_back(
            std::make_unique<sync_device>(f.tls.get(), f.hub, f.mqtt_port, id_of(o, i), f.keys[i]));
        l.devices.back()->subscribe({"$iothub/methods/POST/#"});
    }
    for (auto& d : l.devices)
        l.threads.emplace_back([dev = d.get()] {
            try {
                for (;;) {
                    auto p = dev->read();
                    auto* pub = std::get_if<mqtt::publish_packet>(&p);
                    if (!pub) continue;
                    auto rid = pub->topic.substr(pub->topic.rfind("?$rid=") + 6);
                    dev->publish("$iothub/methods/res/200/?$rid=" + rid, pub->payload);
                }
            } catch (const std::exception&) {
            }
        });
    cli::hub_connection service(f.hub);
    std::vector<std::uint32_t> rtt;
    std::size_t failed = 0;
    paced(o.count, o.rate, [&](std::size_t i) {
        const auto t0 = steady::now();
        auto body = json::serialize(json::object{{"methodName", "echo"},
                                                 {"payload", json::object{{"i", i}}},
                                                 {"responseTimeoutInSeconds", 10}});
        auto r = service.call(
            "POST",
            "/twins/" + percent_encode(id_of(o, i % o.devices)) + "/methods?api-version=2021-04-12",
            body);
        if (!r || r->status != 200) {
            ++failed;
            return;
        }
        rtt.push_back(micros_since(t0));
    });
    return {{"mode", "method"},        {"devices", o.devices},
            {"calls", o.count},        {"failed", failed},
            {"ratePerSecond", o.rate}, {"roundTrip", detail::latency_json(rtt)}};
}

json::object run_query(const twin_options& o) {
    auto f = prepare(o, o.twins);
    cli::hub_connection service(f.hub);
    // One twin in a hundred gets the tag the selective query looks for.
    for (std::size_t i = 0; i < o.twins; i += 100) {
        auto r = service.call("PATCH",
                              "/twins/" + percent_encode(id_of(o, i)) + "?api-version=2021-04-12",
                              R"({"tags":{"bench":"selected"}})");
        if (!r || r->status != 200) throw std::runtime_error("tagging failed");
    }
    json::object results;
    for (std::string q :
         {"SELECT * FROM devices WHERE tags.bench = 'selected'", "SELECT COUNT() AS n FROM devices",
          "SELECT status, COUNT() AS n FROM devices GROUP BY status"}) {
        std::vector<double> ms;
        std::size_t rows = 0;
        for (int run = 0; run < o.repeat; ++run) {
            const auto t0 = steady::now();
            std::string continuation;
            rows = 0;
            for (;;) {
                std::vector<std::pair<std::string, std::string>> headers{
                    {"x-ms-max-item-count", "1000"}};
                if (!continuation.empty()) headers.emplace_back("x-ms-continuation", continuation);
                auto r = service.call("POST", "/devices/query?api-version=2021-04-12",
                                      json::serialize(json::object{{"query", q}}), headers);
                if (!r || r->status != 200) throw std::runtime_error("query failed: " + q);
                rows += json::parse(r->body).as_array().size();
                auto next = r->headers.find("x-ms-continuation");
                if (next == r->headers.end()) break;
                continuation = next->second;
            }
            ms.push_back(static_cast<double>(micros_since(t0)) / 1000.0);
        }
        std::sort(ms.begin(), ms.end());
        results[q] =
            json::object{{"rows", rows}, {"bestMs", ms.front()}, {"medianMs", ms[ms.size() / 2]}};
    }
    return {{"mode", "query"}, {"twins", o.twins}, {"queries", std::move(results)}};
}

}  // namespace

void add_twin_command(CLI::App& app, int& exit_code) {
    auto o = std::make_shared<twin_options>();
    auto* cmd = app.add_subcommand(
        "bench-twin", "Benchmark twins, direct methods and queries against a running hub");
    cmd->add_option("--mode", o->mode, "reported, desired, method or query (default desired)")
        ->check(CLI::IsMember({"reported", "desired", "method", "query"}));
    cmd->add_option("--devices", o->devices, "Simulated devices (default 10)");
    cmd->add_option("--count", o->count, "desired/method: operations (default 2000)");
    cmd->add_option("--rate", o->rate, "desired/method: operations per second (default 200)");
    cmd->add_option("--duration", o->duration, "reported: seconds (default 10)");
    cmd->add_option("--twins", o->twins, "query: twins to create (default 10000)");
    cmd->add_option("--repeat", o->repeat, "query: runs of each query (default 3)");
    cmd->add_option("--prefix", o->prefix, "Device id prefix (default tbench-)");
    cmd->add_flag("--json", o->json_output, "One JSON object instead of indented text");
    cmd->add_option("--data-dir", o->data_dir, "The hub's data directory");
    cmd->add_option("--connection-string", o->connection_string, "Service connection string");
    cmd->add_option("--ca-file", o->ca_file, "CA certificate to trust");
    cmd->final_callback([o, &exit_code] {
        try {
            if (o->devices == 0 || o->count == 0 || o->rate <= 0 || o->repeat < 1)
                throw std::runtime_error(
                    "--devices, --count, --rate and --repeat must be positive.");
            auto report = o->mode == "reported"  ? run_reported(*o)
                          : o->mode == "desired" ? run_desired(*o)
                          : o->mode == "method"  ? run_method(*o)
                                                 : run_query(*o);
            auto text = json::serialize(report);
            std::cout << (o->json_output ? text : cli::pretty_json(text)) << "\n";
            exit_code = 0;
        } catch (const std::exception& e) {
            std::cerr << "error: " << e.what() << "\n";
            exit_code = 1;
        }
    });
}

}  // namespace iothub::bench
