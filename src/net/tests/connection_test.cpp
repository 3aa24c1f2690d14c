#include "net/connection.hpp"

#include "net_test_support.hpp"
#include "runtime/shards.hpp"

#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>
#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace iothub::net {
namespace {
using namespace std::chrono_literals;
using testing::handshaker;
using testing::loopback_pair;
using testing::pattern;
using testing::reader;
using testing::run_for;
using testing::run_until;
using testing::shrink_buffers;
using testing::writer;

// The connection's stop grace period (connection.cpp).
constexpr auto stop_grace = 2s;
// Room for a slow machine on top of a tick of the wheel.
constexpr auto late_bound = 1s;

// What the connection did to its handler, kept by the test (the connection owns the handler).
struct handler_log {
    std::vector<std::string> calls;  // "start", "stream_ended", "stop", "closed", in order
    std::string received;
    std::string end_reason, stop_reason;
    std::vector<steady::time_point> deadline_calls;
    steady::time_point deadline = steady::time_point::max();  // what deadline() answers
    bool finish_on_stop = true;       // stop() says "bye" and finishes; false: ignores the stop
    bool paused = false;              // wants_read() answers !paused
    bool running_on_executor = true;  // every call came on the connection's executor
};

// Echoes what it receives; the test steers it through its log.
class echo_handler final : public protocol_handler {
  public:
    echo_handler(connection_io& io, std::shared_ptr<handler_log> log)
        : io_(io), log_(std::move(log)) {}

    void start() override { note("start"); }
    void received(std::string_view bytes) override {
        note(nullptr);
        log_->received += bytes;
        pending_ += bytes;
    }
    void stream_ended(const std::string& reason) override {
        note("stream_ended");
        log_->end_reason = reason;
        finished_ = true;
    }
    void stop(const std::string& reason) override {
        note("stop");
        log_->stop_reason = reason;
        if (!log_->finish_on_stop) return;
        pending_ += "bye";
        finished_ = true;
    }
    void take_output(std::string& out) override {
        out += pending_;
        pending_.clear();
    }
    bool wants_read() const override { return !finished_ && !log_->paused; }
    bool finished() const override { return finished_; }
    steady::time_point deadline() const override { return log_->deadline; }
    void on_deadline() override {
        note(nullptr);
        const auto now = steady::now();
        log_->deadline_calls.push_back(now);
        // It may be called early (the protocol checks its own times); once due, it is done.
        if (now >= log_->deadline) log_->deadline = steady::time_point::max();
    }
    void closed() override { note("closed"); }

    // For post(): output produced out of band.
    void push(std::string bytes) { pending_ += bytes; }

  private:
    void note(const char* call) {
        auto* ex = io_.executor().target<asio::io_context::executor_type>();
        if (!ex || !ex->running_in_this_thread()) log_->running_on_executor = false;
        if (call) log_->calls.emplace_back(call);
    }

    connection_io& io_;
    std::shared_ptr<handler_log> log_;
    std::string pending_;
    bool finished_ = false;
};

using calls = std::vector<std::string>;

// One connection on the server side of a loopback pair, and the client side as a plain stream.
class NetConnection : public ::testing::Test {
  protected:
    void open_tcp(bool small_buffers = false) {
        auto p = loopback_pair(io_);
        if (small_buffers) {
            shrink_buffers(p.server);
            shrink_buffers(p.client);
        }
        client_ = make_tcp_stream(std::move(p.client), "client");
        make_connection(make_tcp_stream(std::move(p.server), "echo"));
        start();
    }

    // start() must be called on the connection's executor.
    void start() {
        asio::post(io_, [c = conn_] { c->start(); });
    }

    void make_connection(std::unique_ptr<stream> s, std::chrono::seconds handshake_timeout = 10s) {
        conn_ = std::make_shared<connection>(
            std::move(s), io_.get_executor(),
            [this](connection* c) {
                EXPECT_EQ(c, conn_.get());
                ++on_closed_calls_;
                closed_at_ = steady::now();
            },
            handshake_timeout);
        conn_->set_handler(std::make_unique<echo_handler>(*conn_, log_));
    }

    bool closed() const { return on_closed_calls_ > 0; }

