#include "instance/instance.hpp"

#include "common/crypto.hpp"
#include "common/encoding.hpp"

#include <boost/json.hpp>

#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <sstream>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

namespace iothub::instance {
namespace json = boost::json;
namespace {

error io_error(const std::string& what) {
    return error(errc::server_error, what);
}

result<json::value> read_json(const std::filesystem::path& path) {
    std::ifstream in(path);
    if (!in) return error(errc::not_found, "Cannot read " + path.string() + ".");
    std::stringstream ss;
    ss << in.rdbuf();
    boost::system::error_code ec;
    auto v = json::parse(ss.str(), ec);
    if (ec) return io_error(path.string() + " is not valid JSON: " + ec.message());
    return v;
}

std::string to_text(const hub_identity& id) {
    json::array policies;
    for (const auto& p : id.policies) {
        policies.push_back(json::object{{"keyName", p.name},
                                        {"primaryKey", p.primary_key},
                                        {"secondaryKey", p.secondary_key},
                                        {"rights", p.granted.to_string()}});
    }
    json::object o{{"hostname", id.hostname}, {"policies", policies}};
    if (!id.id_scope.empty()) o["idScope"] = id.id_scope;
    return json::serialize(o) + "\n";
}

result<hub_identity> from_json(const json::value& v, const std::filesystem::path& file) {
    auto bad = [&](std::string what) { return io_error(file.string() + ": " + what); };
    if (!v.is_object()) return bad("expected an object");
    const auto& o = v.get_object();
    hub_identity id;
    if (auto it = o.find("hostname"); it != o.end() && it->value().is_string())
        id.hostname = std::string(it->value().get_string());
    if (id.hostname.empty()) return bad("hostname is missing");
    if (auto scope = o.find("idScope"); scope != o.end() && scope->value().is_string())
        id.id_scope = std::string(scope->value().get_string());
    auto it = o.find("policies");
    if (it == o.end() || !it->value().is_array()) return bad("policies are missing");
    for (const auto& pv : it->value().get_array()) {
        if (!pv.is_object()) return bad("a policy is not an object");
        const auto& p = pv.get_object();
        auto str = [&](std::string_view k) -> std::string {
            auto f = p.find(k);
            return f != p.end() && f->value().is_string() ? std::string(f->value().get_string())
                                                          : std::string();
        };
        auto rights = auth::rights::parse(str("rights"));
        if (!rights) return bad(rights.error().message());
        auth::access_policy policy{str("keyName"), str("primaryKey"), str("secondaryKey"), *rights};
        if (policy.name.empty() || policy.primary_key.empty() || policy.secondary_key.empty())
            return bad("a policy lacks keyName, primaryKey or secondaryKey");
        id.policies.push_back(std::move(policy));
    }
    return id;
}

}  // namespace

std::string new_id_scope() {
    return "0ne" + hex_encode(random_bytes(4), true);
}

layout layout_for(const std::filesystem::path& data_dir) {
    return {data_dir, data_dir / "hub.json", data_dir / "runtime.json", data_dir / "tls",
            data_dir / "db"};
}

result<void> write_file_atomically(const std::filesystem::path& path, const std::string& text,
                                   bool owner_only) {
    auto tmp = path;
    tmp += ".tmp";
    int fd =
        ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, owner_only ? 0600 : 0644);
    if (fd < 0) return io_error("Cannot write " + tmp.string() + ": " + std::strerror(errno));
    std::size_t done = 0;
    while (done < text.size()) {
        auto n = ::write(fd, text.data() + done, text.size() - done);
        if (n < 0) {
            if (errno == EINTR) continue;
            ::close(fd);
            return io_error("Cannot write " + tmp.string() + ": " + std::strerror(errno));
        }
        done += static_cast<std::size_t>(n);
    }
    bool ok = ::fsync(fd) == 0;
    ::close(fd);
    if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0)
        return io_error("Cannot replace " + path.string() + ": " + std::strerror(errno));
    if (int dir = ::open(path.parent_path().empty() ? "." : path.parent_path().c_str(),
                         O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        dir >= 0) {
        ::fsync(dir);
        ::close(dir);
    }
    return {};
}

