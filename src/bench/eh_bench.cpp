#include "bench/eh_bench.hpp"

#include "bench/detail/support.hpp"
#include "bench/detail/sync_device.hpp"
#include "cli/commands.hpp"
#include "cli/event_hubs_reader.hpp"
#include "common/crypto.hpp"
#include "tls/context.hpp"

#include <boost/json.hpp>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <condition_variable>
#include <iostream>
#include <mutex>
#include <thread>

namespace iothub::bench {
namespace json = boost::json;
using steady = std::chrono::steady_clock;

namespace {

struct eh_options {
    std::string data_dir, connection_string, ca_file;
    std::size_t devices = 10;
    std::size_t count = 20000;
    double rate = 1000;  // events per second over all devices; 0: flat out
    std::size_t payload = 64;
    double timeout = 60;  // the whole run, from the first send
    double drain = 10;    // after the last send, how long to wait for stragglers
    bool plain = false;
    int server_pid = 0;
    std::string prefix = "ehbench-";
    std::string consumer_group = "$Default";
    std::string entity;      // read a hosted event hub (a routing endpoint) instead
    bool json_body = false;  // JSON bodies, sent as application/json in UTF-8
    std::string properties;  // application properties on every message: "k=v&k2=v2"
    bool json_output = false;
};

std::int64_t steady_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(steady::now().time_since_epoch())
        .count();
}

// The body: "<run> <seq> <send time ns> " and padding. Events of other runs (or other writers)
// in the stream are counted apart.
// With `json`, the same as a JSON object routes can read: {"r":"<run> <seq> <ns> ","pad":"x.."}.
std::string body_of(const std::string& run, std::size_t seq, std::size_t payload, bool json) {
    std::string b = run + " " + std::to_string(seq) + " " + std::to_string(steady_ns()) + " ";
    if (json) {
        std::string out = R"({"r":")" + b + R"(","seq":)" + std::to_string(seq) + R"(,"pad":")";
        if (out.size() + 2 < payload) out.append(payload - out.size() - 2, 'x');
        return out + "\"}";
    }
    if (b.size() < payload) b.append(payload - b.size(), 'x');
    return b;
}

