// A real nats-server with JetStream for the tests of what speaks NATS (storage, endpoints): started
// on a free loopback port with its store in a temporary directory, stopped (and its files removed)
// at the end. It can be stopped and started again on the same port, to test outages.
#pragma once

#include "common/crypto.hpp"
#include "common/encoding.hpp"

#include <gtest/gtest.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <string>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

namespace iothub::nats::testing {

class nats_server {
  public:
    nats_server() {
        dir_ =
            std::filesystem::temp_directory_path() / ("iothub-nats-" + hex_encode(random_bytes(6)));
        std::filesystem::create_directories(dir_ / "ports");
        start();
    }
    ~nats_server() {
        stop();
        std::error_code ec;
        std::filesystem::remove_all(dir_, ec);
    }
    nats_server(const nats_server&) = delete;
    nats_server& operator=(const nats_server&) = delete;

    // Empty when the server did not start.
    const std::string& url() const { return url_; }

    void stop() {
        if (pid_ <= 0) return;
        kill(pid_, SIGTERM);
        int status = 0;
        waitpid(pid_, &status, 0);
        pid_ = -1;
    }

    // Starts it again on the port it had (a free one the first time); true once it listens.
    bool start() {
        if (pid_ > 0) return true;
        std::vector<std::string> args = {"nats-server",
                                         "-js",
                                         "-a",
                                         "127.0.0.1",
                                         "-p",
                                         port_.empty() ? "-1" : port_,
                                         "-sd",
                                         (dir_ / "js").string(),
                                         "--ports_file_dir",
                                         (dir_ / "ports").string(),
                                         "-l",
                                         (dir_ / "log").string()};
        std::vector<char*> argv;
        for (auto& a : args) argv.push_back(a.data());
        argv.push_back(nullptr);
        // Forked rather than spawned, so the server dies with the test even if the test crashes.
        pid_ = fork();
        if (pid_ == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            execvp("nats-server", argv.data());
            _exit(127);
        }
        if (pid_ < 0) return false;
        // The server writes its ports file once it listens.
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
        const auto ports = dir_ / "ports" / ("nats-server_" + std::to_string(pid_) + ".ports");
        while (std::chrono::steady_clock::now() < deadline) {
            std::ifstream in(ports);
            std::string text((std::istreambuf_iterator<char>(in)), {});
            auto at = text.find("nats://");
            if (at != std::string::npos) {
                auto end = text.find('"', at);
                url_ = text.substr(at, end - at);
                port_ = url_.substr(url_.rfind(':') + 1);
                return true;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        return false;
    }

  private:
    std::filesystem::path dir_;
    pid_t pid_ = -1;
    std::string url_;
    std::string port_;
};

}  // namespace iothub::nats::testing
