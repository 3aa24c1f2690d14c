// A device on a blocking MQTT connection (TLS, or plain TCP to the hub's --mqtt-plain listener),
// for benchmarks where the hub's work, not the client's, dominates. One thread per device.
#pragma once

#include "cli/hub_client.hpp"
#include "mqtt/codec.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace iothub::bench::detail {

class sync_device {
  public:
    // Connects and authenticates with a SAS token signed by `key`; `tls` null: plain TCP.
    // Throws std::runtime_error (or boost::system::system_error) on failure.
    sync_device(boost::asio::ssl::context* tls, const cli::hub_access& hub, std::uint16_t port,
                const std::string& id, const std::string& key);

    // Subscribes at `qos` and waits for the SUBACK.
    void subscribe(std::vector<std::string> filters, std::uint8_t qos = 0);
    void publish(std::string topic, std::string payload);
    void send(const mqtt::packet& p);
    mqtt::packet read();
    // Unblocks a read() on another thread.
    void close();

  private:
    void write(const std::string& bytes);
    boost::asio::io_context io_;
    boost::asio::ip::tcp::socket socket_;
    std::unique_ptr<boost::asio::ssl::stream<boost::asio::ip::tcp::socket&>> tls_;
    mqtt::decoder decoder_;
};

}  // namespace iothub::bench::detail
