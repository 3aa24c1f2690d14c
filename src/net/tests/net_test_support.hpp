// Shared scaffolding for the src/net tests: running an io_context until something happened (with
// a deadline, never a fixed sleep), loopback socket pairs, a development PKI in a temporary
// directory, and small drivers that push a stream through its handshake, a write or a read the
// way a real caller does (step, and on a wait, async_wait and step again).
#pragma once

#include "common/crypto.hpp"
#include "common/encoding.hpp"
#include "net/stream.hpp"
#include "tls/context.hpp"
#include "tls/dev_ca.hpp"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ssl/context.hpp>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>

namespace iothub::net::testing {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

// Generous: only a hang or a lost event should take this long, even on a slow CI machine.
inline constexpr auto default_limit = std::chrono::seconds(20);

// Runs `io` until `done()` holds or `limit` passes; true if `done()` held.
inline bool run_until(asio::io_context& io, const std::function<bool()>& done,
                      steady::duration limit = default_limit) {
    const auto deadline = steady::now() + limit;
    // Keeps run_one_for waiting for events instead of returning at once while nothing is queued.
    auto guard = asio::make_work_guard(io);
    if (io.stopped()) io.restart();
    while (!done()) {
        if (steady::now() >= deadline) return false;
        io.run_one_for(10ms);
    }
    return true;
}

// Runs `io` for `d`, whatever happens (to show that something does NOT happen meanwhile).
inline void run_for(asio::io_context& io, steady::duration d) {
    auto guard = asio::make_work_guard(io);
    if (io.stopped()) io.restart();
    io.run_for(d);
}

struct socket_pair {
    tcp::socket server;
    tcp::socket client;
};

// A connected pair of TCP sockets over 127.0.0.1 (the server side accepted on an ephemeral port).
inline socket_pair loopback_pair(asio::io_context& io) {
    tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    tcp::socket client(io);
    // A blocking connect to a listening loopback socket completes from the backlog.
    client.connect(acceptor.local_endpoint());
    tcp::socket server = acceptor.accept();
    return {std::move(server), std::move(client)};
}

// Small kernel buffers, so that a few MiB cannot fit and writers must wait for readers.
inline void shrink_buffers(tcp::socket& s, int bytes = 32 * 1024) {
    s.set_option(asio::socket_base::send_buffer_size(bytes));
    s.set_option(asio::socket_base::receive_buffer_size(bytes));
}

// Bytes that differ from position to position, so a lost, doubled or reordered chunk shows.
inline std::string pattern(std::size_t n, std::uint32_t seed) {
    std::string out(n, '\0');
    std::uint32_t x = seed * 2654435761u + 1;
    for (auto& c : out) {
        x = x * 1664525u + 1013904223u;
        c = static_cast<char>(x >> 24);
    }
    return out;
}

// A development CA and a server certificate for localhost/127.0.0.1 in a fresh temporary
// directory, removed again by the destructor.
class temp_pki {
  public:
    temp_pki()
        : dir_(std::filesystem::temp_directory_path() /
               ("iothub-net-test-" + hex_encode(random_bytes(6)))) {
        auto f = tls::ensure_dev_certificates(dir_, {});
        if (!f) throw std::runtime_error("dev certificates: " + f.error().message());
        files_ = *f;
    }
    ~temp_pki() {
        std::error_code ec;
        std::filesystem::remove_all(dir_, ec);
    }
    temp_pki(const temp_pki&) = delete;
    temp_pki& operator=(const temp_pki&) = delete;

    const tls::dev_ca_files& files() const { return files_; }

    std::shared_ptr<asio::ssl::context> server_context() const {
        auto ctx = tls::make_server_context(files_.server_cert, files_.server_key);
        if (!ctx) throw std::runtime_error("server context: " + ctx.error().message());
        return *ctx;
    }
    // A client that trusts this CA only.
    std::shared_ptr<asio::ssl::context> client_context() const {
        auto ctx = tls::make_client_context(files_.ca_cert);
        if (!ctx) throw std::runtime_error("client context: " + ctx.error().message());
        return *ctx;
    }

