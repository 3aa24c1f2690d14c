// A hub instance's on-disk identity: where things live in the data directory, the host name it
// was last configured with, and its shared access policies. The command-line client reads the
// same files to find and authenticate to a local hub, also when the hub is not running.
//
// Layout of <data dir>:
//   hub.json      host name, policies with their keys, ID scope (0600)
//   runtime.json  ports and pid of the running hub (removed at clean shutdown)
//   tls/          development CA and server certificate
//   db/           the embedded database
#pragma once

#include "auth/policy.hpp"
#include "common/error.hpp"

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace iothub::instance {

struct layout {
    std::filesystem::path data_dir;
    std::filesystem::path identity_file;
    std::filesystem::path runtime_file;
    std::filesystem::path tls_dir;
    std::filesystem::path storage_dir;
};
layout layout_for(const std::filesystem::path& data_dir);

struct hub_identity {
    std::string hostname;
    std::vector<auth::access_policy> policies;
    // The provisioning service's ID scope, Azure's form: "0ne" and 8 upper-case hex digits.
    std::string id_scope;
};

// A fresh ID scope.
std::string new_id_scope();

// Creates the data directory and a fresh identity (Azure's five default policies and the
// provisioning service's, with new keys, and an ID scope) on first use; afterwards reads it back,
// adding what an identity of an earlier version lacks (the ID scope, the provisioning policy). A
// given `hostname` that differs from the recorded one replaces it, so the client tools keep
// printing the name the hub now answers to.
result<hub_identity> open_identity(const layout& where, const std::optional<std::string>& hostname);

// Reads an existing identity; never creates one.
result<hub_identity> read_identity(const layout& where);

struct runtime_info {
    std::string hostname;
    std::uint16_t https_port = 0;
    std::uint16_t mqtt_port = 0;
    std::uint16_t amqp_port = 0;
    std::uint16_t mqtt_plain_port = 0;  // 0 when the plain listener is off
    long pid = 0;
};
result<void> write_runtime(const layout& where, const runtime_info& info);

// One process per data directory (its runtime file and ports are that process's). The embedded
// engine's database enforces it; in cluster mode, where nothing else holds the directory, this
// lock does. Released when the object goes.
class directory_lock {
  public:
    directory_lock() = default;
    directory_lock(directory_lock&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
    directory_lock& operator=(directory_lock&& o) noexcept;
    ~directory_lock();

  private:
    friend result<directory_lock> lock_directory(const layout& where);
    int fd_ = -1;
};
// errc::already_exists when another process holds it.
result<directory_lock> lock_directory(const layout& where);
result<runtime_info> read_runtime(const layout& where);
void remove_runtime(const layout& where);

// Writes `text` to `path` through a temporary file, fsync and rename, so a crash leaves either the
// old or the new content.
result<void> write_file_atomically(const std::filesystem::path& path, const std::string& text,
                                   bool owner_only);

}  // namespace iothub::instance
