#include "net/stream.hpp"

#include "net_test_support.hpp"

#include <gtest/gtest.h>
#include <openssl/ssl.h>

#include <array>
#include <memory>
#include <optional>
#include <string>

namespace iothub::net {
namespace {
using namespace std::chrono_literals;
using testing::handshaker;
using testing::loopback_pair;
using testing::pattern;
using testing::reader;
using testing::run_until;
using testing::shrink_buffers;
using testing::status_name;
using testing::writer;

constexpr std::size_t large = 4 * 1024 * 1024;

// Readable on gtest failure without dumping megabytes.
::testing::AssertionResult same_bytes(const std::string& got, const std::string& want) {
    if (got == want) return ::testing::AssertionSuccess();
    std::size_t i = 0;
    while (i < got.size() && i < want.size() && got[i] == want[i]) ++i;
    return ::testing::AssertionFailure() << "got " << got.size() << " bytes, want " << want.size()
                                         << "; first difference at " << i;
}

// Sends `a_to_b` from `a` to `b` and `b_to_a` the other way, all at once, both streams on `io`.
void exchange(boost::asio::io_context& io, stream& a, stream& b, const std::string& a_to_b,
              const std::string& b_to_a, testing::wait_counts* a_writes = nullptr,
              testing::wait_counts* b_reads = nullptr) {
    writer wa(a, a_to_b), wb(b, b_to_a);
    reader ra(a, b_to_a.size()), rb(b, a_to_b.size());
    wa.start();
    wb.start();
    ra.start();
    rb.start();
    ASSERT_TRUE(run_until(
        io, [&] { return wa.finished() && wb.finished() && ra.finished() && rb.finished(); }))
        << "a sent " << wa.sent() << ", b sent " << wb.sent() << ", a got " << ra.received.size()
        << ", b got " << rb.received.size();
    EXPECT_FALSE(wa.failed()) << wa.failure();
    EXPECT_FALSE(wb.failed()) << wb.failure();
    EXPECT_FALSE(ra.ending()) << ra.ending()->error;
    EXPECT_FALSE(rb.ending()) << rb.ending()->error;
    EXPECT_TRUE(same_bytes(rb.received, a_to_b));
    EXPECT_TRUE(same_bytes(ra.received, b_to_a));
    if (a_writes) *a_writes = wa.waits;
    if (b_reads) *b_reads = rb.waits;
}

// Reads `s` until it reports an ending (closed or failed), discarding data.
std::optional<io_result> read_to_end(boost::asio::io_context& io, stream& s) {
    reader r(s);
    r.start();
    if (!run_until(io, [&] { return r.finished(); })) return std::nullopt;
    return r.ending();
}

// A pending wait on `d` ends with an error once the stream is closed.
void expect_close_ends_wait(boost::asio::io_context& io, stream& s, direction d) {
    std::optional<error_code> got;
    s.async_wait(d, [&](error_code ec) { got = ec; });
    s.close();
    ASSERT_TRUE(run_until(
        io, [&] { return got.has_value(); }, 5s))
        << "the wait never completed";
    EXPECT_TRUE(*got) << "completed without an error";
}

// --- TCP ------------------------------------------------------------------------------------

struct tcp_pair {
    boost::asio::io_context io;
    std::unique_ptr<stream> server, client;
    explicit tcp_pair(bool small_buffers = false) {
        auto p = loopback_pair(io);
        if (small_buffers) {
            shrink_buffers(p.server);
            shrink_buffers(p.client);
        }
        server = make_tcp_stream(std::move(p.server), "mqtt");
        client = make_tcp_stream(std::move(p.client), "test-client");
    }
};

TEST(NetTcpStream, ExchangesBytesBothWays) {
    tcp_pair p;
    exchange(p.io, *p.client, *p.server, "hello from the client", "hello from the server");
}

TEST(NetTcpStream, KnowsItsKindAndPeer) {
    tcp_pair p;
    EXPECT_EQ(p.server->kind(), "mqtt");
    EXPECT_EQ(p.client->kind(), "test-client");
    EXPECT_EQ(p.server->peer().rfind("127.0.0.1:", 0), 0u) << p.server->peer();
    EXPECT_FALSE(p.server->client_certificate());
    EXPECT_FALSE(p.server->has_buffered_input());
    EXPECT_EQ(p.server->handshake().what, io_result::status::done) << "TCP has no handshake";
    EXPECT_FALSE(tls_resumed(*p.server));
    EXPECT_EQ(tls_session_of(*p.client), nullptr);
}

TEST(NetTcpStream, ReadWithNothingThereAsksToWaitForReading) {
    tcp_pair p;
    std::array<char, 16> buf{};
    auto r = p.server->read_some(buf);
    EXPECT_EQ(r.what, io_result::status::want_read) << status_name(r.what);
    EXPECT_EQ(r.wait_for(), direction::read);
}

TEST(NetTcpStream, ALargeTransferBothWaysWaitsForWritingAndReading) {
    tcp_pair p(true);
    testing::wait_counts client_writes, server_reads;
    exchange(p.io, *p.client, *p.server, pattern(large, 1), pattern(large, 2), &client_writes,
             &server_reads);
    // 4 MiB cannot sit in 32 KiB socket buffers: the writer had to wait, and so did the reader.
    EXPECT_GT(client_writes.write, 0);
    EXPECT_GT(server_reads.read, 0);
}

TEST(NetTcpStream, PeerCloseReadsAsClosedAfterTheData) {
    tcp_pair p;
    writer w(*p.client, "last words");
    w.start();
    ASSERT_TRUE(w.finished());
    p.client->close();
    reader r(*p.server);
    r.start();
    ASSERT_TRUE(run_until(p.io, [&] { return r.finished(); }));
    EXPECT_EQ(r.received, "last words");
    ASSERT_TRUE(r.ending());
    EXPECT_EQ(r.ending()->what, io_result::status::closed)
        << status_name(r.ending()->what) << " " << r.ending()->error;
}

TEST(NetTcpStream, WritingToAClosedPeerFailsWithoutSignal) {
    // The peer is gone: writes fail (EPIPE/ECONNRESET) instead of killing the process.
    tcp_pair p;
    p.client->close();
    auto ending = read_to_end(p.io, *p.server);
    ASSERT_TRUE(ending);
    const std::string chunk(64 * 1024, 'x');
    io_result r;
    for (int i = 0; i < 100; ++i) {
        r = p.server->write_some(chunk);
        if (r.what != io_result::status::done) break;
    }
    EXPECT_EQ(r.what, io_result::status::failed) << status_name(r.what);
    EXPECT_FALSE(r.error.empty());
}

TEST(NetTcpStream, CloseEndsAPendingReadWaitWithAnError) {
    tcp_pair p;
    expect_close_ends_wait(p.io, *p.server, direction::read);
}

TEST(NetTcpStream, CloseEndsAPendingWriteWaitWithAnError) {
    tcp_pair p(true);
    // Fill the socket so that a write wait really is pending.
    const std::string chunk(64 * 1024, 'x');
    io_result r;
    for (int i = 0; i < 1000; ++i) {
        r = p.server->write_some(chunk);
        if (r.what != io_result::status::done) break;
    }
    ASSERT_EQ(r.what, io_result::status::want_write) << status_name(r.what);
    expect_close_ends_wait(p.io, *p.server, direction::write);
}

// --- TLS ------------------------------------------------------------------------------------

class NetTlsStream : public ::testing::Test {
  protected:
    static void SetUpTestSuite() {
        pki_ = std::make_unique<testing::temp_pki>();
        other_pki_ = std::make_unique<testing::temp_pki>();
    }
    static void TearDownTestSuite() {
        pki_.reset();
        other_pki_.reset();
    }