    // Sends `bytes` from the client and waits for them to come back.
    void expect_echo(const std::string& bytes) {
        writer w(*client_, bytes);
        reader r(*client_, bytes.size());
        w.start();
        r.start();
        ASSERT_TRUE(run_until(io_, [&] { return w.finished() && r.finished(); }))
            << "sent " << w.sent() << " of " << bytes.size() << ", got back " << r.received.size();
        ASSERT_FALSE(w.failed()) << w.failure();
        ASSERT_FALSE(r.ending()) << r.ending()->error;
        EXPECT_TRUE(r.received == bytes) << "the echo differs (" << r.received.size() << " bytes)";
    }

    // The connection let go of itself once the test drops its reference: nothing leaks.
    void expect_released() {
        std::weak_ptr<connection> weak = conn_;
        conn_.reset();
        EXPECT_TRUE(run_until(
            io_, [&] { return weak.expired(); }, 5s))
            << "something still holds the closed connection";
    }

    boost::asio::io_context io_;
    std::shared_ptr<handler_log> log_ = std::make_shared<handler_log>();
    std::unique_ptr<stream> client_;
    std::shared_ptr<connection> conn_;
    int on_closed_calls_ = 0;
    steady::time_point closed_at_{};
};

TEST_F(NetConnection, EchoesWhatItReceives) {
    open_tcp();
    expect_echo("hello");
    expect_echo("and again");
    EXPECT_EQ(log_->received, "helloand again");
    EXPECT_EQ(log_->calls, calls{"start"});
    EXPECT_FALSE(closed());
    EXPECT_TRUE(log_->running_on_executor);
}

TEST_F(NetConnection, EchoesALargeTransferThroughBackPressure) {
    // More than the socket buffers and the shard's read buffer hold: the connection must wait to
    // write and resume reading in turn.
    open_tcp(true);
    expect_echo(pattern(2 * 1024 * 1024, 7));
    EXPECT_EQ(log_->calls, calls{"start"});
}

TEST_F(NetConnection, PeerCloseEndsTheStreamAndClosesTheConnection) {
    open_tcp();
    expect_echo("x");
    client_->close();
    ASSERT_TRUE(run_until(io_, [&] { return closed(); }));
    EXPECT_EQ(on_closed_calls_, 1);
    EXPECT_EQ(log_->calls, (calls{"start", "stream_ended", "closed"}));
    EXPECT_NE(log_->end_reason.find("closed by the client"), std::string::npos) << log_->end_reason;
    expect_released();
}

TEST_F(NetConnection, TheWheelCallsOnDeadlineNotBeforeTheDeadline) {
    const auto due = steady::now() + 150ms;
    log_->deadline = due;
    open_tcp();
    ASSERT_TRUE(run_until(io_, [&] { return !log_->deadline_calls.empty(); }));
    EXPECT_GE(log_->deadline_calls.front(), due);
    EXPECT_LT(log_->deadline_calls.front() - due, late_bound);
    EXPECT_EQ(log_->deadline, steady::time_point::max());
    run_for(io_, 200ms);
    EXPECT_EQ(log_->deadline_calls.size(), 1u) << "no deadline left, no more calls";
    EXPECT_EQ(timer_wheel::of(io_).size(), 0u) << "the connection's entry left the wheel";
    EXPECT_FALSE(closed());
}

TEST_F(NetConnection, ADeadlineSetLaterIsArmedWhenTheHandlerIsWoken) {
    open_tcp();
    expect_echo("ready");
    steady::time_point due{};
    // A deadline the handler took on out of band; post() wakes the connection afterwards.
    conn_->post([&](protocol_handler&) {
        due = steady::now() + 100ms;
        log_->deadline = due;
    });
    ASSERT_TRUE(run_until(io_, [&] { return !log_->deadline_calls.empty(); }));
    EXPECT_GE(log_->deadline_calls.back(), due);
    EXPECT_LT(log_->deadline_calls.back() - due, late_bound);
}

TEST_F(NetConnection, ADeadlineMovedLaterStillComesAtTheLaterTime) {
    // The connection moves its wheel entry only earlier; on_deadline may come early, but the
    // handler must get a call at or after its real, later deadline.
    log_->deadline = steady::now() + 100ms;
    open_tcp();
    const auto later = steady::now() + 400ms;
    conn_->post([&](protocol_handler&) { log_->deadline = later; });
    ASSERT_TRUE(run_until(io_, [&] {
        return !log_->deadline_calls.empty() && log_->deadline_calls.back() >= later;
    }));
    EXPECT_LT(log_->deadline_calls.back() - later, late_bound);
    EXPECT_EQ(log_->deadline, steady::time_point::max());
}

TEST_F(NetConnection, KickStopsTheHandlerAndClosesWithinTheGracePeriod) {
    open_tcp();
    expect_echo("hi");
    reader rest(*client_);
    rest.start();
    const auto kicked = steady::now();
    conn_->kick("the hub is shutting down");
    ASSERT_TRUE(run_until(io_, [&] { return closed() && rest.finished(); }));
    EXPECT_LT(closed_at_ - kicked, stop_grace);
    EXPECT_EQ(log_->calls, (calls{"start", "stop", "closed"}));
    EXPECT_EQ(log_->stop_reason, "the hub is shutting down");
    // The goodbye was flushed before the stream closed.
    EXPECT_EQ(rest.received, "bye");
    ASSERT_TRUE(rest.ending());
    EXPECT_EQ(rest.ending()->what, io_result::status::closed);
    expect_released();
}

TEST_F(NetConnection, AHandlerThatIgnoresTheStopIsCutAfterTheGracePeriod) {
    log_->finish_on_stop = false;
    open_tcp();
    expect_echo("hi");
    const auto kicked = steady::now();
    conn_->kick("stop");
    ASSERT_TRUE(run_until(io_, [&] { return closed(); }));
    EXPECT_GE(closed_at_ - kicked, stop_grace) << "cut before the grace period ended";
    EXPECT_LT(closed_at_ - kicked, stop_grace + late_bound);
    EXPECT_EQ(log_->calls, (calls{"start", "stop", "closed"}));
    // The client sees the stream end.
    reader rest(*client_);
    rest.start();
    ASSERT_TRUE(run_until(io_, [&] { return rest.finished(); }));
    EXPECT_TRUE(rest.ending());
    expect_released();
}

TEST_F(NetConnection, PostRunsOnTheHandlerOnTheConnectionsThread) {
    open_tcp();
    expect_echo("hello");
    std::thread::id ran_on;
    bool ran = false;
    // post() may be called from any thread; it runs where the connection lives (here: this one).
    std::thread other([&] {
        conn_->post([&](protocol_handler& h) {
            ran_on = std::this_thread::get_id();
            ran = true;
            dynamic_cast<echo_handler&>(h).push("pushed");
        });
    });
    other.join();
    reader r(*client_, 6);
    r.start();
    ASSERT_TRUE(run_until(io_, [&] { return ran && r.finished(); }));
    EXPECT_EQ(ran_on, std::this_thread::get_id());
    EXPECT_EQ(r.received, "pushed") << "post() wakes the connection to write the output";
}

TEST_F(NetConnection, PostAfterCloseDoesNotRun) {
    open_tcp();
    client_->close();
    ASSERT_TRUE(run_until(io_, [&] { return closed(); }));
    bool ran = false, after = false;
    conn_->post([&](protocol_handler&) { ran = true; });
    // Handlers run in order on one thread: once this ran, the post above had its turn.
    asio::post(io_, [&] { after = true; });
    ASSERT_TRUE(run_until(io_, [&] { return after; }));
    EXPECT_FALSE(ran);
}

TEST_F(NetConnection, APausedHandlerIsNotGivenBytesUntilItWantsThem) {
    log_->paused = true;
    open_tcp();
    writer w(*client_, "held");
    w.start();
    ASSERT_TRUE(run_until(io_, [&] { return w.finished(); }));
    run_for(io_, 150ms);  // time enough to have delivered them, were it reading
    EXPECT_EQ(log_->received, "");
    reader r(*client_, 4);
    r.start();
    conn_->post([&](protocol_handler&) { log_->paused = false; });
    ASSERT_TRUE(run_until(io_, [&] { return r.finished(); }));
    EXPECT_EQ(log_->received, "held");
    EXPECT_EQ(r.received, "held");
}

// --- over TLS -------------------------------------------------------------------------------

class NetTlsConnection : public NetConnection {
  protected:
    static void SetUpTestSuite() { pki_ = std::make_unique<testing::temp_pki>(); }
    static void TearDownTestSuite() { pki_.reset(); }

