// `iothub`: one binary for the hub (`serve`, `init`) and its command-line client.
#include "app/hub.hpp"
#include "bench/c2d_bench.hpp"
#include "bench/eh_bench.hpp"
#include "bench/load_generator.hpp"
#include "bench/twin_bench.hpp"
#include "cli/commands.hpp"
#include "config/settings.hpp"

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <iostream>

namespace {

struct server_options {
    iothub::config::overrides flags;
    std::string config_file;
};

// Registers every setting as a flag of `cmd`, recording the ones given.
void add_setting_flags(CLI::App* cmd, server_options& opts) {
    cmd->add_option("--config", opts.config_file, "TOML configuration file");
    for (const auto& s : iothub::config::all_settings()) {
        if (s.boolean) {
            cmd->add_flag_function(
                s.flag,
                [&opts, key = s.key](std::int64_t n) {
                    opts.flags[key] = n > 0 ? "true" : "false";
                },
                s.help + " [" + s.env + "]");
        } else {
            cmd->add_option_function<std::string>(
                s.flag, [&opts, key = s.key](const std::string& v) { opts.flags[key] = v; },
                s.help + " [" + s.env + "]");
        }
    }
}

// Loads the settings and sets up logging; on a configuration error reports it and sets exit 2.
std::optional<iothub::config::settings> settings_of(const server_options& opts, int& exit_code) {
    std::optional<std::filesystem::path> file;
    if (!opts.config_file.empty()) file = opts.config_file;
    auto s = iothub::config::load(file, opts.flags, iothub::config::process_environment());
    if (!s) {
        std::cerr << "error: " << s.error().message() << "\n";
        exit_code = 2;
        return std::nullopt;
    }
    iothub::app::configure_logging(s->log_level);
    return std::move(*s);
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"iothub: a self-hosted device hub that speaks Azure IoT Hub's protocols"};
    app.require_subcommand(1);
    app.fallthrough();
    int exit_code = 0;

    server_options serve_opts;
    auto* serve = app.add_subcommand("serve", "Run the hub");
    add_setting_flags(serve, serve_opts);
    serve->final_callback([&] {
        auto settings = settings_of(serve_opts, exit_code);
        if (!settings) return;
        iothub::app::block_stop_signals();  // before the hub starts any thread
        auto hub = iothub::app::hub::start(*settings);
        if (!hub) {
            spdlog::critical("cannot start: {}", hub.error().message());
            exit_code = 1;
            return;
        }
        (*hub)->wait_for_signal();
        (*hub)->stop();
        exit_code = 0;
    });

    server_options init_opts;
    auto* init = app.add_subcommand(
        "init", "Create a data directory (policies, development CA) without starting the hub");
    add_setting_flags(init, init_opts);
    init->final_callback([&] {
        auto settings = settings_of(init_opts, exit_code);
        if (!settings) return;
        auto r = iothub::app::initialise(*settings);
        if (!r) {
            std::cerr << "error: " << r.error().message() << "\n";
            exit_code = 1;
        }
    });

    iothub::cli::add_commands(app, exit_code);
    iothub::bench::add_command(app, exit_code);
    iothub::bench::add_twin_command(app, exit_code);
    iothub::bench::add_c2d_command(app, exit_code);
    iothub::bench::add_eh_command(app, exit_code);
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e);
    }
    return exit_code;
}