    // A connected TCP pair wrapped in TLS, not yet handshaken.
    struct tls_pair {
        std::unique_ptr<stream> server, client;
    };
    tls_pair make_pair(const std::string& server_name = "localhost", SSL_SESSION* session = nullptr,
                       asio::ssl::context* client_ctx = nullptr, bool small_buffers = false) {
        auto p = loopback_pair(io_);
        if (small_buffers) {
            shrink_buffers(p.server);
            shrink_buffers(p.client);
        }
        return {make_tls_stream(std::move(p.server), *server_ctx_, tls_role::server, "mqtts"),
                make_tls_stream(std::move(p.client), client_ctx ? *client_ctx : *client_ctx_,
                                tls_role::client, "test-client", server_name, session)};
    }

    struct handshake_outcome {
        io_result server, client;
    };
    // Runs both handshakes to their end.
    std::optional<handshake_outcome> handshake(tls_pair& p) {
        handshaker hs(*p.server), hc(*p.client);
        hs.start();
        hc.start();
        if (!run_until(io_, [&] { return hs.finished() && hc.finished(); })) return std::nullopt;
        return handshake_outcome{hs.result(), hc.result()};
    }
    // A pair that has completed its handshake.
    tls_pair established(SSL_SESSION* session = nullptr, bool small_buffers = false) {
        auto p = make_pair("localhost", session, nullptr, small_buffers);
        auto h = handshake(p);
        EXPECT_TRUE(h) << "the handshake hung";
        if (h) {
            EXPECT_EQ(h->server.what, io_result::status::done) << h->server.error;
            EXPECT_EQ(h->client.what, io_result::status::done) << h->client.error;
        }
        return p;
    }

