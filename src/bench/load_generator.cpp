#include "bench/load_generator.hpp"

#include "auth/sas.hpp"
#include "bench/detail/support.hpp"
#include "cli/hub_client.hpp"
#include "common/crypto.hpp"
#include "common/encoding.hpp"
#include "mqtt/codec.hpp"
#include "runtime/shards.hpp"
#include "tls/context.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/json.hpp>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <fstream>
#include <iostream>
#include <mutex>
#include <sstream>
#include <sys/resource.h>
#include <thread>
#include <unistd.h>

namespace iothub::bench {
namespace asio = boost::asio;
namespace json = boost::json;
using tcp = asio::ip::tcp;
using steady = std::chrono::steady_clock;

namespace {
using detail::latency_json;

struct options {
    std::string data_dir, connection_string, ca_file;
    std::string host = "localhost";
    std::uint16_t port = 0;
    bool plain = false;
    bool anonymous = false;  // a plain broker: no registry, no SAS
    std::size_t devices = 100;
    int qos = 1;
    std::size_t payload = 256;
    double rate = 0;  // total messages per second; 0 = unthrottled
    double duration = 10;
    std::uint64_t messages = 0;  // stop after this many acknowledged in the window (0 = by time)
    std::size_t window = 8;      // QoS 1 messages in flight per device
    double warmup = 2;
    std::string prefix = "bench-";
    std::string visible = "auto";  // auto | stream | mqtt | off
    int server_pid = 0;
    unsigned threads = 1;
    bool json_output = false;
};

std::int64_t steady_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(steady::now().time_since_epoch())
        .count();
}

// Latencies in microseconds, per shard (no sharing on the hot path), merged at the end.
struct recorder {
    std::vector<std::uint32_t> puback_us;
    std::uint64_t sent = 0, acked = 0, skipped = 0;
};

struct shared_state {
    const options& opt;
    std::atomic<bool> measuring{false};
    std::atomic<bool> stopping{false};
    std::atomic<std::uint64_t> window_acked{0};
    std::atomic<std::size_t> connected{0};
    std::atomic<std::size_t> failed{0};
    std::string first_failure;
    std::mutex failure_mutex;
    std::string payload_filler;
    void fail(const std::string& why) {
        ++failed;
        std::lock_guard lock(failure_mutex);
        if (first_failure.empty()) first_failure = why;
    }
};

// One simulated device: an MQTT connection driven by completion handlers on its shard.
// Send times by packet id modulo this: in-flight ids are consecutive (mod 65535), so a window
// below it never collides.
constexpr std::size_t send_slots = 1024;
constexpr std::size_t max_window = send_slots - 1;

template <class Stream>
class device : public std::enable_shared_from_this<device<Stream>> {
  public:
    device(Stream stream, shared_state& st, recorder& rec, std::string id, std::string username,
           std::string password)
        : stream_(std::move(stream)),
          st_(st),
          rec_(rec),
          id_(std::move(id)),
          username_(std::move(username)),
          password_(std::move(password)),
          topic_("devices/" + id_ + "/messages/events/"),
          timer_(stream_.get_executor()),
          decoder_(1 << 16),
          sent_at_(send_slots, 0) {}

    void start(std::function<void(bool)> on_connack) {
        on_connack_ = std::move(on_connack);
        mqtt::connect_packet c{"MQTT", 4, true, 0, id_, username_, {}, {}};
        if (!password_.empty()) c.password = password_;
        mqtt::encode(c, out_);
        flush();
        read();
    }

    void begin_publishing(double per_device_rate, std::chrono::nanoseconds offset) {
        if (per_device_rate <= 0) return publish_more();
        interval_ = std::chrono::nanoseconds(static_cast<std::int64_t>(1e9 / per_device_rate));
        next_tick_ = steady::now() + offset;
        tick();
    }

    void stop() {
        asio::post(stream_.get_executor(), [self = this->shared_from_this()] {
            self->timer_.cancel();
            mqtt::encode(mqtt::disconnect_packet{}, self->out_);
            self->closing_ = true;
            self->flush();
        });
    }

    std::size_t inflight() const { return inflight_; }
    auto stream_executor() { return stream_.get_executor(); }

