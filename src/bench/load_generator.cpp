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
#include <map>
#include <mutex>
#include <netinet/in.h>
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
    std::string mode = "telemetry";      // telemetry | idle | storm
    std::size_t connect_parallel = 256;  // connects in flight at once
    double connect_rate = 0;             // connects started per second; 0 = as fast as answered
    std::vector<std::string> sources;    // local addresses to connect from, in turn
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
    std::string server_name;  // SNI
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

// How a connect attempt ended: the CONNACK's return code, or no CONNACK at all.
constexpr int no_connack = -1;

class sim_device {
  public:
    virtual ~sim_device() = default;
    // TCP connect (from `source` when given), TLS handshake (resuming `session` when given),
    // CONNECT; `done` is called once on the device's shard with the CONNACK's code or no_connack.
    virtual void open(const tcp::endpoint& to, std::optional<asio::ip::address> source,
                      SSL_SESSION* session, std::function<void(int)> done) = 0;
    virtual void begin_publishing(double per_device_rate, std::chrono::nanoseconds offset) = 0;
    // DISCONNECT, then the socket closes.
    virtual void stop() = 0;
    // The socket closes at once, as when the network fails.
    virtual void drop() = 0;
    virtual std::size_t inflight() const = 0;
    // The TLS session to resume on the next connect (caller owns it), or null.
    virtual SSL_SESSION* session() = 0;
    virtual bool resumed() const = 0;
};

template <class Stream>
class device final : public sim_device, public std::enable_shared_from_this<device<Stream>> {
    static constexpr bool tls = !std::is_same_v<Stream, tcp::socket>;

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
          decoder_(1 << 16) {}

    void open(const tcp::endpoint& to, std::optional<asio::ip::address> source,
              SSL_SESSION* session, std::function<void(int)> done) override {
        on_connack_ = std::move(done);
        auto& sock = stream_.lowest_layer();
        boost::system::error_code ec;
        sock.open(to.protocol(), ec);
        if (!ec && source) {
            // The port is chosen at connect, per destination, not at bind: many source addresses
            // then each get the whole ephemeral range.
            int on = 1;
            ::setsockopt(sock.native_handle(), IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &on, sizeof on);
            sock.bind(tcp::endpoint(*source, 0), ec);
        }
        if (ec) return lost("socket: " + ec.message());
        if constexpr (tls) {
            SSL_set_tlsext_host_name(stream_.native_handle(), st_.server_name.c_str());
            if (session) SSL_set_session(stream_.native_handle(), session);
        }
        sock.async_connect(to, [self = this->shared_from_this()](boost::system::error_code ec) {
            if (ec) return self->lost("connect: " + ec.message());
            self->stream_.lowest_layer().set_option(tcp::no_delay(true), ec);
            if constexpr (tls) {
                self->stream_.async_handshake(asio::ssl::stream_base::client,
                                              [self](boost::system::error_code ec) {
                                                  if (ec) return self->lost("TLS: " + ec.message());
                                                  self->send_connect();
                                              });
            } else {
                self->send_connect();
            }
        });
    }

    void begin_publishing(double per_device_rate, std::chrono::nanoseconds offset) override {
        asio::post(
            stream_.get_executor(), [self = this->shared_from_this(), per_device_rate, offset] {
                if (per_device_rate <= 0) return self->publish_more();
                self->interval_ =
                    std::chrono::nanoseconds(static_cast<std::int64_t>(1e9 / per_device_rate));
                self->next_tick_ = steady::now() + offset;
                self->tick();
            });
    }

    void stop() override {
        asio::post(stream_.get_executor(), [self = this->shared_from_this()] {
            self->timer_.cancel();
            if (self->closing_) return;
            mqtt::encode(mqtt::disconnect_packet{}, self->out_);
            self->closing_ = true;
            self->flush();
        });
    }

    void drop() override {
        asio::post(stream_.get_executor(), [self = this->shared_from_this()] {
            self->timer_.cancel();
            self->closing_ = true;
            boost::system::error_code ec;
            self->stream_.lowest_layer().close(ec);
        });
    }

