// What the client commands share: the options of one invocation, failures, and calling the hub.
#pragma once

#include "cli/hub_client.hpp"

#include <CLI/CLI.hpp>
#include <boost/json.hpp>

#include <cstdint>
#include <functional>
#include <iosfwd>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace iothub::cli::detail {
namespace json = boost::json;

// A command's failure, reported on stderr with exit status 1.
struct failure {
    std::string message;
};

// The shared state of one invocation: how to reach the hub and what each command asked for.
struct invocation {
    access_options access;
    std::string device_id, module_id, status, status_reason, auth_method = "shared_private_key";
    std::string primary_key, secondary_key, primary_thumbprint, secondary_thumbprint;
    std::string etag, key_type = "primary", renew = "both";
    std::string policy_for_sas;
    bool edge = false;
    std::size_t top = 1000;
    std::int64_t duration = 3600;
};

hub_access connect(const invocation& inv, bool need_running = true);

// Calls the hub and returns its JSON answer (null for an empty body); throws failure otherwise.
json::value request_json(const hub_access& hub, const std::string& method,
                         const std::string& target, const std::string& body = {},
                         const std::vector<std::pair<std::string, std::string>>& headers = {});

// The rows of a query answered page by page (a JSON array each, x-ms-continuation to the next),
// on one connection: `page` rows per request, stopping after `top` rows (0: all of them).
json::array query_pages(const hub_access& hub, const std::string& target, const std::string& body,
                        std::size_t page, std::size_t top);

// The text of a file, or of stdin for "-".
std::string read_input(const std::string& path);

// Reads a JSON argument given inline or as @file.
json::value json_argument(const std::string& text, const std::string& what);

// Splits a `key=value` argument of `option`; the value may contain '=' but the key may not be
// empty.
std::pair<std::string, std::string> key_value(const std::string& text, const std::string& option);

// Runs a command body, turning a failure into a message and exit status 1.
using runner = std::function<void(std::function<void()>)>;

// `iothub monitor` (monitor.cpp).
void add_monitor_command(CLI::App& app, const std::shared_ptr<invocation>& inv, const runner& run);

// `iothub routing`, `endpoint`, `route`, `enrichment` and `event-subscription`
// (routing_commands.cpp).
void add_routing_commands(CLI::App& app, const std::shared_ptr<invocation>& inv, const runner& run);

// `iothub dps enrollment|group|registration|linked-hub|derive-key` (dps_commands.cpp), under
// the `dps` command.
void add_dps_commands(CLI::App& dps, const std::shared_ptr<invocation>& inv, const runner& run);

void print_pretty(std::ostream& out, const json::value& v, int indent);
// JSON for people, to stdout.
void print(const json::value& v);

}  // namespace iothub::cli::detail