  private:
    void tick() {
        timer_.expires_at(next_tick_);
        timer_.async_wait([self = this->shared_from_this()](boost::system::error_code ec) {
            if (ec || self->st_.stopping) return;
            self->next_tick_ += self->interval_;
            if (self->st_.opt.qos == 0 || self->inflight_ < self->st_.opt.window) {
                self->publish_one();
                self->flush();
            } else {
                ++self->rec_.skipped;  // the server is not keeping up with the asked rate
            }
            self->tick();
        });
    }

    void publish_one() {
        std::string payload = "T" + std::to_string(steady_ns()) + "|";
        payload +=
            std::string_view(st_.payload_filler)
                .substr(0, st_.opt.payload > payload.size() ? st_.opt.payload - payload.size() : 0);
        mqtt::publish_packet p{
            topic_, std::move(payload), static_cast<std::uint8_t>(st_.opt.qos), false, false, 0};
        if (st_.opt.qos == 1) {
            if (++next_id_ == 0) next_id_ = 1;
            p.packet_id = next_id_;
            sent_at_[next_id_ % send_slots] = steady_ns();
            ++inflight_;
        }
        mqtt::encode(p, out_);
        if (st_.measuring) ++rec_.sent;
    }

    // Unthrottled: fill the window (QoS 1), or one batch per write (QoS 0).
    void publish_more() {
        if (st_.stopping) return;
        if (st_.opt.qos == 1) {
            while (inflight_ < st_.opt.window) publish_one();
        } else if (!writing_) {
            for (std::size_t i = 0; i < st_.opt.window; ++i) publish_one();
        }
        flush();
    }

    void read() {
        stream_.async_read_some(
            asio::buffer(buffer_),
            [self = this->shared_from_this()](boost::system::error_code ec, std::size_t n) {
                if (ec) return self->lost(ec.message());
                self->decoder_.feed(std::string_view(self->buffer_.data(), n));
                for (;;) {
                    auto r = self->decoder_.next();
                    if (std::holds_alternative<std::monostate>(r)) break;
                    if (std::holds_alternative<mqtt::decode_error>(r))
                        return self->lost(std::get<mqtt::decode_error>(r).reason);
                    self->handle(std::get<mqtt::packet>(r));
                }
                self->flush();
                self->read();
            });
    }

    void handle(const mqtt::packet& p) {
        if (auto* ack = std::get_if<mqtt::connack_packet>(&p)) {
            if (on_connack_) on_connack_(ack->code == mqtt::connack_code::accepted);
            on_connack_ = nullptr;
            return;
        }
        if (auto* ack = std::get_if<mqtt::puback_packet>(&p)) {
            --inflight_;
            if (st_.measuring) {
                auto us = (steady_ns() - sent_at_[ack->packet_id % send_slots]) / 1000;
                rec_.puback_us.push_back(
                    static_cast<std::uint32_t>(std::clamp<std::int64_t>(us, 0, UINT32_MAX)));
                ++rec_.acked;
                ++st_.window_acked;
            }
            if (interval_.count() == 0) publish_more();
        }
    }

    void flush() {
        if (writing_ || out_.empty()) return;
        writing_ = true;
        sending_.swap(out_);
        out_.clear();
        asio::async_write(
            stream_, asio::buffer(sending_),
            [self = this->shared_from_this()](boost::system::error_code ec, std::size_t) {
                self->writing_ = false;
                if (ec) return self->lost(ec.message());
                if (self->closing_ && self->out_.empty()) return;
                if (self->st_.opt.qos == 0 && self->interval_.count() == 0) self->publish_more();
                self->flush();
            });
    }

    void lost(const std::string& why) {
        if (closing_ || st_.stopping) return;
        closing_ = true;
        if (on_connack_) on_connack_(false);
        on_connack_ = nullptr;
        st_.fail(id_ + ": " + why);
    }

