// `iothub monitor`: tails device-to-cloud telemetry like `az iot hub monitor-events`, one JSON
// object per line. By default it reads the Event Hubs-compatible endpoint over AMQP, as
// monitor-events does; `--transport rest` reads the hub's /telemetry streaming API instead, which
// is also how checkpoints (`--from checkpoint`, `--checkpoint`) are kept.
#include "cli/detail/command_support.hpp"
#include "cli/event_hubs_reader.hpp"
#include "common/encoding.hpp"
#include "common/time.hpp"

#include <charconv>
#include <chrono>
#include <condition_variable>
#include <iostream>
#include <mutex>

namespace iothub::cli::detail {
namespace {

struct monitor_options {
    std::string transport;  // amqp | rest; empty: amqp unless a checkpoint is involved
    std::vector<int> partitions;
    std::string from = "end";  // start | end | checkpoint (also earliest, latest, sequence:N,
                               // time:ISO)
    std::string start_time;
    std::string sequence;
    std::string device;
    std::string module;
    std::string consumer_group = "$Default";
    bool checkpoint = false;
    std::size_t count = 0;      // 0: no limit
    std::uint64_t timeout = 0;  // seconds; 0: until interrupted
    bool system_properties = true;
};

// One event as monitor-events shows it: who sent it, the payload (parsed when it is JSON), and
// its properties.
json::object render(const json::object& e, bool with_system) {
    const auto& sys = e.at("systemProperties").as_object();
    auto text = [&](const char* k) -> std::string {
        auto* v = sys.if_contains(k);
        return v && v->is_string() ? std::string(v->get_string()) : std::string();
    };
    json::value payload = e.at("body");
    if (e.at("bodyEncoding").as_string() == "utf-8") {
        boost::system::error_code ec;
        auto parsed = json::parse(e.at("body").as_string(), ec);
        if (!ec) payload = std::move(parsed);
    }
    json::object event{{"origin", text("iothub-connection-device-id")},
                       {"module", text("iothub-connection-module-id")},
                       {"partition", e.at("partition")},
                       {"sequenceNumber", e.at("sequenceNumber")},
                       {"enqueuedTimeUtc", e.at("enqueuedTimeUtc")},
                       {"payload", std::move(payload)}};
    if (e.at("bodyEncoding").as_string() != "utf-8") event["payloadEncoding"] = "base64";
    json::object props{{"application", e.at("properties")}};
    if (with_system) props["system"] = sys;
    event["properties"] = std::move(props);
    return json::object{{"event", std::move(event)}};
}

void monitor_rest(const invocation& inv, const monitor_options& o) {
    auto hub = connect(inv);
    hub_connection connection(hub);  // one TLS session for the whole tail
    auto get = [&](const std::string& target) {
        auto r = connection.call("GET", target);
        if (!r) throw failure{r.error().message()};
        if (r->status >= 300) throw failure{describe_failure(*r)};
        return json::parse(r->body);
    };
    std::string spec = o.from == "start" || o.from == "earliest" ? "earliest"
                       : o.from == "checkpoint"                  ? "checkpoint"
                       : o.from.find(':') != std::string::npos   ? o.from
                                                                 : "latest";
    if (!o.start_time.empty()) spec = "time:" + o.start_time;
    if (!o.sequence.empty()) spec = "sequence:" + o.sequence;
    std::string parts;
    for (int p : o.partitions) parts += (parts.empty() ? "" : ",") + std::to_string(p);
    const std::string group = percent_encode(o.consumer_group);
    std::string query = "from=" + percent_encode(spec) + "&consumerGroup=" + group +
                        (parts.empty() ? "" : "&partitions=" + parts);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(o.timeout);
    std::size_t shown = 0;
    std::string cursor;
    for (;;) {
        auto left = std::chrono::duration_cast<std::chrono::seconds>(
                        deadline - std::chrono::steady_clock::now())
                        .count();
        if (o.timeout && left <= 0) break;
        int wait = o.timeout ? static_cast<int>(std::clamp<long long>(left, 1, 10)) : 10;
        std::string target = "/telemetry/events?" + (cursor.empty() ? query : "cursor=" + cursor) +
                             "&max=100&wait=" + std::to_string(wait) + "&api-version=2021-04-12";
        auto page = get(target).as_object();
        cursor = std::string(page.at("cursor").as_string());
        for (const auto& ev : page.at("events").as_array()) {
            const auto& e = ev.as_object();
            const auto& sys = e.at("systemProperties").as_object();
            auto matches = [&](const char* key, const std::string& want) {
                if (want.empty()) return true;
                auto* v = sys.if_contains(key);
                return v && v->is_string() && v->get_string() == want;
            };
            if (!matches("iothub-connection-device-id", o.device) ||
                !matches("iothub-connection-module-id", o.module))
                continue;
            std::cout << json::serialize(render(e, o.system_properties)) << std::endl;
            if (o.count && ++shown >= o.count) break;
        }
        if (o.checkpoint)
            request_json(
                hub, "PUT",
                "/telemetry/consumergroups/" + group + "/checkpoint?api-version=2021-04-12",
                json::serialize(json::object{{"cursor", cursor}}));
        if (o.count && shown >= o.count) break;
    }
}

// The same event object the REST API returns (telemetry_api.hpp), so both transports print alike.
json::object event_json(const eh_event& e) {
    json::object props, sys;
    for (const auto& [k, v] : e.properties) props[k] = v;
    for (const auto& [k, v] : e.system_properties) sys[k] = v;
    const auto enqueued = format_iso8601(sys_time(std::chrono::milliseconds(e.enqueued_ms)));
    json::object o{{"partition", std::to_string(e.partition)},
                   {"sequenceNumber", e.sequence_number},
                   {"offset", e.offset},
                   {"enqueuedTimeUtc", enqueued}};
    const bool text = valid_utf8(e.body);
    o["body"] = text ? e.body : base64_encode(e.body);
    o["bodyEncoding"] = text ? "utf-8" : "base64";
    o["properties"] = std::move(props);
    o["systemProperties"] = std::move(sys);
    return o;
}

eh_start start_of(const monitor_options& o) {
    eh_start s;
    auto sequence = [](const std::string& text) {
        std::int64_t n = 0;
        auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
        if (ec != std::errc{} || p != text.data() + text.size() || n < 0)
            throw failure{"A sequence number is a non-negative integer, not '" + text + "'."};
        return n;
    };
    auto time = [](const std::string& text) {
        auto t = parse_iso8601(text);
        if (!t) throw failure{"'" + text + "' is not an ISO-8601 time."};
        return unix_millis(*t);
    };
    if (o.from == "start" || o.from == "earliest") s.kind = eh_start::earliest;
    if (o.from.rfind("sequence:", 0) == 0) s = {eh_start::sequence, sequence(o.from.substr(9))};
    if (o.from.rfind("time:", 0) == 0) s = {eh_start::time, time(o.from.substr(5))};
    if (!o.start_time.empty()) s = {eh_start::time, time(o.start_time)};
    if (!o.sequence.empty()) s = {eh_start::sequence, sequence(o.sequence)};
    return s;
}

// Reads every partition (or those asked for) through the Event Hubs-compatible endpoint.
void monitor_amqp(const invocation& inv, const monitor_options& o) {
    auto hub = connect(inv);
    struct progress {
        std::mutex mutex;
        std::condition_variable done;
        std::size_t shown = 0;
    };
    auto p = std::make_shared<progress>();
    eh_reader_options options;
    options.consumer_group = o.consumer_group;
    options.partitions = o.partitions;
    options.start = start_of(o);
    options.on_event = [p, &o](const eh_event& e) {
        auto matches = [&](const char* key, const std::string& want) {
            if (want.empty()) return true;
            for (const auto& [k, v] : e.system_properties)
                if (k == key) return v == want;
            return false;
        };
        if (!matches("iothub-connection-device-id", o.device) ||
            !matches("iothub-connection-module-id", o.module))
            return;
        std::lock_guard lock(p->mutex);
        if (o.count && p->shown >= o.count) return;
        std::cout << json::serialize(render(event_json(e), o.system_properties)) << std::endl;
        ++p->shown;
        p->done.notify_all();
    };
    auto reader = event_hubs_reader::open(hub, std::move(options), std::chrono::seconds(15));
    if (!reader) throw failure{reader.error().message()};
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(o.timeout);
    std::unique_lock lock(p->mutex);
    for (;;) {
        if (o.count && p->shown >= o.count) break;
        if (o.timeout && std::chrono::steady_clock::now() >= deadline) break;
        if (auto why = (*reader)->failure(); !why.empty()) throw failure{why};
        p->done.wait_for(lock, std::chrono::milliseconds(100));
    }
    lock.unlock();
    reader->reset();  // closes the connection before `o` and `p` go
}

void monitor(const invocation& inv, const monitor_options& o) {
    const bool checkpointing = o.checkpoint || o.from == "checkpoint";
    if (o.transport == "amqp" && checkpointing)
        throw failure{"Checkpoints are kept through the REST transport: use --transport rest."};
    if (o.transport == "rest" || (o.transport.empty() && checkpointing))
        return monitor_rest(inv, o);
    monitor_amqp(inv, o);
}

}  // namespace

void add_monitor_command(CLI::App& app, const std::shared_ptr<invocation>& inv, const runner& run) {
    auto o = std::make_shared<monitor_options>();
    auto* cmd = app.add_subcommand("monitor", "Tail device-to-cloud telemetry (JSON lines)");
    cmd->add_option("-p,--partition", o->partitions, "Only these partitions (repeatable)");
    cmd->add_option("--transport", o->transport,
                    "amqp (the Event Hubs-compatible endpoint; default) or rest (/telemetry; "
                    "the default with --checkpoint or --from checkpoint)")
        ->check(CLI::IsMember({"amqp", "rest"}));
    cmd->add_option("--from", o->from,
                    "start, end (default), checkpoint (REST only); also earliest, latest, "
                    "sequence:N, time:ISO-8601")
        ->check([](const std::string& v) -> std::string {
            for (const char* ok : {"start", "end", "checkpoint", "earliest", "latest"})
                if (v == ok) return {};
            if (v.rfind("sequence:", 0) == 0 || v.rfind("time:", 0) == 0) return {};
            return "expected start, end, checkpoint, earliest, latest, sequence:N or time:ISO";
        });
    cmd->add_option("--start-time", o->start_time, "Events enqueued after this ISO-8601 UTC time");
    cmd->add_option("--sequence", o->sequence, "Events from this sequence number on (use with -p)");
    cmd->add_option("-d,--device-id", o->device, "Only this device's events");
    cmd->add_option("-m,--module-id", o->module, "Only this module's events");
    cmd->add_option("-g,--consumer-group", o->consumer_group, "Consumer group (default $Default)");
    cmd->add_flag("--checkpoint", o->checkpoint,
                  "Store progress in the consumer group as events are shown (REST transport "
                  "only; selects it)");
    cmd->add_option("-n,--count", o->count, "Stop after this many events");
    cmd->add_option("-t,--timeout", o->timeout,
                    "Stop after this many seconds (default: run until interrupted)");
    cmd->add_flag("!--no-system-properties", o->system_properties, "Leave out system properties");
    cmd->final_callback([inv, o, run] { run([inv, o] { monitor(*inv, *o); }); });
}

}  // namespace iothub::cli::detail