    static inline std::unique_ptr<testing::temp_pki> pki_, other_pki_;
    boost::asio::io_context io_;
    std::shared_ptr<asio::ssl::context> server_ctx_ = pki_->server_context();
    std::shared_ptr<asio::ssl::context> client_ctx_ = pki_->client_context();
};

TEST_F(NetTlsStream, HandshakesAndExchangesBytesBothWays) {
    auto p = established();
    EXPECT_EQ(p.server->kind(), "mqtts");
    exchange(io_, *p.client, *p.server, "ping from the device", "pong from the hub");
    EXPECT_FALSE(p.server->client_certificate()) << "the client presented none";
    EXPECT_FALSE(tls_resumed(*p.client)) << "a first connection negotiates in full";
}

TEST_F(NetTlsStream, TheHandshakeAsksToWait) {
    // Neither side can finish in one step: each needs the other's flight.
    auto p = make_pair();
    std::array<char, 16> buf{};
    auto c = p.client->handshake();
    EXPECT_EQ(c.what, io_result::status::want_read) << status_name(c.what) << " " << c.error;
    auto r = p.client->read_some(buf);
    EXPECT_TRUE(r.waiting()) << "no data before the handshake: " << status_name(r.what);
    auto h = handshake(p);
    ASSERT_TRUE(h);
    EXPECT_EQ(h->client.what, io_result::status::done) << h->client.error;
    EXPECT_EQ(h->server.what, io_result::status::done) << h->server.error;
}

TEST_F(NetTlsStream, ALargeTransferBothWaysWaitsForWritingAndReading) {
    auto p = established(nullptr, true);
    testing::wait_counts client_writes, server_reads;
    exchange(io_, *p.client, *p.server, pattern(large, 3), pattern(large, 4), &client_writes,
             &server_reads);
    EXPECT_GT(client_writes.write, 0);
    EXPECT_GT(server_reads.read, 0);
}

TEST_F(NetTlsStream, APartlyReadRecordIsBufferedInput) {
    auto p = established();
    const auto message = pattern(1000, 5);  // one TLS record
    writer w(*p.server, message);
    w.start();
    ASSERT_TRUE(run_until(io_, [&] { return w.finished(); }));
    ASSERT_FALSE(w.failed()) << w.failure();

    // Wait for the first bytes, taking 10 of them.
    std::string got;
    std::array<char, 10> small{};
    reader first(*p.client, 10, small.size());
    first.start();
    ASSERT_TRUE(run_until(io_, [&] { return first.finished(); }));
    ASSERT_FALSE(first.ending()) << first.ending()->error;
    got = first.received;
    // The rest of the record was decrypted with them: readable now, though the socket is empty.
    EXPECT_TRUE(p.client->has_buffered_input());
    while (p.client->has_buffered_input()) {
        auto r = p.client->read_some(small);
        ASSERT_EQ(r.what, io_result::status::done) << status_name(r.what) << " " << r.error;
        got.append(small.data(), r.bytes);
    }
    EXPECT_TRUE(same_bytes(got, message));
    EXPECT_FALSE(p.client->has_buffered_input());
}

TEST_F(NetTlsStream, CloseNotifyReadsAsClosedAfterTheData) {
    auto p = established();
    writer w(*p.client, "last words");
    w.start();
    ASSERT_TRUE(run_until(io_, [&] { return w.finished(); }));
    p.client->close();  // sends close_notify
    reader r(*p.server);
    r.start();
    ASSERT_TRUE(run_until(io_, [&] { return r.finished(); }));
    EXPECT_EQ(r.received, "last words");
    ASSERT_TRUE(r.ending());
    EXPECT_EQ(r.ending()->what, io_result::status::closed)
        << status_name(r.ending()->what) << " " << r.ending()->error;
}

TEST_F(NetTlsStream, APeerThatVanishesWithoutCloseNotifyReadsAsClosed) {
    // The client's socket closes without TLS's goodbye (a device losing power looks like this
    // from the hub). stream.cpp reads "EOF without close_notify" as closed, not as a failure:
    // its own BIO never flags EOF to OpenSSL, so OpenSSL 3 reports a bare SYSCALL error, not
    // "unexpected eof while reading".
    auto p = established();
    p.client.reset();  // close() would send close_notify; destroying the stream does not
    auto ending = read_to_end(io_, *p.server);
    ASSERT_TRUE(ending) << "the server never noticed";
    EXPECT_EQ(ending->what, io_result::status::closed)
        << status_name(ending->what) << " " << ending->error;
}

TEST_F(NetTlsStream, AClientResumesItsSessionOnTheNextConnection) {
    SSL_SESSION* session = nullptr;
    {
        auto first = established();
        // Reading on the client processes the server's session tickets (TLS 1.3 sends them after
        // the handshake), so exchange data before taking the session.
        exchange(io_, *first.client, *first.server, "one", "two");
        EXPECT_FALSE(tls_resumed(*first.client));
        session = tls_session_of(*first.client);
        ASSERT_NE(session, nullptr);
        EXPECT_EQ(SSL_SESSION_is_resumable(session), 1) << "no ticket reached the client";
        first.client->close();
        first.server->close();
    }
    auto second = established(session);
    SSL_SESSION_free(session);
    exchange(io_, *second.client, *second.server, "three", "four");
    EXPECT_TRUE(tls_resumed(*second.client));
    EXPECT_TRUE(tls_resumed(*second.server));
}

TEST_F(NetTlsStream, AClientThatDoesNotTrustTheCaFailsItsHandshake) {
    auto wrong_ca = other_pki_->client_context();
    auto p = make_pair("localhost", nullptr, wrong_ca.get());
    auto h = handshake(p);
    ASSERT_TRUE(h) << "the handshake hung";
    EXPECT_EQ(h->client.what, io_result::status::failed) << status_name(h->client.what);
    EXPECT_FALSE(h->client.error.empty());
    EXPECT_NE(h->client.error.find("TLS handshake"), std::string::npos) << h->client.error;
    // The client's alert ends the server's handshake too.
    EXPECT_NE(h->server.what, io_result::status::done);
}

TEST_F(NetTlsStream, AClientRejectsACertificateForAnotherName) {
    auto p = make_pair("not-this-hub.example");
    auto h = handshake(p);
    ASSERT_TRUE(h) << "the handshake hung";
    EXPECT_EQ(h->client.what, io_result::status::failed) << status_name(h->client.what);
    EXPECT_FALSE(h->client.error.empty());
}

TEST_F(NetTlsStream, AClientVerifiesAnIpAddressName) {
    // Load generators connect to 127.0.0.1; the development certificate names it.
    auto p = make_pair("127.0.0.1");
    auto h = handshake(p);
    ASSERT_TRUE(h) << "the handshake hung";
    EXPECT_EQ(h->client.what, io_result::status::done) << h->client.error;
    EXPECT_EQ(h->server.what, io_result::status::done) << h->server.error;
}

TEST_F(NetTlsStream, CloseEndsAPendingReadWaitWithAnError) {
    auto p = established();
    expect_close_ends_wait(io_, *p.server, direction::read);
}

TEST_F(NetTlsStream, CloseDuringTheHandshakeEndsAPendingWaitWithAnError) {
    auto p = make_pair();
    auto c = p.client->handshake();
    ASSERT_TRUE(c.waiting());
    expect_close_ends_wait(io_, *p.client, c.wait_for());
}

}  // namespace
}  // namespace iothub::net
