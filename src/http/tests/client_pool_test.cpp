// The client pool against a real keep-alive HTTP server on loopback: connections are reused
// across calls and threads, a peer that cannot be reached is held back for the configured time,
// and pools are shared per origin and trust.
#include "http/client.hpp"

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <gtest/gtest.h>

#include <atomic>
#include <list>
#include <mutex>
#include <sys/socket.h>
#include <thread>

namespace iothub::http {
namespace {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using namespace std::chrono_literals;

// Answers every request with 200 and its target, keeping connections open; counts connections.
class keep_alive_server {
  public:
    keep_alive_server() {
        acceptor_.open(asio::ip::tcp::v4());
        acceptor_.set_option(asio::socket_base::reuse_address(true));
        acceptor_.bind({asio::ip::make_address("127.0.0.1"), 0});
        acceptor_.listen();
        port_ = acceptor_.local_endpoint().port();
        accept_thread_ = std::thread([this] { accept_loop(); });
    }
    ~keep_alive_server() {
        stopping_ = true;
        ::shutdown(acceptor_.native_handle(), SHUT_RDWR);
        accept_thread_.join();
        std::lock_guard lock(m_);
        for (auto& s : sockets_) ::shutdown(s.native_handle(), SHUT_RDWR);
        for (auto& t : threads_) t.join();
    }
    url origin() const { return url{false, "127.0.0.1", port_, "/"}; }
    int accepted() const { return accepted_; }

  private:
    void accept_loop() {
        while (!stopping_) {
            boost::system::error_code ec;
            asio::ip::tcp::socket s(io_);
            acceptor_.accept(s, ec);
            if (ec || stopping_) return;
            ++accepted_;
            std::lock_guard lock(m_);
            auto& socket = sockets_.emplace_back(std::move(s));
            threads_.emplace_back([&socket] { serve(socket); });
        }
    }
    static void serve(asio::ip::tcp::socket& s) {
        beast::flat_buffer buffer;
        for (;;) {
            bhttp::request<bhttp::string_body> req;
            boost::system::error_code ec;
            bhttp::read(s, buffer, req, ec);
            if (ec) return;
            bhttp::response<bhttp::string_body> res{bhttp::status::ok, 11};
            res.body() = std::string(req.target());
            res.keep_alive(true);
            res.prepare_payload();
            bhttp::write(s, res, ec);
            if (ec) return;
        }
    }

    asio::io_context io_;
    asio::ip::tcp::acceptor acceptor_{io_};
    std::uint16_t port_ = 0;
    std::atomic<bool> stopping_{false};
    std::atomic<int> accepted_{0};
    std::mutex m_;
    std::list<asio::ip::tcp::socket> sockets_;
    std::list<std::thread> threads_;
    std::thread accept_thread_;
};

client_options quick() {
    client_options o;
    o.timeout = 5s;
    return o;
}

TEST(ClientPool, SuccessiveCallsShareOneConnection) {
    keep_alive_server server;
    client_pool pool(server.origin(), quick(), 10s);
    for (int i = 0; i < 5; ++i) {
        auto r = pool.request("GET", "/n/" + std::to_string(i), "", {});
        ASSERT_TRUE(r) << r.error().message();
        EXPECT_EQ(r->status, 200);
        EXPECT_EQ(r->body, "/n/" + std::to_string(i));
    }
    EXPECT_EQ(pool.opened(), 1u);
    EXPECT_EQ(server.accepted(), 1);
}

TEST(ClientPool, ConcurrentCallsOpenAtMostOneConnectionEachAndKeepThem) {
    keep_alive_server server;
    client_pool pool(server.origin(), quick(), 10s);
    std::atomic<int> ok{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t)
        threads.emplace_back([&] {
            for (int i = 0; i < 10; ++i)
                if (auto r = pool.request("POST", "/x", "body", {}); r && r->status == 200) ++ok;
        });
    for (auto& t : threads) t.join();
    EXPECT_EQ(ok, 40);
    const auto opened = pool.opened();
    EXPECT_GE(opened, 1u);
    EXPECT_LE(opened, 4u);
    for (int i = 0; i < 10; ++i) ASSERT_TRUE(pool.request("GET", "/y", "", {}));
    EXPECT_EQ(pool.opened(), opened) << "the kept connections serve later calls";
    EXPECT_EQ(server.accepted(), static_cast<int>(opened));
}

// A port nobody listens on: bound, never listened to, so connecting is refused.
std::uint16_t refusing_port(asio::io_context& io, asio::ip::tcp::socket& holder) {
    holder = asio::ip::tcp::socket(io);
    holder.open(asio::ip::tcp::v4());
    holder.bind({asio::ip::make_address("127.0.0.1"), 0});
    return holder.local_endpoint().port();
}

TEST(ClientPool, APeerThatCannotBeReachedIsHeldBackThenCalledAgain) {
    asio::io_context io;
    asio::ip::tcp::socket holder(io);
    url dead{false, "127.0.0.1", refusing_port(io, holder), "/"};

    client_pool held(dead, quick(), 1h);
    auto first = held.request("GET", "/", "", {});
    ASSERT_FALSE(first);
    EXPECT_EQ(first.error().code(), errc::server_error) << first.error().message();
    auto second = held.request("GET", "/", "", {});
    ASSERT_FALSE(second);
    EXPECT_EQ(second.error().code(), errc::service_unavailable);
    EXPECT_NE(second.error().message().find("did not reach"), std::string::npos)
        << second.error().message();
    EXPECT_EQ(held.opened(), 1u) << "a held-back call opens nothing";

    client_pool not_held(dead, quick(), 0ms);
    ASSERT_FALSE(not_held.request("GET", "/", "", {}));
    auto again = not_held.request("GET", "/", "", {});
    ASSERT_FALSE(again);
    EXPECT_EQ(again.error().code(), errc::server_error) << "with no hold the peer is tried again";
    EXPECT_EQ(not_held.opened(), 2u);
}

TEST(ClientPools, OnePoolPerOriginAndTrust) {
    client_pools pools(10s, 2);
    url a{true, "Hub-A.example", 443, "/one"};
    url a_again{true, "hub-a.example", 443, "/two"};
    url b{true, "hub-b.example", 443, "/"};
    auto pa = pools.get(a, quick());
    EXPECT_EQ(pools.get(a_again, quick()), pa) << "host names are compared without case";
    auto other_trust = quick();
    other_trust.extra_ca_files.emplace_back("/etc/iothub/other-ca.pem");
    auto pa_trust = pools.get(a, other_trust);
    EXPECT_NE(pa_trust, pa);
    // A third origin beyond the bound lets the least recently asked-for go (a, plain trust).
    (void)pools.get(a, other_trust);
    auto pb = pools.get(b, quick());
    EXPECT_EQ(pools.get(a, other_trust), pa_trust);
    EXPECT_NE(pools.get(a, quick()), pa) << "evicted, so made anew";
    (void)pb;
}

}  // namespace
}  // namespace iothub::http