    std::size_t inflight() const override { return inflight_; }

    SSL_SESSION* session() override {
        if constexpr (tls) {
            // A copy: the live one is marked not resumable when this connection ends in error.
            SSL_SESSION* live = SSL_get1_session(stream_.native_handle());
            SSL_SESSION* copy = live ? SSL_SESSION_dup(live) : nullptr;
            if (live) SSL_SESSION_free(live);
            return copy;
        }
        return nullptr;
    }
    bool resumed() const override { return resumed_; }

  private:
    void send_connect() {
        if constexpr (tls) resumed_ = SSL_session_reused(stream_.native_handle()) == 1;
        mqtt::connect_packet c{"MQTT", 4, true, 0, id_, username_, {}, {}};
        if (!password_.empty()) c.password = password_;
        mqtt::encode(c, out_);
        flush();
        read();
    }

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
            if (sent_at_.empty()) sent_at_.assign(send_slots, 0);
            sent_at_[next_id_ % send_slots] = steady_ns();
            ++inflight_;
        }
        mqtt::encode(p, out_);
        if (st_.measuring) ++rec_.sent;
    }

    // Unthrottled: fill the window (QoS 1), or one batch per write (QoS 0).
    void publish_more() {
        if (st_.stopping || closing_) return;
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
            if (auto done = std::exchange(on_connack_, nullptr)) done(static_cast<int>(ack->code));
            return;
        }
        if (auto* ack = std::get_if<mqtt::puback_packet>(&p)) {
            --inflight_;
            if (st_.measuring && !sent_at_.empty()) {
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
                if (self->closing_ && self->out_.empty()) {
                    boost::system::error_code ignored;
                    self->stream_.lowest_layer().shutdown(tcp::socket::shutdown_send, ignored);
                    return;
                }
                if (self->st_.opt.qos == 0 && self->interval_.count() == 0) self->publish_more();
                self->flush();
            });
    }

    void lost(const std::string& why) {
        if (auto done = std::exchange(on_connack_, nullptr)) {
            st_.fail(id_ + ": " + why);
            done(no_connack);
            return;
        }
        if (closing_ || st_.stopping) return;
        closing_ = true;
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
    bool writing_ = false, closing_ = false, resumed_ = false;
    std::vector<std::int64_t> sent_at_;  // made on the first publish: idle devices stay small
    std::uint16_t next_id_ = 0;
    std::atomic<std::size_t> inflight_{0};  // read by the main thread when settling
    std::function<void(int)> on_connack_;
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

long rss_kib(int pid) {
    if (pid <= 0) return 0;
    std::ifstream in("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    while (std::getline(in, line))
        if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
    return 0;
}

// What one wave of connects did.
struct connect_report {
    std::size_t attempts = 0, accepted = 0, resumed = 0, no_answer = 0;
    std::map<int, std::size_t> refused;  // CONNACK code -> count
    double seconds = 0, server_cpu = 0, client_cpu = 0;

    double per_second() const { return seconds > 0 ? static_cast<double>(accepted) / seconds : 0; }
    double server_ms_per_connect() const {
        return accepted > 0 ? server_cpu * 1000 / static_cast<double>(accepted) : 0;
    }

    json::object to_json() const {
        json::object codes;
        for (auto [code, n] : refused) codes[std::to_string(code)] = n;
        return {{"attempts", attempts},
                {"accepted", accepted},
                {"resumedTls", resumed},
                {"refusedByConnackCode", codes},
                {"noAnswer", no_answer},
                {"seconds", seconds},
                {"connectsPerSecond", per_second()},
                {"serverCpuSeconds", server_cpu},
                {"serverCpuMsPerConnect", server_ms_per_connect()},
                {"clientCpuSeconds", client_cpu}};
    }
};

// Everything a run connects: the devices, their credentials, where they go.
class fleet {
  public:
    fleet(const options& o, const target& t, shared_state& st, runtime::shard_set& shards,
          std::vector<recorder>& recorders)
        : o_(o), t_(t), st_(st), shards_(shards), recorders_(recorders) {
        if (!o.plain) {
            std::filesystem::path ca = o.ca_file;
            if (ca.empty() && t.access) ca = t.access->ca;
            auto c = tls::make_client_context(ca);
            if (!c) throw std::runtime_error(c.error().message());
            tls_ = *c;
        }
        tcp::resolver resolver(shards.at(0));
        auto found = resolver.resolve(t.host, std::to_string(t.port));
        if (found.empty()) throw std::runtime_error("Cannot resolve " + t.host);
        to_ = *found.begin();
        for (const auto& a : o.sources) sources_.push_back(asio::ip::make_address(a));
        expiry_ = unix_seconds(now()) + static_cast<std::int64_t>(o.warmup + o.duration) + 3600;
        devices_.resize(o.devices);
        sessions_.resize(o.devices, nullptr);
    }
    ~fleet() {
        for (auto* s : sessions_)
            if (s) SSL_SESSION_free(s);
    }

    // Connects every device (new connections), at most `parallel` at once and `rate` per second;
    // resumes TLS sessions kept by a previous wave when `resume`.
    connect_report connect_all(std::size_t parallel, double rate, bool resume) {
        connect_report r;
        r.attempts = devices_.size();
        std::mutex m;
        std::atomic<std::size_t> answered{0};
        auto cpu0 = sample_cpu(o_.server_pid);
        const auto t0 = steady::now();
        for (std::size_t i = 0; i < devices_.size(); ++i) {
            while (i >= answered + parallel)
                std::this_thread::sleep_for(std::chrono::microseconds(200));
            if (rate > 0)
                std::this_thread::sleep_until(
                    t0 + std::chrono::nanoseconds(
                             static_cast<std::int64_t>(1e9 * static_cast<double>(i) / rate)));
            auto dev = make(i);
            devices_[i] = dev;
            std::optional<asio::ip::address> source;
            if (!sources_.empty()) source = sources_[i % sources_.size()];
            SSL_SESSION* session = resume ? sessions_[i] : nullptr;
            dev->open(to_, source, session, [&, dev](int code) {
                {
                    std::lock_guard lock(m);
                    if (code == static_cast<int>(mqtt::connack_code::accepted)) {
                        ++r.accepted;
                        if (dev->resumed()) ++r.resumed;
                    } else if (code == no_connack) {
                        ++r.no_answer;
                    } else {
                        ++r.refused[code];
                    }
                }
                ++answered;
            });
        }
        // Bounded: a connect the server never answers ends with the socket's own errors, and the
        // whole wave gets a generous deadline on top.
        const auto deadline =
            steady::now() + std::chrono::seconds(60) + std::chrono::milliseconds(devices_.size());
        while (answered < devices_.size() && steady::now() < deadline)
            std::this_thread::sleep_for(std::chrono::milliseconds(2));
        r.seconds = std::chrono::duration<double>(steady::now() - t0).count();
        auto cpu1 = sample_cpu(o_.server_pid);
        r.server_cpu = cpu1.server - cpu0.server;
        r.client_cpu = cpu1.client - cpu0.client;
        std::lock_guard lock(m);
        r.no_answer += devices_.size() - answered;
        return r;
    }

    // Every connection fails at once (kept TLS sessions for the next wave).
    void drop_all() {
        for (std::size_t i = 0; i < devices_.size(); ++i) {
            if (!devices_[i]) continue;
            if (sessions_[i]) SSL_SESSION_free(sessions_[i]);
            sessions_[i] = devices_[i]->session();
            devices_[i]->drop();
        }
    }

    std::vector<std::shared_ptr<sim_device>>& devices() { return devices_; }

  private:
    std::shared_ptr<sim_device> make(std::size_t i) {
        auto& io = shards_.at(static_cast<unsigned>(i % shards_.size()));
        auto& rec = recorders_[i % shards_.size()];
        std::string id = o_.prefix + std::to_string(i);
        std::string user = o_.anonymous ? "" : t_.hub_name + "/" + id + "/?api-version=2021-04-12";
        std::string pass = o_.anonymous ? ""
                                        : auth::make_sas_token(t_.hub_name + "/devices/" + id,
                                                               t_.keys[i], expiry_);
        if (o_.plain)
            return std::make_shared<device<tcp::socket>>(tcp::socket(io), st_, rec, id, user, pass);
        return std::make_shared<device<asio::ssl::stream<tcp::socket>>>(
            asio::ssl::stream<tcp::socket>(io, *tls_), st_, rec, id, user, pass);
    }

    const options& o_;
    const target& t_;
    shared_state& st_;
    runtime::shard_set& shards_;
    std::vector<recorder>& recorders_;
    std::shared_ptr<asio::ssl::context> tls_;
    tcp::endpoint to_;
    std::vector<asio::ip::address> sources_;
    std::int64_t expiry_ = 0;
    std::vector<std::shared_ptr<sim_device>> devices_;
    std::vector<SSL_SESSION*> sessions_;
};

void print_connects(const char* what, const connect_report& r) {
    std::cout << "  " << what << ": " << r.accepted << " accepted";
    if (r.resumed) std::cout << " (" << r.resumed << " resumed TLS)";
    for (auto [code, n] : r.refused) std::cout << ", " << n << " refused with CONNACK " << code;
    if (r.no_answer) std::cout << ", " << r.no_answer << " without an answer";
    std::cout << " in " << r.seconds << " s -> " << r.per_second() << " connects/s";
    if (r.server_cpu > 0)
        std::cout << ", server CPU " << r.server_ms_per_connect() << " ms per connect";
    std::cout << "\n";
}

// Holds every device connected and idle: what the server pays per connection.
int run_idle(const options& o, fleet& f, shared_state& st) {
    const long rss0 = rss_kib(o.server_pid);
    auto r = f.connect_all(o.connect_parallel, o.connect_rate, false);
    // For scripts that hold several fleets at once: this one is in place.
    std::cerr << "bench: connected " << r.accepted << " of " << o.devices << " in " << r.seconds
              << " s" << std::endl;
    auto cpu0 = sample_cpu(o.server_pid);
    std::this_thread::sleep_for(std::chrono::duration<double>(o.duration));
    auto cpu1 = sample_cpu(o.server_pid);
    const long rss1 = rss_kib(o.server_pid);
    const double per_conn =
        r.accepted ? static_cast<double>(rss1 - rss0) * 1024 / static_cast<double>(r.accepted) : 0;
    json::object report{{"mode", "idle"},
                        {"devices", o.devices},
                        {"transport", o.plain ? "tcp" : "tls"},
                        {"connect", r.to_json()},
                        {"failures", st.failed.load()}};
    if (o.server_pid > 0) {
        report["serverRssBeforeKiB"] = rss0;
        report["serverRssKiB"] = rss1;
        report["rssBytesPerConnection"] = per_conn;
        report["idleSeconds"] = o.duration;
        report["idleServerCpuSeconds"] = cpu1.server - cpu0.server;
    }
    if (o.json_output) {
        std::cout << json::serialize(report) << std::endl;
    } else {
        std::cout << "idle: " << o.devices << " devices, " << (o.plain ? "tcp" : "tls") << "\n";
        print_connects("connect", r);
        if (o.server_pid > 0)
            std::cout << "  server RSS " << rss0 << " KiB -> " << rss1 << " KiB: " << per_conn
                      << " B per connection; " << (cpu1.server - cpu0.server)
                      << " s of server CPU while idle for " << o.duration << " s\n";
    }
    for (auto& d : f.devices())
        if (d) d->stop();
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    return r.accepted == o.devices ? 0 : 1;
}

// Every device connects, then all connections fail at once and every device reconnects at once
// (resuming its TLS session), as after a network outage.
int run_storm(const options& o, fleet& f, shared_state& st) {
    auto first = f.connect_all(o.connect_parallel, o.connect_rate, false);
    std::this_thread::sleep_for(std::chrono::duration<double>(o.warmup));
    f.drop_all();
    auto storm = f.connect_all(o.devices, 0, true);
    json::object report{{"mode", "storm"},
                        {"devices", o.devices},
                        {"transport", o.plain ? "tcp" : "tls"},
                        {"connect", first.to_json()},
                        {"reconnect", storm.to_json()},
                        {"failures", st.failed.load()}};
    if (o.json_output) {
        std::cout << json::serialize(report) << std::endl;
    } else {
        std::cout << "storm: " << o.devices << " devices, " << (o.plain ? "tcp" : "tls") << "\n";
        print_connects("connect  ", first);
        print_connects("reconnect", storm);
    }
    for (auto& d : f.devices())
        if (d) d->stop();
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    // Refusals are the server's answer (a connect rate limit), not the tool's failure.
    return storm.no_answer == 0 && first.no_answer == 0 ? 0 : 1;
}

int run(options o) {
    if (o.window == 0 || o.window > max_window)
        throw std::runtime_error("--window must be 1 to " + std::to_string(max_window) + ".");
    target t = prepare(o);
    if (o.server_pid == 0 && t.access && t.access->layout)
        if (auto running = instance::read_runtime(*t.access->layout); running && running->pid > 0)
            o.server_pid = static_cast<int>(running->pid);
    shared_state st{o};
    st.payload_filler.assign(std::max<std::size_t>(o.payload, 32), 'x');
    st.server_name = t.host;
    runtime::shard_set shards(o.threads);
    std::vector<recorder> recorders(shards.size());
    shards.start();
    fleet f(o, t, st, shards, recorders);
    std::cerr << "bench: connecting " << o.devices << " devices to " << t.host << ":" << t.port
              << (o.plain ? " (plain TCP)" : " (TLS)") << "\n";
    if (o.mode == "idle" || o.mode == "storm") {
        int rc = o.mode == "idle" ? run_idle(o, f, st) : run_storm(o, f, st);
        shards.stop();
        return rc;
    }
    auto connects = f.connect_all(o.connect_parallel, o.connect_rate, false);
    if (connects.accepted < o.devices) {
        std::cerr << "bench: " << connects.accepted << " of " << o.devices
                  << " devices connected; first failure: " << st.first_failure << "\n";
        shards.stop();
        return 1;
    }

    visibility_reader reader(st, o.prefix);
    std::string visible = o.visible == "auto" ? (o.anonymous ? "mqtt" : "stream") : o.visible;
    if (visible == "stream" && t.access) reader.run_stream(*t.access);
    if (visible == "mqtt") reader.run_mqtt(t.host, t.port);

    const double per_device = o.rate > 0 ? o.rate / static_cast<double>(o.devices) : 0;
    auto& devices = f.devices();
    for (std::size_t i = 0; i < devices.size(); ++i) {
        auto offset = per_device > 0 ? std::chrono::nanoseconds(static_cast<std::int64_t>(
                                           1e9 / per_device * i / devices.size()))
                                     : std::chrono::nanoseconds(0);
        devices[i]->begin_publishing(per_device, offset);
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
        for (auto& d : devices) left += d->inflight();
        if (left == 0) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    for (auto& d : devices) d->stop();
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
        {"mode", "telemetry"},
        {"devices", o.devices},
        {"connect", connects.to_json()},
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
    cmd->add_option("--mode", o->mode,
                    "telemetry (default); idle: connect and hold, report the server's memory "
                    "per connection; storm: connect, drop every connection at once, reconnect "
                    "all at once (resuming TLS)")
        ->check(CLI::IsMember({"telemetry", "idle", "storm"}));
    cmd->add_option("--connect-parallel", o->connect_parallel,
                    "Connects in flight at once (default 256)")
        ->check(CLI::PositiveNumber);
    cmd->add_option("--connect-rate", o->connect_rate,
                    "Connects started per second (default: as fast as they are answered)");
    cmd->add_option("--source", o->sources,
                    "Local address to connect from (repeat: devices take them in turn; more "
                    "addresses, more ephemeral ports)");
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