    // A TLS server connection on one side; the client side a TCP socket the test wraps as it
    // likes (`raw_client_`).
    void open_tls(std::chrono::seconds handshake_timeout = 10s) {
        auto p = loopback_pair(io_);
        raw_client_.emplace(std::move(p.client));
        make_connection(
            make_tls_stream(std::move(p.server), *server_ctx_, tls_role::server, "echos"),
            handshake_timeout);
        start();
    }

    static inline std::unique_ptr<testing::temp_pki> pki_;
    std::shared_ptr<asio::ssl::context> server_ctx_ = pki_->server_context();
    std::shared_ptr<asio::ssl::context> client_ctx_ = pki_->client_context();
    std::optional<tcp::socket> raw_client_;
};

TEST_F(NetTlsConnection, EchoesBytesSentWithTheEndOfTheHandshake) {
    // The client writes the moment its handshake is done, so the first record may reach the
    // hub together with the client's Finished and sit decrypted-ahead inside TLS, where the
    // socket's readiness will not announce it.
    open_tls();
    client_ = make_tls_stream(std::move(*raw_client_), *client_ctx_, tls_role::client, "client",
                              "localhost");
    handshaker hs(*client_);
    std::optional<writer> w;
    hs.then = [&](const io_result& r) {
        if (r.what != io_result::status::done) return;
        w.emplace(*client_, "first words");
        w->start();
    };
    hs.start();
    reader r(*client_, 11);
    ASSERT_TRUE(run_until(io_, [&] { return hs.finished(); }));
    ASSERT_EQ(hs.result().what, io_result::status::done) << hs.result().error;
    r.start();
    ASSERT_TRUE(run_until(io_, [&] { return r.finished(); }));
    EXPECT_EQ(r.received, "first words");
    EXPECT_EQ(log_->calls, calls{"start"});
    expect_echo("more");
}

TEST_F(NetTlsConnection, AClientThatNeverHandshakesIsClosedAfterTheHandshakeTimeout) {
    const auto opened = steady::now();
    open_tls(1s);
    ASSERT_TRUE(run_until(io_, [&] { return closed(); }));
    EXPECT_GE(closed_at_ - opened, 1s);
    EXPECT_LT(closed_at_ - opened, 1s + late_bound);
    EXPECT_EQ(log_->calls, calls{"closed"}) << "the handler never started";
    expect_released();
}

TEST_F(NetTlsConnection, AKickDuringTheHandshakeClosesAtOnce) {
    open_tls();
    run_for(io_, 20ms);
    conn_->kick("stop");
    ASSERT_TRUE(run_until(io_, [&] { return closed(); }));
    EXPECT_EQ(log_->calls, calls{"closed"}) << "no start, and no stop for a protocol never begun";
    expect_released();
}

TEST_F(NetTlsConnection, AFailedHandshakeClosesWithoutStartingTheHandler) {
    open_tls();
    // Plain text where a ClientHello should be.
    const std::string junk = "GET / HTTP/1.1\r\n\r\n";
    boost::asio::write(*raw_client_, boost::asio::buffer(junk));
    ASSERT_TRUE(run_until(io_, [&] { return closed(); }));
    EXPECT_EQ(log_->calls, calls{"closed"});
    expect_released();
}

// --- the server shell -----------------------------------------------------------------------

// Handlers made on the shards' threads; the test reads their logs only after the shards stop.
struct server_logs {
    std::mutex mutex;
    std::vector<std::shared_ptr<handler_log>> logs;
    handler_factory factory() {
        return [this](connection_io& io) {
            auto log = std::make_shared<handler_log>();
            {
                std::lock_guard lock(mutex);
                logs.push_back(log);
            }
            return std::make_unique<echo_handler>(io, log);
        };
    }
};

// A client of a device_server, on the test's own io_context.
struct server_client {
    std::unique_ptr<stream> s;
    server_client(boost::asio::io_context& io, std::uint16_t port) {
        tcp::socket socket(io);
        socket.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
        s = make_tcp_stream(std::move(socket), "client");
    }
};

bool wait_for(const std::function<bool()>& done, steady::duration limit = 20s) {
    const auto deadline = steady::now() + limit;
    while (!done()) {
        if (steady::now() >= deadline) return false;
        std::this_thread::sleep_for(5ms);
    }
    return true;
}

TEST(NetDeviceServer, ServesEchoConnectionsAndStopsThemPolitely) {
    runtime::shard_set shards(1);
    shards.start();
    server_logs logs;
    device_server server(shards, "echo", 10s, logs.factory());
    auto port = server.listen("127.0.0.1", 0, nullptr);
    ASSERT_TRUE(port) << port.error().message();

    boost::asio::io_context io;
    server_client a(io, *port), b(io, *port);
    for (auto* c : {&a, &b}) {
        writer w(*c->s, "hello");
        reader r(*c->s, 5);
        w.start();
        r.start();
        ASSERT_TRUE(run_until(io, [&] { return w.finished() && r.finished(); }));
        EXPECT_EQ(r.received, "hello");
    }
    EXPECT_EQ(server.active_connections(), 2u);

    server.post_to_each([](protocol_handler& h) { dynamic_cast<echo_handler&>(h).push("all"); });
    for (auto* c : {&a, &b}) {
        reader r(*c->s, 3);
        r.start();
        ASSERT_TRUE(run_until(io, [&] { return r.finished(); }));
        EXPECT_EQ(r.received, "all");
    }

    server.begin_stop();
    for (auto* c : {&a, &b}) {
        reader r(*c->s);
        r.start();
        ASSERT_TRUE(run_until(io, [&] { return r.finished(); }));
        EXPECT_EQ(r.received, "bye");
        ASSERT_TRUE(r.ending());
        EXPECT_EQ(r.ending()->what, io_result::status::closed);
    }
    EXPECT_TRUE(wait_for([&] { return server.active_connections() == 0; }));

    // Stopped: no new connections are served.
    tcp::socket late(io);
    error_code ec;
    late.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), *port), ec);
    EXPECT_TRUE(ec) << "still accepting after begin_stop";

    shards.stop();  // joins: the logs are the test's now
    ASSERT_EQ(logs.logs.size(), 2u);
    for (auto& log : logs.logs) {
        EXPECT_EQ(log->calls, (calls{"start", "stop", "closed"}));
        EXPECT_TRUE(log->running_on_executor);
    }
}