result<hub_identity> read_identity(const layout& where) {
    auto v = read_json(where.identity_file);
    if (!v) {
        if (v.error().code() == errc::not_found)
            return error(errc::not_found, "No hub in " + where.data_dir.string() +
                                              " (no hub.json); start one with `iothub serve "
                                              "--data-dir " +
                                              where.data_dir.string() + "`.");
        return v.error();
    }
    return from_json(*v, where.identity_file);
}

result<hub_identity> open_identity(const layout& where,
                                   const std::optional<std::string>& hostname) {
    std::error_code ec;
    std::filesystem::create_directories(where.data_dir, ec);
    if (ec) return io_error("Cannot create " + where.data_dir.string() + ": " + ec.message());
    if (std::filesystem::exists(where.identity_file, ec)) {
        auto id = read_identity(where);
        if (!id) return id;
        bool changed = false;
        if (hostname && *hostname != id->hostname) {
            id->hostname = *hostname;
            changed = true;
        }
        if (id->id_scope.empty()) {
            id->id_scope = new_id_scope();
            changed = true;
        }
        bool has_dps_policy = false;
        for (const auto& p : id->policies) has_dps_policy |= p.name == auth::dps_policy_name;
        if (!has_dps_policy) {
            id->policies.push_back(auth::dps_policy());
            changed = true;
        }
        if (changed)
            if (auto r = write_file_atomically(where.identity_file, to_text(*id), true); !r)
                return r.error();
        return id;
    }
    hub_identity id{hostname.value_or("localhost"), auth::default_policies(), new_id_scope()};
    id.policies.push_back(auth::dps_policy());
    if (auto r = write_file_atomically(where.identity_file, to_text(id), true); !r)
        return r.error();
    return id;
}

result<void> write_runtime(const layout& where, const runtime_info& info) {
    json::object o{{"hostname", info.hostname},
                   {"httpsPort", info.https_port},
                   {"mqttPort", info.mqtt_port},
                   {"amqpPort", info.amqp_port},
                   {"mqttPlainPort", info.mqtt_plain_port},
                   {"pid", info.pid}};
    return write_file_atomically(where.runtime_file, json::serialize(o) + "\n", false);
}

result<runtime_info> read_runtime(const layout& where) {
    auto v = read_json(where.runtime_file);
    if (!v) return v.error();
    runtime_info info;
    if (!v->is_object()) return io_error(where.runtime_file.string() + ": expected an object");
    const auto& o = v->get_object();
    auto num = [&](std::string_view k) -> std::int64_t {
        auto it = o.find(k);
        return it != o.end() && it->value().is_int64() ? it->value().get_int64() : 0;
    };
    if (auto it = o.find("hostname"); it != o.end() && it->value().is_string())
        info.hostname = std::string(it->value().get_string());
    info.https_port = static_cast<std::uint16_t>(num("httpsPort"));
    info.mqtt_port = static_cast<std::uint16_t>(num("mqttPort"));
    info.amqp_port = static_cast<std::uint16_t>(num("amqpPort"));
    info.mqtt_plain_port = static_cast<std::uint16_t>(num("mqttPlainPort"));
    info.pid = static_cast<long>(num("pid"));
    return info;
}

void remove_runtime(const layout& where) {
    std::error_code ec;
    std::filesystem::remove(where.runtime_file, ec);
}

directory_lock& directory_lock::operator=(directory_lock&& o) noexcept {
    if (this != &o) {
        if (fd_ >= 0) ::close(fd_);
        fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
}

directory_lock::~directory_lock() {
    if (fd_ >= 0) ::close(fd_);
}

result<directory_lock> lock_directory(const layout& where) {
    const auto path = where.data_dir / "node.lock";
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) return error(errc::server_error, "Cannot open " + path.string() + ".");
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
        ::close(fd);
        return error(errc::already_exists,
                     "Another iothub is already using " + where.data_dir.string() + ".");
    }
    directory_lock lock;
    lock.fd_ = fd;
    return lock;
}

}  // namespace iothub::instance
