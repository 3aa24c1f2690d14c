#include "bench/detail/sync_device.hpp"

#include "auth/sas.hpp"
#include "common/time.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/write.hpp>

#include <stdexcept>

namespace iothub::bench::detail {
namespace asio = boost::asio;
using tcp = asio::ip::tcp;

sync_device::sync_device(asio::ssl::context* tls, const cli::hub_access& hub, std::uint16_t port,
                         const std::string& id, const std::string& key)
    : socket_(io_), decoder_(1 << 20) {
    tcp::resolver resolver(io_);
    asio::connect(socket_, resolver.resolve(hub.connect_host, std::to_string(port)));
    socket_.set_option(tcp::no_delay(true));
    if (tls) {
        tls_ = std::make_unique<asio::ssl::stream<tcp::socket&>>(socket_, *tls);
        SSL_set_tlsext_host_name(tls_->native_handle(), hub.verify_name.c_str());
        tls_->set_verify_callback(asio::ssl::host_name_verification(hub.verify_name));
        tls_->handshake(asio::ssl::stream_base::client);
    }
    mqtt::connect_packet c{
        "MQTT",
        4,
        true,
        0,
        id,
        hub.hostname + "/" + id + "/?api-version=2021-04-12",
        auth::make_sas_token(hub.hostname + "/devices/" + id, key, unix_seconds(now()) + 3600),
        {}};
    send(c);
    auto ack = read();
    if (!std::holds_alternative<mqtt::connack_packet>(ack) ||
        std::get<mqtt::connack_packet>(ack).code != mqtt::connack_code::accepted)
        throw std::runtime_error("device " + id + " was refused");
}

void sync_device::subscribe(std::vector<std::string> filters, std::uint8_t qos) {
    mqtt::subscribe_packet s{1, {}};
    for (auto& f : filters) s.subscriptions.push_back({std::move(f), qos});
    send(s);
    while (!std::holds_alternative<mqtt::suback_packet>(read())) {
    }
}

void sync_device::publish(std::string topic, std::string payload) {
    send(mqtt::publish_packet{std::move(topic), std::move(payload), 0, false, false, 0});
}

void sync_device::send(const mqtt::packet& p) {
    write(mqtt::encode(p));
}

void sync_device::write(const std::string& bytes) {
    if (tls_)
        asio::write(*tls_, asio::buffer(bytes));
    else
        asio::write(socket_, asio::buffer(bytes));
}

mqtt::packet sync_device::read() {
    for (;;) {
        auto next = decoder_.next();
        if (auto* p = std::get_if<mqtt::packet>(&next)) return std::move(*p);
        if (std::holds_alternative<mqtt::decode_error>(next))
            throw std::runtime_error("undecodable packet from the hub");
        char buf[16 * 1024];
        auto n = tls_ ? tls_->read_some(asio::buffer(buf)) : socket_.read_some(asio::buffer(buf));
        decoder_.feed(std::string_view(buf, n));
    }
}

void sync_device::close() {
    boost::system::error_code ec;
    socket_.shutdown(tcp::socket::shutdown_both, ec);
}

}  // namespace iothub::bench::detail