    Stream stream_;
    shared_state& st_;
    recorder& rec_;
    std::string id_, username_, password_, topic_;
    asio::steady_timer timer_;
    std::chrono::nanoseconds interval_{0};
    steady::time_point next_tick_;
    mqtt::decoder decoder_;
    std::array<char, 16 * 1024> buffer_;
    std::string out_, sending_;
    bool writing_ = false, closing_ = false;
    std::vector<std::int64_t> sent_at_;
    std::uint16_t next_id_ = 0;
    std::atomic<std::size_t> inflight_{0};  // read by the main thread when settling
    std::function<void(bool)> on_connack_;
};

// Events in the hub's telemetry stream (sum over partitions of the next sequence number): what
// was really stored, which for QoS 0 is not what the socket accepted.
std::optional<std::uint64_t> stored_events(const std::optional<cli::hub_access>& hub) {
    if (!hub) return std::nullopt;
    auto r = cli::call(*hub, "GET", "/telemetry/partitions?api-version=2021-04-12");
    if (!r || r->status != 200) return std::nullopt;
    std::uint64_t total = 0;
    for (const auto& p : json::parse(r->body).at("partitions").as_array())
        total += static_cast<std::uint64_t>(
            p.at("lastEnqueuedSequenceNumber").to_number<std::int64_t>() + 1);
    return total;
}

struct cpu_sample {
    double server = 0, client = 0;
};

cpu_sample sample_cpu(int pid) {
    cpu_sample s;
    s.server = detail::process_cpu_seconds(pid);
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    s.client =
        ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
    return s;
}

// Reads messages back to time publish -> visible: from the hub's telemetry stream, or from an
// MQTT subscription on a plain broker.
class visibility_reader {
  public:
    visibility_reader(shared_state& st, std::string prefix) : st_(st), prefix_(std::move(prefix)) {}

    void record(std::string_view body) {
        if (body.size() < 2 || body[0] != 'T' || !st_.measuring) return;
        auto bar = body.find('|');
        std::int64_t sent = 0;
        std::from_chars(body.data() + 1,
                        body.data() + (bar == std::string_view::npos ? body.size() : bar), sent);
        auto us = (steady_ns() - sent) / 1000;
        std::lock_guard lock(mutex_);
        samples_.push_back(static_cast<std::uint32_t>(std::clamp<std::int64_t>(us, 0, UINT32_MAX)));
    }

    void run_stream(const cli::hub_access& hub) {
        thread_ = std::thread([this, hub] {
            cli::hub_connection connection(hub);
            std::string cursor;
            while (!st_.stopping) {
                std::string target =
                    "/telemetry/events?" +
                    (cursor.empty() ? std::string("from=latest") : "cursor=" + cursor) +
                    "&max=1000&wait=1&api-version=2021-04-12";
                auto r = connection.call("GET", target);
                if (!r || r->status != 200) continue;
                boost::system::error_code ec;
                auto v = json::parse(r->body, ec);
                if (ec) continue;
                cursor = std::string(v.at("cursor").as_string());
                for (const auto& e : v.at("events").as_array()) record(e.at("body").as_string());
            }
        });
    }

    void run_mqtt(const std::string& host, std::uint16_t port) {
        thread_ = std::thread([this, host, port] {
            asio::io_context io;
            tcp::socket s(io);
            boost::system::error_code ec;
            asio::connect(s, tcp::resolver(io).resolve(host, std::to_string(port)), ec);
            if (ec) return;
            std::string out;
            mqtt::encode(mqtt::connect_packet{"MQTT", 4, true, 0, prefix_ + "observer", {}, {}, {}},
                         out);
            mqtt::encode(mqtt::subscribe_packet{1, {{"devices/+/messages/events/#", 0}}}, out);
            asio::write(s, asio::buffer(out), ec);
            mqtt::decoder d(1 << 20);
            std::array<char, 64 * 1024> buf;
            // Plain recv with a receive timeout, so the loop notices the end of the run.
            timeval tv{0, 200000};
            setsockopt(s.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
            while (!st_.stopping) {
                auto n = ::recv(s.native_handle(), buf.data(), buf.size(), 0);
                if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) continue;
                if (n <= 0) break;
                d.feed(std::string_view(buf.data(), static_cast<std::size_t>(n)));
                for (;;) {
                    auto r = d.next();
                    if (!std::holds_alternative<mqtt::packet>(r)) break;
                    if (auto* p = std::get_if<mqtt::publish_packet>(&std::get<mqtt::packet>(r)))
                        record(p->payload);
                }
            }
        });
    }

    void join() {
        if (thread_.joinable()) thread_.join();
    }
    std::vector<std::uint32_t> take() {
        std::lock_guard lock(mutex_);
        return std::move(samples_);
    }