bool parse_body(std::string_view b, std::string_view run, std::int64_t& sent_ns) {
    if (b.starts_with(R"({"r":")")) b.remove_prefix(6);
    if (b.substr(0, run.size()) != run || b.size() <= run.size() + 1) return false;
    b.remove_prefix(run.size() + 1);
    auto space = b.find(' ');
    if (space == std::string_view::npos) return false;
    b.remove_prefix(space + 1);
    return std::from_chars(b.data(), b.data() + b.size(), sent_ns).ec == std::errc();
}

struct tally {
    std::mutex mutex;
    std::condition_variable changed;
    std::vector<std::uint32_t> latency_us;
    std::size_t received = 0, foreign = 0;
    std::int64_t first_received_ns = 0, last_received_ns = 0;
};

json::object run(const eh_options& o) {
    auto access = cli::resolve_access({o.connection_string, o.data_dir, "", o.ca_file}, true);
    if (!access) throw std::runtime_error(access.error().message());
    auto hub = *access;
    std::uint16_t mqtt_port = 8883;
    int server_pid = o.server_pid;
    if (hub.layout) {
        auto running = instance::read_runtime(*hub.layout);
        if (!running) throw std::runtime_error(running.error().message());
        mqtt_port = o.plain ? running->mqtt_plain_port : running->mqtt_port;
        if (mqtt_port == 0)
            throw std::runtime_error("The hub's plain MQTT listener is off (serve --mqtt-plain).");
        if (!server_pid) server_pid = static_cast<int>(running->pid);
    } else if (o.plain) {
        mqtt_port = 1883;
    }
    std::shared_ptr<boost::asio::ssl::context> tls;
    if (!o.plain) {
        auto ctx = tls::make_client_context(hub.ca);
        if (!ctx) throw std::runtime_error(ctx.error().message());
        tls = *ctx;
    }
    auto keys = detail::create_devices(hub, o.prefix, o.devices);
    const std::string run_id = random_uuid().substr(0, 8);

    tally t;
    cli::eh_reader_options ro;
    ro.consumer_group = o.consumer_group;
    ro.entity = o.entity;
    ro.start.kind = cli::eh_start::latest;
    ro.on_event = [&t, &run_id](const cli::eh_event& e) {
        const auto at = steady_ns();
        std::int64_t sent = 0;
        std::lock_guard lock(t.mutex);
        if (!parse_body(e.body, run_id, sent)) {
            ++t.foreign;
            return;
        }
        t.latency_us.push_back(static_cast<std::uint32_t>(
            std::clamp<std::int64_t>((at - sent) / 1000, 0, UINT32_MAX)));
        if (!t.received++) t.first_received_ns = at;
        t.last_received_ns = at;
        t.changed.notify_all();
    };
    auto reader = cli::event_hubs_reader::open(hub, std::move(ro), std::chrono::seconds(15));
    if (!reader) throw std::runtime_error(reader.error().message());

    std::vector<std::unique_ptr<detail::sync_device>> devices;
    for (std::size_t i = 0; i < o.devices; ++i)
        devices.push_back(std::make_unique<detail::sync_device>(
            tls.get(), hub, mqtt_port, o.prefix + std::to_string(i), keys[i]));

    // Each device writes its share of the count at its share of the rate, the devices' schedules
    // staggered so the hub sees an even stream rather than bursts of N.
    std::atomic<std::size_t> sent{0};
    std::atomic<std::int64_t> last_sent_ns{0};
    std::string write_error;
    std::mutex error_mutex;
    const auto start = steady::now();
    const auto deadline = start + std::chrono::duration_cast<steady::duration>(
                                      std::chrono::duration<double>(o.timeout));
    const double cpu0 = detail::process_cpu_seconds(server_pid);
    const std::int64_t start_ns = steady_ns();
    std::vector<std::thread> writers;
    for (std::size_t i = 0; i < o.devices; ++i) {
        const std::size_t share = o.count / o.devices + (i < o.count % o.devices ? 1 : 0);
        writers.emplace_back([&, i, share] {
            auto& dev = *devices[i];
            std::string bag = o.properties;
            if (o.json_body)
                bag += std::string(bag.empty() ? "" : "&") + "$.ct=application%2Fjson&$.ce=utf-8";
            const std::string topic =
                "devices/" + o.prefix + std::to_string(i) + "/messages/events/" + bag;
            const auto interval = o.rate > 0 ? std::chrono::nanoseconds(static_cast<std::int64_t>(
                                                   1e9 * static_cast<double>(o.devices) / o.rate))
                                             : std::chrono::nanoseconds(0);
            auto next = start + interval * static_cast<std::int64_t>(i) /
                                    static_cast<std::int64_t>(o.devices);
            try {
                for (std::size_t k = 0; k < share && steady::now() < deadline; ++k) {
                    if (o.rate > 0) {
                        std::this_thread::sleep_until(next);
                        next += interval;
                    }
                    dev.publish(topic, body_of(run_id, i * o.count + k, o.payload, o.json_body));
                    ++sent;
                }
            } catch (const std::exception& e) {
                std::lock_guard lock(error_mutex);
                if (write_error.empty()) write_error = e.what();
            }
            auto at = steady_ns();
            auto prev = last_sent_ns.load();
            while (prev < at && !last_sent_ns.compare_exchange_weak(prev, at)) {
            }
        });
    }
    for (auto& w : writers) w.join();
    const std::size_t written = sent.load();
    {
        const auto drained = steady::now() + std::chrono::duration_cast<steady::duration>(
                                                 std::chrono::duration<double>(o.drain));
        std::unique_lock lock(t.mutex);
        t.changed.wait_until(lock, drained, [&] { return t.received >= written; });
    }
    const double cpu1 = detail::process_cpu_seconds(server_pid);
    auto why = (*reader)->failure();
    reader->reset();
    for (auto& d : devices) d->close();

    std::lock_guard lock(t.mutex);
    const double write_seconds = static_cast<double>(last_sent_ns.load() - start_ns) / 1e9;
    const double read_seconds =
        static_cast<double>((t.last_received_ns ? t.last_received_ns : steady_ns()) - start_ns) /
        1e9;
    json::object report{{"devices", o.devices},
                        {"transport", o.plain ? "tcp" : "tls"},
                        {"targetRatePerSecond", o.rate},
                        {"payloadBytes", o.payload},
                        {"written", written},
                        {"writeSeconds", write_seconds},
                        {"writtenPerSecond",
                         write_seconds > 0 ? static_cast<double>(written) / write_seconds : 0.0},
                        {"received", t.received},
                        {"readSeconds", read_seconds},
                        {"receivedPerSecond",
                         read_seconds > 0 ? static_cast<double>(t.received) / read_seconds : 0.0},
                        {"lost", written > t.received ? written - t.received : 0},
                        {"endToEnd", detail::latency_json(t.latency_us)}};
    if (t.foreign) report["otherEvents"] = t.foreign;
    if (!write_error.empty()) report["writeError"] = write_error;
    if (!why.empty() && t.received < written) report["readerError"] = why;
    if (server_pid > 0) {
        report["serverPid"] = server_pid;
        report["serverCpuSeconds"] = cpu1 - cpu0;
        report["eventsPerServerCpuSecond"] =
            cpu1 > cpu0 ? static_cast<double>(t.received) / (cpu1 - cpu0) : 0.0;
    }
    return report;
}

}  // namespace

