#include "bench/c2d_bench.hpp"

#include "bench/detail/support.hpp"
#include "bench/detail/sync_device.hpp"
#include "cli/amqp_client.hpp"
#include "cli/commands.hpp"
#include "common/crypto.hpp"
#include "tls/context.hpp"

#include <boost/json.hpp>

#include <algorithm>
#include <charconv>
#include <condition_variable>
#include <iostream>
#include <mutex>
#include <thread>

namespace iothub::bench {
namespace json = boost::json;
using steady = std::chrono::steady_clock;

namespace {

struct c2d_options {
    std::string data_dir, connection_string, ca_file;
    std::size_t devices = 10;
    std::size_t count = 5000;
    double rate = 200;        // messages per second; 0: as fast as credit and queues allow
    std::size_t window = 25;  // per device: sent but not yet received (the hub's depth is 50)
    std::size_t payload = 64;
    double timeout = 120;  // the whole run, from the first send
    bool plain = false;
    int server_pid = 0;
    std::string prefix = "cbench-";
    bool json_output = false;
};

std::int64_t steady_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(steady::now().time_since_epoch())
        .count();
}

// What the device threads and the sender share.
struct tally {
    std::mutex mutex;
    std::condition_variable changed;
    std::vector<std::uint32_t> latency_us;
    std::size_t received = 0, accepted = 0, rejected = 0, foreign = 0;
    std::string last_rejection;
    std::int64_t last_received_ns = 0;
    std::size_t outstanding() const { return accepted + pending_sends - received; }
    std::size_t pending_sends = 0;  // handed to the client, not yet settled
};

// The body: "<run> <seq> <send time ns>" and padding. A message from another run (left in a
// queue by an interrupted one) is completed but not counted.
std::string body_of(const std::string& run, std::size_t seq, std::size_t payload) {
    std::string b = run + " " + std::to_string(seq) + " " + std::to_string(steady_ns()) + " ";
    if (b.size() < payload) b.append(payload - b.size(), 'x');
    return b;
}

bool parse_body(std::string_view b, std::string_view run, std::int64_t& sent_ns) {
    if (b.substr(0, run.size()) != run || b.size() <= run.size() + 1) return false;
    b.remove_prefix(run.size() + 1);
    auto space = b.find(' ');
    if (space == std::string_view::npos) return false;
    b.remove_prefix(space + 1);
    return std::from_chars(b.data(), b.data() + b.size(), sent_ns).ec == std::errc();
}

json::object run(const c2d_options& o) {
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
    std::vector<std::unique_ptr<detail::sync_device>> devices;
    std::vector<std::thread> threads;
    struct closer {
        std::vector<std::unique_ptr<detail::sync_device>>& d;
        std::vector<std::thread>& t;
        ~closer() {
            for (auto& x : d) x->close();
            for (auto& x : t) x.join();
        }
    } close_all{devices, threads};
    for (std::size_t i = 0; i < o.devices; ++i) {
        const auto id = o.prefix + std::to_string(i);
        devices.push_back(
            std::make_unique<detail::sync_device>(tls.get(), hub, mqtt_port, id, keys[i]));
        // QoS 1, as the SDKs subscribe: the PUBACK completes the message.
        devices.back()->subscribe({"devices/" + id + "/messages/devicebound/#"}, 1);
    }
    for (auto& d : devices)
        threads.emplace_back([&t, &run_id, dev = d.get()] {
            try {
                for (;;) {
                    auto p = dev->read();
                    auto* pub = std::get_if<mqtt::publish_packet>(&p);
                    if (!pub) continue;
                    const auto at = steady_ns();
                    if (pub->qos > 0) dev->send(mqtt::puback_packet{pub->packet_id});
                    std::int64_t sent = 0;
                    std::lock_guard lock(t.mutex);
                    if (!parse_body(pub->payload, run_id, sent)) {
                        ++t.foreign;
                        continue;
                    }
                    t.latency_us.push_back(static_cast<std::uint32_t>(
                        std::clamp<std::int64_t>((at - sent) / 1000, 0, UINT32_MAX)));
                    ++t.received;
                    t.last_received_ns = at;
                    t.changed.notify_all();
                }
            } catch (const std::exception&) {
                // closed at the end
            }
        });

    auto client = cli::amqp_service_client::open(hub, std::chrono::seconds(15));
    if (!client) throw std::runtime_error(client.error().message());
    auto& service = **client;

    const std::size_t window = o.window * o.devices;
    const auto interval = o.rate > 0
                              ? std::chrono::nanoseconds(static_cast<std::int64_t>(1e9 / o.rate))
                              : std::chrono::nanoseconds(0);
    const auto start = steady::now();
    const auto deadline = start + std::chrono::duration<double>(o.timeout);
    const double cpu0 = detail::process_cpu_seconds(server_pid);
    const std::int64_t start_ns = steady_ns();
    auto next = start;
    std::size_t sent = 0;
    for (; sent < o.count && steady::now() < deadline; ++sent) {
        if (o.rate > 0) {
            std::this_thread::sleep_until(next);
            next += interval;
        }
        {
            // Round-robin keeps each device's share of the window under its queue's depth.
            std::unique_lock lock(t.mutex);
            if (!t.changed.wait_until(lock, deadline, [&] { return t.outstanding() < window; }))
                break;
            ++t.pending_sends;
        }
        cli::c2d_message m;
        m.device_id = o.prefix + std::to_string(sent % o.devices);
        m.message_id = run_id + "-" + std::to_string(sent);
        m.body = body_of(run_id, sent, o.payload);
        service.send_async(std::move(m), [&t](const cli::send_outcome& r) {
            std::lock_guard lock(t.mutex);
            --t.pending_sends;
            if (r.accepted) {
                ++t.accepted;
            } else {
                ++t.rejected;
                t.last_rejection = cli::describe_rejection(r);
            }
            t.changed.notify_all();
        });
    }
    std::unique_lock lock(t.mutex);
    t.changed.wait_until(lock, deadline,
                         [&] { return t.pending_sends == 0 && t.received >= t.accepted; });
    const double cpu1 = detail::process_cpu_seconds(server_pid);
    const double seconds =
        static_cast<double>((t.last_received_ns ? t.last_received_ns : steady_ns()) - start_ns) /
        1e9;
    json::object report{
        {"devices", o.devices},
        {"transport", o.plain ? "tcp" : "tls"},
        {"ratePerSecond", o.rate},
        {"sent", sent},
        {"accepted", t.accepted},
        {"rejected", t.rejected},
        {"received", t.received},
        {"seconds", seconds},
        {"receivedPerSecond", seconds > 0 ? static_cast<double>(t.received) / seconds : 0.0},
        {"sendToDevice", detail::latency_json(t.latency_us)}};
    if (!t.last_rejection.empty()) report["lastRejection"] = t.last_rejection;
    if (t.foreign) report["otherRunsMessages"] = t.foreign;
    if (server_pid > 0) {
        report["serverPid"] = server_pid;
        report["serverCpuSeconds"] = cpu1 - cpu0;
        report["messagesPerServerCpuSecond"] =
            cpu1 > cpu0 ? static_cast<double>(t.received) / (cpu1 - cpu0) : 0.0;
    }
    return report;
}

}  // namespace