  private:
    std::filesystem::path dir_;
    tls::dev_ca_files files_;
};

// Counts what a driver waited for.
struct wait_counts {
    int read = 0;
    int write = 0;
    void count(const io_result& r) {
        if (r.what == io_result::status::want_read) ++read;
        if (r.what == io_result::status::want_write) ++write;
    }
};

// Repeats `s.handshake()`, waiting whenever it asks, until it is done or fails.
class handshaker {
  public:
    explicit handshaker(stream& s) : s_(s) {}
    void start() { step(); }
    bool finished() const { return result_.has_value(); }
    const io_result& result() const { return *result_; }
    // Called once the handshake finished (either way), from the driving io_context.
    std::function<void(const io_result&)> then;

  private:
    void step() {
        auto r = s_.handshake();
        if (r.waiting()) {
            s_.async_wait(r.wait_for(), [this](error_code ec) {
                if (ec) return end(io_result::failure("wait: " + ec.message()));
                step();
            });
            return;
        }
        end(std::move(r));
    }
    void end(io_result r) {
        result_ = std::move(r);
        if (then) then(*result_);
    }

    stream& s_;
    std::optional<io_result> result_;
};

// Writes all of `data` to a stream, waiting whenever it asks. The same remaining span is offered
// again after a wait (TLS wants a retried write to carry at least the bytes it refused).
class writer {
  public:
    writer(stream& s, std::string data) : s_(s), data_(std::move(data)) {}
    void start() { step(); }
    bool finished() const { return sent_ == data_.size() || failed_; }
    bool failed() const { return failed_.has_value(); }
    std::string failure() const { return failed_ ? failed_->error : std::string(); }
    std::size_t sent() const { return sent_; }
    wait_counts waits;

  private:
    void step() {
        while (sent_ < data_.size()) {
            auto r = s_.write_some(std::span<const char>(data_).subspan(sent_));
            if (r.what == io_result::status::done) {
                sent_ += r.bytes;
                continue;
            }
            if (r.waiting()) {
                waits.count(r);
                s_.async_wait(r.wait_for(), [this](error_code ec) {
                    if (ec) {
                        failed_ = io_result::failure("wait: " + ec.message());
                        return;
                    }
                    step();
                });
                return;
            }
            failed_ = std::move(r);
            return;
        }
    }

    stream& s_;
    std::string data_;
    std::size_t sent_ = 0;
    std::optional<io_result> failed_;
};

// Reads from a stream into `received` until `expected` bytes came, the stream closed, or a read
// failed; each read takes at most `chunk` bytes.
class reader {
  public:
    explicit reader(stream& s, std::size_t expected = SIZE_MAX, std::size_t chunk = 64 * 1024)
        : s_(s), expected_(expected), buffer_(chunk, '\0') {}
    void start() { step(); }
    // Enough bytes, or an ending.
    bool finished() const { return received.size() >= expected_ || ending_.has_value(); }
    // How the stream ended, once it did (closed or failed).
    const std::optional<io_result>& ending() const { return ending_; }
    std::string received;
    wait_counts waits;

  private:
    void step() {
        while (received.size() < expected_) {
            auto r = s_.read_some(std::span<char>(buffer_));
            if (r.what == io_result::status::done) {
                received.append(buffer_.data(), r.bytes);
                continue;
            }
            if (r.waiting()) {
                waits.count(r);
                s_.async_wait(r.wait_for(), [this](error_code ec) {
                    if (ec) {
                        ending_ = io_result::failure("wait: " + ec.message());
                        return;
                    }
                    step();
                });
                return;
            }
            ending_ = std::move(r);
            return;
        }
    }

    stream& s_;
    std::size_t expected_;
    std::string buffer_;
    std::optional<io_result> ending_;
};

inline const char* status_name(io_result::status s) {
    switch (s) {
        case io_result::status::done:
            return "done";
        case io_result::status::want_read:
            return "want_read";
        case io_result::status::want_write:
            return "want_write";
        case io_result::status::closed:
            return "closed";
        case io_result::status::failed:
            return "failed";
    }
    return "?";
}

}  // namespace iothub::net::testing