  private:
    shared_state& st_;
    std::string prefix_;
    std::thread thread_;
    std::mutex mutex_;
    std::vector<std::uint32_t> samples_;
};

struct target {
    std::string hub_name;  // for usernames and SAS resources
    std::string host;
    std::uint16_t port = 0;
    std::optional<cli::hub_access> access;
    std::vector<std::string> keys;  // per device, when authenticating
};

// Creates (or refreshes) the devices with keys chosen here, 100 per bulk call, so no key has to
// be read back.
target prepare(const options& o) {
    target t;
    t.host = o.host;
    if (o.anonymous) {
        t.hub_name = o.host;
        t.port = o.port ? o.port : static_cast<std::uint16_t>(o.plain ? 1883 : 8883);
        return t;
    }
    auto access = cli::resolve_access({o.connection_string, o.data_dir, "", o.ca_file}, true);
    if (!access) throw std::runtime_error(access.error().message());
    t.access = *access;
    t.hub_name = access->hostname;
    if (access->layout) {
        auto running = instance::read_runtime(*access->layout);
        if (!running) throw std::runtime_error(running.error().message());
        t.port = o.plain ? running->mqtt_plain_port : running->mqtt_port;
        if (t.port == 0)
            throw std::runtime_error("The hub's plain MQTT listener is off (serve --mqtt-plain).");
    } else {
        t.host = access->connect_host;
    }
    if (o.port) t.port = o.port;
    if (!t.port) t.port = o.plain ? 1883 : 8883;
    t.keys = detail::create_devices(*access, o.prefix, o.devices);
    return t;
}

int run(const options& o) {
    if (o.window == 0 || o.window > max_window)
        throw std::runtime_error("--window must be 1 to " + std::to_string(max_window) + ".");
    target t = prepare(o);
    shared_state st{o};
    st.payload_filler.assign(std::max<std::size_t>(o.payload, 32), 'x');
    runtime::shard_set shards(o.threads);
    std::vector<recorder> recorders(shards.size());

    std::shared_ptr<asio::ssl::context> tls_ctx;
    if (!o.plain) {
        std::filesystem::path ca = o.ca_file;
        if (ca.empty() && t.access) ca = t.access->ca;
        auto c = tls::make_client_context(ca);
        if (!c) throw std::runtime_error(c.error().message());
        tls_ctx = *c;
    }
    const auto expiry =
        unix_seconds(now()) + static_cast<std::int64_t>(o.warmup + o.duration) + 3600;
    std::vector<std::function<void(double, std::chrono::nanoseconds)>> starters;
    std::vector<std::function<void()>> stoppers;
    std::function<std::size_t()> inflight_sum;
    std::vector<std::function<std::size_t()>> inflights;
    std::mutex mutex;
    std::atomic<std::size_t> answered{0};

    shards.start();
    tcp::resolver resolver(shards.at(0));
    auto endpoints = resolver.resolve(t.host, std::to_string(t.port));
    std::cerr << "bench: connecting " << o.devices << " devices to " << t.host << ":" << t.port
              << (o.plain ? " (plain TCP)" : " (TLS)") << "\n";
    const std::size_t wave = 64;  // handshakes in flight at once
    for (std::size_t i = 0; i < o.devices; ++i) {
        while (i >= answered + wave) std::this_thread::sleep_for(std::chrono::milliseconds(1));
        auto& io = shards.at(static_cast<unsigned>(i % shards.size()));
        auto& rec = recorders[i % shards.size()];
        std::string id = o.prefix + std::to_string(i);
        std::string user = o.anonymous ? "" : t.hub_name + "/" + id + "/?api-version=2021-04-12";
        std::string pass =
            o.anonymous ? ""
                        : auth::make_sas_token(t.hub_name + "/devices/" + id, t.keys[i], expiry);
        auto connack = [&](bool ok) {
            if (ok) ++st.connected;
            ++answered;
        };
        auto hook = [&](auto dev) {
            std::lock_guard lock(mutex);
            starters.push_back([dev](double rate, std::chrono::nanoseconds off) {
                asio::post(dev->stream_executor(),
                           [dev, rate, off] { dev->begin_publishing(rate, off); });
            });
            stoppers.push_back([dev] { dev->stop(); });
            inflights.push_back([dev] { return dev->inflight(); });
        };
        tcp::socket sock(io);
        boost::system::error_code ec;
        asio::connect(sock, endpoints, ec);
        if (ec) {
            st.fail(id + ": " + ec.message());
            ++answered;
            continue;
        }
        sock.set_option(tcp::no_delay(true));
        if (o.plain) {
            auto dev =
                std::make_shared<device<tcp::socket>>(std::move(sock), st, rec, id, user, pass);
            hook(dev);
            asio::post(io, [dev, connack] { dev->start(connack); });
        } else {
            asio::ssl::stream<tcp::socket> s(std::move(sock), *tls_ctx);
            SSL_set_tlsext_host_name(s.native_handle(), t.host.c_str());
            s.handshake(asio::ssl::stream_base::client, ec);
            if (ec) {
                st.fail(id + ": TLS: " + ec.message());
                ++answered;
                continue;
            }
            auto dev = std::make_shared<device<asio::ssl::stream<tcp::socket>>>(
                std::move(s), st, rec, id, user, pass);
            hook(dev);
            asio::post(io, [dev, connack] { dev->start(connack); });
        }
    }
    while (answered < o.devices) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    if (st.connected < o.devices) {
        std::cerr << "bench: " << st.connected << " of " << o.devices
                  << " devices connected; first failure: " << st.first_failure << "\n";
        return 1;
    }

    visibility_reader reader(st, o.prefix);
    std::string visible = o.visible == "auto" ? (o.anonymous ? "mqtt" : "stream") : o.visible;
    if (visible == "stream" && t.access) reader.run_stream(*t.access);
    if (visible == "mqtt") reader.run_mqtt(t.host, t.port);

    const double per_device = o.rate > 0 ? o.rate / static_cast<double>(o.devices) : 0;
    for (std::size_t i = 0; i < starters.size(); ++i) {
        auto offset = per_device > 0 ? std::chrono::nanoseconds(static_cast<std::int64_t>(
                                           1e9 / per_device * i / starters.size()))
                                     : std::chrono::nanoseconds(0);
        starters[i](per_device, offset);
    }
    std::this_thread::sleep_for(std::chrono::duration<double>(o.warmup));
    auto stored0 = stored_events(t.access);
    auto cpu0 = sample_cpu(o.server_pid);
    auto t0 = steady::now();
    st.measuring = true;
    auto end = t0 + std::chrono::duration_cast<steady::duration>(
                        std::chrono::duration<double>(o.duration));
    auto next_report = t0 + std::chrono::seconds(1);
    std::uint64_t last = 0;
    while (steady::now() < end && (o.messages == 0 || st.window_acked < o.messages)) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        if (!o.json_output && steady::now() >= next_report) {
            auto acked = st.window_acked.load();
            std::cerr
                << "bench: t="
                << std::chrono::duration_cast<std::chrono::seconds>(steady::now() - t0).count()
                << "s acked=" << acked << " (" << (acked - last) << "/s)\n";
            last = acked;
            next_report += std::chrono::seconds(1);
        }
        if (st.failed) break;
    }
    st.measuring = false;
    auto elapsed = std::chrono::duration<double>(steady::now() - t0).count();
    auto cpu1 = sample_cpu(o.server_pid);
    auto stored1 = stored_events(t.access);
    st.stopping = true;
    // Let what is in flight settle, briefly.
    for (int i = 0; i < 250; ++i) {
        std::size_t left = 0;
        for (auto& f : inflights) left += f();
        if (left == 0) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    for (auto& s : stoppers) s();
    reader.join();
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    shards.stop();

    recorder all;
    for (auto& r : recorders) {
        all.sent += r.sent;
        all.acked += r.acked;
        all.skipped += r.skipped;
        all.puback_us.insert(all.puback_us.end(), r.puback_us.begin(), r.puback_us.end());
    }
    auto seen = reader.take();
    // QoS 1 counts acknowledged messages; QoS 0 what the hub stored (a plain broker gives no such
    // figure, so there it is what was sent).
    double counted = o.qos == 1 ? static_cast<double>(all.acked) : static_cast<double>(all.sent);
    std::optional<std::uint64_t> stored;
    if (stored0 && stored1) stored = *stored1 - *stored0;
    if (o.qos == 0 && stored) counted = static_cast<double>(*stored);
    const double server_cpu = cpu1.server - cpu0.server;
    json::object report{
        {"devices", o.devices},
        {"qos", o.qos},
        {"payloadBytes", o.payload},
        {"transport", o.plain ? "tcp" : "tls"},
        {"targetRate", o.rate},
        {"windowSeconds", elapsed},
        {"sent", all.sent},
        {"acknowledged", all.acked},
        {"messagesPerSecond", counted / elapsed},
        {"rateSkips", all.skipped},
        {"failures", st.failed.load()},
        {"storedInWindow", stored ? json::value(*stored) : json::value(nullptr)},
        {"clientCpuSeconds", cpu1.client - cpu0.client},
    };
    if (o.qos == 1) report["publishToPuback"] = latency_json(all.puback_us);
    if (!seen.empty()) report["publishToVisible"] = latency_json(seen);
    if (o.server_pid > 0) {
        report["serverCpuSeconds"] = server_cpu;
        report["messagesPerServerCpuSecond"] = server_cpu > 0 ? counted / server_cpu : 0.0;
    }
    if (o.json_output) {
        std::cout << json::serialize(report) << std::endl;
    } else {
        std::cout << "devices " << o.devices << ", QoS " << o.qos << ", " << o.payload << " B, "
                  << (o.plain ? "tcp" : "tls") << ", "
                  << (o.rate > 0 ? std::to_string(static_cast<long>(o.rate)) + " msg/s asked"
                                 : "unthrottled")
                  << "\n  " << counted / elapsed << " msg/s over " << elapsed << " s ("
                  << static_cast<std::uint64_t>(counted) << " messages)\n";
        auto show = [](const char* what, const json::value& l) {
            const auto& x = l.as_object();
            std::cout << "  " << what << " ms: p50 " << x.at("p50").as_double() << ", p90 "
                      << x.at("p90").as_double() << ", p99 " << x.at("p99").as_double()
                      << ", p99.9 " << x.at("p999").as_double() << ", max "
                      << x.at("max").as_double() << " ("
                      << x.at("samples").to_number<std::uint64_t>() << " samples)\n";
        };
        if (report.contains("publishToPuback")) show("publish->PUBACK ", report["publishToPuback"]);
        if (report.contains("publishToVisible"))
            show("publish->visible", report["publishToVisible"]);
        if (o.server_pid > 0)
            std::cout << "  server CPU " << server_cpu << " s -> "
                      << report["messagesPerServerCpuSecond"].as_double()
                      << " msg per server CPU-second\n";
        if (all.skipped)
            std::cout << "  " << all.skipped << " sends skipped: the window was full\n";
    }
    return st.failed ? 1 : 0;
}

}  // namespace

