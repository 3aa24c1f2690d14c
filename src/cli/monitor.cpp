// `iothub monitor`: tails device-to-cloud telemetry like `az iot hub monitor-events`, one JSON
// object per line, through the hub's /telemetry streaming API.
#include "cli/detail/command_support.hpp"
#include "common/encoding.hpp"

#include <chrono>
#include <iostream>

namespace iothub::cli::detail {
namespace {

struct monitor_options {
    std::vector<int> partitions;
    std::string from = "end";  // start | end | checkpoint
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

void monitor(const invocation& inv, const monitor_options& o) {
    auto hub = connect(inv);
    hub_connection connection(hub);  // one TLS session for the whole tail
    auto get = [&](const std::string& target) {
        auto r = connection.call("GET", target);
        if (!r) throw failure{r.error().message()};
        if (r->status >= 300) throw failure{describe_failure(*r)};
        return json::parse(r->body);
    };
    std::string spec = o.from == "start"        ? "earliest"
                       : o.from == "checkpoint" ? "checkpoint"
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

}  // namespace

void add_monitor_command(CLI::App& app, const std::shared_ptr<invocation>& inv, const runner& run) {
    auto o = std::make_shared<monitor_options>();
    auto* cmd = app.add_subcommand("monitor", "Tail device-to-cloud telemetry (JSON lines)");
    cmd->add_option("-p,--partition", o->partitions, "Only these partitions (repeatable)");
    cmd->add_option("--from", o->from, "start, end (default) or checkpoint")
        ->check(CLI::IsMember({"start", "end", "checkpoint"}));
    cmd->add_option("--start-time", o->start_time, "Events enqueued after this ISO-8601 UTC time");
    cmd->add_option("--sequence", o->sequence, "Events from this sequence number on (use with -p)");
    cmd->add_option("-d,--device-id", o->device, "Only this device's events");
    cmd->add_option("-m,--module-id", o->module, "Only this module's events");
    cmd->add_option("-g,--consumer-group", o->consumer_group, "Consumer group (default $Default)");
    cmd->add_flag("--checkpoint", o->checkpoint,
                  "Store progress in the consumer group as events are shown");
    cmd->add_option("-n,--count", o->count, "Stop after this many events");
    cmd->add_option("-t,--timeout", o->timeout,
                    "Stop after this many seconds (default: run until interrupted)");
    cmd->add_flag("!--no-system-properties", o->system_properties, "Leave out system properties");
    cmd->final_callback([inv, o, run] { run([inv, o] { monitor(*inv, *o); }); });
}

}  // namespace iothub::cli::detail