void add_eh_command(CLI::App& app, int& exit_code) {
    auto o = std::make_shared<eh_options>();
    auto* cmd = app.add_subcommand(
        "bench-eh",
        "Benchmark reading telemetry from the Event Hubs-compatible endpoint while MQTT devices "
        "write it, on a running hub");
    cmd->add_option("--devices", o->devices, "Simulated devices (default 10)");
    cmd->add_option("--count", o->count, "Events to write (default 20000)");
    cmd->add_option("--rate", o->rate, "Events per second, all devices; 0 = flat out (1000)");
    cmd->add_option("--payload", o->payload, "Body bytes (default 64)");
    cmd->add_option("--timeout", o->timeout, "Stop writing after this many seconds (default 60)");
    cmd->add_option("--drain", o->drain,
                    "Seconds to wait for the reader after the last write (default 10)");
    cmd->add_flag("--mqtt-plain", o->plain, "Devices over plain TCP (serve --mqtt-plain)");
    cmd->add_option("-g,--consumer-group", o->consumer_group, "Consumer group (default $Default)");
    cmd->add_option(
        "--entity", o->entity,
        "Read this event hub that a routing endpoint hosts instead of the built-in one");
    cmd->add_flag("--json-body", o->json_body,
                  "JSON bodies sent as application/json, utf-8 (routes can read $body)");
    cmd->add_option("--properties", o->properties,
                    "Application properties on every message, as a topic's property bag: "
                    "k=v&k2=v2");
    cmd->add_option("--server-pid", o->server_pid,
                    "The hub's pid for CPU time (default: from runtime.json)");
    cmd->add_option("--prefix", o->prefix, "Device id prefix (default ehbench-)");
    cmd->add_flag("--json", o->json_output, "One JSON object instead of indented text");
    cmd->add_option("--data-dir", o->data_dir, "The hub's data directory");
    cmd->add_option("--connection-string", o->connection_string, "Service connection string");
    cmd->add_option("--ca-file", o->ca_file, "CA certificate to trust");
    cmd->final_callback([o, &exit_code] {
        try {
            if (o->devices == 0 || o->count == 0 || o->rate < 0 || o->timeout <= 0 || o->drain < 0)
                throw std::runtime_error(
                    "--devices, --count and --timeout must be positive, --rate and --drain not "
                    "negative.");
            auto report = run(*o);
            auto text = json::serialize(report);
            std::cout << (o->json_output ? text : cli::pretty_json(text)) << "\n";
            exit_code = report.at("lost").to_number<std::size_t>() == 0 ? 0 : 1;
        } catch (const std::exception& e) {
            std::cerr << "error: " << e.what() << "\n";
            exit_code = 1;
        }
    });
}

}  // namespace iothub::bench