void add_command(CLI::App& app, int& exit_code) {
    auto o = std::make_shared<options>();
    auto* cmd = app.add_subcommand(
        "bench", "Load-test the MQTT endpoint (or any MQTT broker) with simulated devices");
    cmd->add_option("--devices", o->devices,
                    "Simulated devices, one connection each (default 100)");
    cmd->add_option("--qos", o->qos, "0 or 1 (default 1)")->check(CLI::Range(0, 1));
    cmd->add_option("--payload", o->payload, "Payload bytes (default 256)");
    cmd->add_option("--rate", o->rate, "Total messages per second (default: unthrottled)");
    cmd->add_option("--duration", o->duration, "Measured seconds (default 10)");
    cmd->add_option("--messages", o->messages, "Stop after this many acknowledged messages");
    cmd->add_option("--warmup", o->warmup, "Seconds of load before measuring (default 2)");
    cmd->add_option("--window", o->window, "QoS 1 messages in flight per device (default 8)");
    cmd->add_option("--prefix", o->prefix, "Device id prefix (default bench-)");
    cmd->add_flag("--plain", o->plain, "Plain TCP instead of TLS");
    cmd->add_flag("--anonymous", o->anonymous, "A plain broker: no registry, no credentials");
    cmd->add_option("--host", o->host, "Broker host (default localhost)");
    cmd->add_option("--port", o->port, "Broker port (default: the hub's, or 8883/1883)");
    cmd->add_option("--visible", o->visible,
                    "Measure publish->visible via stream, mqtt, off or auto")
        ->check(CLI::IsMember({"auto", "stream", "mqtt", "off"}));
    cmd->add_option("--server-pid", o->server_pid, "Report this process's CPU time");
    cmd->add_option("--threads", o->threads, "Generator threads (default 1)");
    cmd->add_flag("--json", o->json_output, "One JSON object instead of text");
    cmd->add_option("--data-dir", o->data_dir, "The hub's data directory (devices, ports, CA)");
    cmd->add_option("--connection-string", o->connection_string, "Service connection string");
    cmd->add_option("--ca-file", o->ca_file, "CA certificate to trust");
    cmd->final_callback([o, &exit_code] {
        try {
            exit_code = run(*o);
        } catch (const std::exception& e) {
            std::cerr << "error: " << e.what() << "\n";
            exit_code = 1;
        }
    });
}

}  // namespace iothub::bench
