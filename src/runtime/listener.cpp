#include "runtime/listener.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/ip/v6_only.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <spdlog/spdlog.h>

namespace iothub::runtime {
namespace asio = boost::asio;

result<std::shared_ptr<tcp::acceptor>> open_acceptor(asio::io_context& ctx,
                                                     const std::string& address,
                                                     std::uint16_t port) {
    boost::system::error_code ec;
    auto addr = asio::ip::make_address(address, ec);
    if (ec) return error(errc::argument_invalid, "Invalid listen address '" + address + "'.");
    auto acceptor = std::make_shared<tcp::acceptor>(ctx);
    tcp::endpoint ep(addr, port);
    acceptor->open(ep.protocol(), ec);
    if (ec && addr.is_v6() && addr.is_unspecified()) {
        // No IPv6 on this host: serve IPv4 instead of failing.
        ep = tcp::endpoint(asio::ip::address_v4::any(), port);
        acceptor->open(ep.protocol(), ec);
    }
    if (ec) return error(errc::server_error, "Cannot open a socket: " + ec.message());
    if (ep.address().is_v6()) acceptor->set_option(asio::ip::v6_only(false), ec);
    acceptor->set_option(tcp::acceptor::reuse_address(true), ec);
    acceptor->bind(ep, ec);
    if (ec) {
        std::string hint;
        if (ec == asio::error::access_denied)
            hint =
                " Ports below 1024 need root or CAP_NET_BIND_SERVICE (setcap "
                "cap_net_bind_service=+ep on the binary), or choose another port.";
        if (ec == asio::error::address_in_use) hint = " Another process is using it.";
        return error(errc::server_error, "Cannot listen on port " + std::to_string(port) + ": " +
                                             ec.message() + "." + hint);
    }
    acceptor->listen(asio::socket_base::max_listen_connections, ec);
    if (ec) return error(errc::server_error, "Cannot listen: " + ec.message());
    return acceptor;
}

asio::awaitable<void> accept_connections(std::shared_ptr<tcp::acceptor> acceptor, shard_set& shards,
                                         std::string what,
                                         std::function<void(tcp::socket)> on_socket) {
    const auto as_tuple = asio::as_tuple(asio::use_awaitable);
    for (;;) {
        auto& shard = shards.next();
        auto [ec, socket] = co_await acceptor->async_accept(shard, as_tuple);
        if (ec == asio::error::operation_aborted || !acceptor->is_open()) co_return;
        if (ec) {
            spdlog::warn("{}: accept failed: {}", what, ec.message());
            asio::steady_timer t(acceptor->get_executor(), std::chrono::milliseconds(100));
            co_await t.async_wait(as_tuple);
            continue;
        }
        socket.set_option(tcp::no_delay(true), ec);
        on_socket(std::move(socket));
    }
}

}  // namespace iothub::runtime