void add_c2d_command(CLI::App& app, int& exit_code) {
    auto o = std::make_shared<c2d_options>();
    auto* cmd = app.add_subcommand(
        "bench-c2d",
        "Benchmark cloud-to-device messages (AMQP send, MQTT devices) on a running hub");
    cmd->add_option("--devices", o->devices, "Simulated devices (default 10)");
    cmd->add_option("--count", o->count, "Messages to send (default 5000)");
    cmd->add_option("--rate", o->rate, "Messages per second; 0 = as fast as credit allows (200)");
    cmd->add_option("--window", o->window,
                    "Per device, messages sent and not yet received (default 25)");
    cmd->add_option("--payload", o->payload, "Body bytes (default 64)");
    cmd->add_option("--timeout", o->timeout, "Give up after this many seconds (default 120)");
    cmd->add_flag("--mqtt-plain", o->plain, "Devices over plain TCP (serve --mqtt-plain)");
    cmd->add_option("--server-pid", o->server_pid,
                    "The hub's pid for CPU time (default: from runtime.json)");
    cmd->add_option("--prefix", o->prefix, "Device id prefix (default cbench-)");
    cmd->add_flag("--json", o->json_output, "One JSON object instead of indented text");
    cmd->add_option("--data-dir", o->data_dir, "The hub's data directory");
    cmd->add_option("--connection-string", o->connection_string, "Service connection string");
    cmd->add_option("--ca-file", o->ca_file, "CA certificate to trust");
    cmd->final_callback([o, &exit_code] {
        try {
            if (o->devices == 0 || o->count == 0 || o->rate < 0 || o->window == 0 ||
                o->timeout <= 0)
                throw std::runtime_error(
                    "--devices, --count, --window and --timeout must be positive, --rate not "
                    "negative.");
            auto report = run(*o);
            auto text = json::serialize(report);
            std::cout << (o->json_output ? text : cli::pretty_json(text)) << "\n";
            const bool complete = report.at("received").to_number<std::size_t>() == o->count;
            exit_code = complete ? 0 : 1;
        } catch (const std::exception& e) {
            std::cerr << "error: " << e.what() << "\n";
            exit_code = 1;
        }
    });
}

}  // namespace iothub::bench