// Sockets are accepted on shard 0 and belong to the shard they are handed to; each stream, its
// connection and handler must be made and started there, or the handshake step, the handler's
// start and the wheel entry race with that shard's thread.
TEST(NetDeviceServer, ConnectionsAreStartedOnTheirOwnShard) {
    // With several shards, accepted sockets are spread round-robin; each connection and its
    // handler must live on the shard its socket belongs to ("the handler is called only there").
    runtime::shard_set shards(4);
    shards.start();
    server_logs logs;
    device_server server(shards, "echo", 10s, logs.factory());
    auto port = server.listen("127.0.0.1", 0, nullptr);
    ASSERT_TRUE(port) << port.error().message();

    boost::asio::io_context io;
    std::vector<std::unique_ptr<server_client>> clients;
    for (int i = 0; i < 8; ++i) clients.push_back(std::make_unique<server_client>(io, *port));
    for (auto& c : clients) {
        writer w(*c->s, "hi");
        reader r(*c->s, 2);
        w.start();
        r.start();
        ASSERT_TRUE(run_until(io, [&] { return w.finished() && r.finished(); }));
    }
    for (auto& c : clients) c->s->close();
    EXPECT_TRUE(wait_for([&] { return server.active_connections() == 0; }));
    shards.stop();
    ASSERT_EQ(logs.logs.size(), clients.size());
    int elsewhere = 0;
    for (auto& log : logs.logs)
        if (!log->running_on_executor) ++elsewhere;
    EXPECT_EQ(elsewhere, 0) << "handlers called from a thread other than their shard's";
}

}  // namespace
}  // namespace iothub::net
