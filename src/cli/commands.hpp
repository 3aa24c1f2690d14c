// The client subcommands of `iothub`, in the spirit of `az iot hub`: device, module, sas,
// connection-string and stats. Each prints JSON (or a bare string) on success and a one-line
// error on stderr with a non-zero exit status on failure.
#pragma once

#include <CLI/CLI.hpp>

namespace iothub::cli {

// Registers the subcommands on `app`; `exit_code` receives each command's result.
void add_commands(CLI::App& app, int& exit_code);

// Indented JSON for people.
std::string pretty_json(const std::string& compact);

}  // namespace iothub::cli
