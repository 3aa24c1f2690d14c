#include "net/connection.hpp"

#include <boost/asio/post.hpp>
#include <spdlog/spdlog.h>

#include <vector>

namespace iothub::net {

namespace {
// How long a connection told to stop may take to say goodbye before its stream is cut.
constexpr auto stop_grace = std::chrono::seconds(2);
// Output kept after it was written, for the next answer; beyond this it is given back.
constexpr std::size_t kept_output_capacity = 1024;
// Reads in a row before other connections of the shard get their turn.
constexpr int reads_per_turn = 8;

// Every connection of a shard reads into its thread's buffer: bytes are handed to the protocol at
// once, so no connection keeps a read buffer between reads.
class read_buffer {
  public:
    static constexpr std::size_t size = 64 * 1024;
    read_buffer() {
        if (!in_use_) {
            in_use_ = owner_ = true;
            if (!shared_) shared_ = std::make_unique<char[]>(size);
            data_ = shared_.get();
        } else {  // a handler that ends up reading another connection in its own call
            own_ = std::make_unique<char[]>(size);
            data_ = own_.get();
        }
    }
    ~read_buffer() {
        if (owner_) in_use_ = false;
    }
    std::span<char> span() { return {data_, size}; }

  private:
    static thread_local std::unique_ptr<char[]> shared_;
    static thread_local bool in_use_;
    std::unique_ptr<char[]> own_;
    char* data_ = nullptr;
    bool owner_ = false;
};
thread_local std::unique_ptr<char[]> read_buffer::shared_;
thread_local bool read_buffer::in_use_ = false;

std::size_t index(direction d) {
    return d == direction::read ? 0 : 1;
}
}  // namespace

connection::connection(std::unique_ptr<net::stream> s, asio::any_io_executor ex,
                       std::function<void(connection*)> on_closed,
                       std::chrono::seconds handshake_timeout)
    : stream_(std::move(s)),
      ex_(std::move(ex)),
      wheel_(timer_wheel::of(ex_)),
      on_closed_(std::move(on_closed)),
      handshake_until_(steady::now() + handshake_timeout) {}

connection::~connection() = default;

void connection::start() {
    reschedule();
    handshake_step();
}

void connection::handshake_step() {
    auto r = stream_->handshake();
    if (r.waiting()) {
        handshake_waits_ = r.wait_for();
        return arm(*handshake_waits_);
    }
    if (r.what != io_result::status::done) {
        spdlog::debug("{} {}: handshake failed: {}", stream_->kind(), stream_->peer(),
                      r.what == io_result::status::closed ? "closed by the peer" : r.error);
        stream_done_ = true;
        return finish();
    }
    open_ = true;
    handshake_until_ = steady::time_point::max();
    handler_->start();
    pump();
}

void connection::wake() {
    pump();
}

void connection::pump() {
    if (finished_ || !open_) return;
    handler_->take_output(out_);
    flush();
    if (finished_) return;
    if (!read_waits_ && !read_posted_ && !stream_done_ && handler_->wants_read()) {
        if (stream_->has_buffered_input()) {
            // TLS may hold records it read ahead (the first packet often arrives with the end of
            // the handshake, or a read stopped for back-pressure): the socket will not say so.
            read_posted_ = true;
            asio::post(ex_, [self = shared_from_this()] {
                self->read_posted_ = false;
                if (self->finished_) return;
                self->read_now();
                self->pump();
            });
        } else {
            read_waits_ = direction::read;
            arm(direction::read);
        }
    }
    reschedule();
    if (handler_->finished() && (sent_ == out_.size() || stream_done_) && !finish_posted_) {
        // Not from inside the handler's own call: it may still be running.
        finish_posted_ = true;
        asio::post(ex_, [self = shared_from_this()] {
            self->finish_posted_ = false;
            if (self->handler_->finished() &&
                (self->sent_ == self->out_.size() || self->stream_done_))
                self->finish();
        });
    }
}

void connection::flush() {
    if (write_waits_ || stream_done_) return;
    while (sent_ < out_.size()) {
        auto r = stream_->write_some(std::span<const char>(out_).subspan(sent_));
        if (r.what == io_result::status::done) {
            sent_ += r.bytes;
            continue;
        }
        if (r.waiting()) {
            write_waits_ = r.wait_for();
            return arm(*write_waits_);
        }
        return lost("connection lost while writing: " + r.error);
    }
    sent_ = 0;
    if (out_.capacity() > kept_output_capacity)
        std::string().swap(out_);
    else
        out_.clear();
}

void connection::read_now() {
    read_buffer buffer;
    for (int i = 0; i < reads_per_turn; ++i) {
        if (finished_ || stream_done_ || !handler_->wants_read()) return;
        auto r = stream_->read_some(buffer.span());
        if (r.what == io_result::status::done) {
            handler_->received(std::string_view(buffer.span().data(), r.bytes));
            // A short read drained the socket; a wait re-checks it anyway.
            if (r.bytes < read_buffer::size && !stream_->has_buffered_input()) break;
            continue;
        }
        if (r.waiting()) {
            read_waits_ = r.wait_for();
            return arm(*read_waits_);
        }
        return lost(r.what == io_result::status::closed ? "connection closed by the client"
                                                        : "connection lost: " + r.error);
    }
}

void connection::arm(direction d) {
    auto& armed = armed_[index(d)];
    if (armed) return;
    armed = true;
    stream_->async_wait(d, [self = shared_from_this(), d](error_code ec) { self->ready(d, ec); });
}

void connection::ready(direction d, error_code ec) {
    armed_[index(d)] = false;
    if (finished_) return;
    if (ec) {
        if (!open_) return finish();
        lost("connection lost: " + ec.message());
        return pump();
    }
    if (!open_) {
        if (handshake_waits_ == d) {
            handshake_waits_.reset();
            handshake_step();
        }
        return;
    }
    if (write_waits_ == d) {
        write_waits_.reset();
        flush();
    }
    if (read_waits_ == d) {
        read_waits_.reset();
        read_now();
    }
    pump();
}

void connection::lost(const std::string& reason) {
    if (stream_done_) return;
    stream_done_ = true;
    out_.clear();
    sent_ = 0;
    if (open_) handler_->stream_ended(reason);
}

void connection::reschedule() {
    auto due = std::min(cut_at_, handshake_until_);
    if (open_) due = std::min(due, handler_->deadline());
    // Moved only when it comes earlier: a keep-alive deadline moves later with every packet, and
    // an entry that fires early finds nothing due and is scheduled again.
    if (due < scheduled_ || !scheduled()) {
        scheduled_ = due;
        wheel_.schedule(*this, due);
    }
}

void connection::expired() {
    scheduled_ = steady::time_point::max();
    if (finished_) return;
    auto self = shared_from_this();
    const auto now = steady::now();
    if (now >= cut_at_) {
        spdlog::debug("{} {}: did not close within the grace period; cut", stream_->kind(),
                      stream_->peer());
        stream_done_ = true;
        return finish();
    }
    if (!open_) {
        if (now >= handshake_until_) {
            spdlog::debug("{} {}: handshake timed out", stream_->kind(), stream_->peer());
            stream_done_ = true;
            return finish();
        }
        return reschedule();
    }
    handler_->on_deadline();
    pump();
}

void connection::finish() {
    if (finished_) return;
    auto self = shared_from_this();  // on_closed_ lets go of the server's reference
    finished_ = true;
    wheel_.cancel(*this);
    if (handler_) handler_->closed();
    stream_->close();  // pending waits end with an error and let go of the connection
    out_.clear();
    if (on_closed_) on_closed_(this);
}

void connection::post(std::function<void(protocol_handler&)> fn) {
    asio::post(ex_, [weak = weak_from_this(), fn = std::move(fn)] {
        auto self = weak.lock();
        if (!self || self->finished_ || !self->open_) return;
        fn(*self->handler_);
        self->pump();
    });
}

void connection::kick(std::string reason) {
    asio::post(ex_, [self = shared_from_this(), reason = std::move(reason)] {
        if (self->finished_) return;
        if (!self->open_) return self->finish();
        self->cut_at_ = std::min(self->cut_at_, steady::now() + stop_grace);
        self->handler_->stop(reason);
        self->pump();
    });
}

// --- the server shell ---------------------------------------------------------------------------

struct device_server::state {
    runtime::shard_set& shards;
    handler_factory factory;
    std::chrono::seconds handshake_timeout;
    mutable std::mutex mutex;
    // The live connections, owned here: between events nothing else holds a connection (an idle
    // one has only a pending wait, a paused one not even that).
    std::map<connection*, std::shared_ptr<connection>> live;
    bool stopping = false;

    state(runtime::shard_set& s, handler_factory f, std::chrono::seconds t)
        : shards(s), factory(std::move(f)), handshake_timeout(t) {}

    std::vector<std::shared_ptr<connection>> snapshot() const {
        std::vector<std::shared_ptr<connection>> out;
        std::lock_guard lock(mutex);
        for (auto& [raw, c] : live) out.push_back(c);
        return out;
    }
};

device_server::device_server(runtime::shard_set& shards, std::string protocol,
                             std::chrono::seconds tls_handshake_timeout, handler_factory factory)
    : state_(std::make_shared<state>(shards, std::move(factory), tls_handshake_timeout)) {
    listeners_ = std::make_unique<stream_listeners>(
        shards, std::move(protocol),
        [weak = std::weak_ptr<state>(state_)](std::unique_ptr<net::stream> st,
                                              asio::any_io_executor ex) {
            // On the stream's own shard (stream_listeners hands it over there), where the
            // connection lives and everything it does (its wheel entry too) happens.
            auto s = weak.lock();
            if (!s) return;
            auto c = std::make_shared<connection>(
                std::move(st), ex,
                [weak](connection* gone) {
                    if (auto alive = weak.lock()) {
                        std::lock_guard lock(alive->mutex);
                        alive->live.erase(gone);
                    }
                },
                s->handshake_timeout);
            c->set_handler(s->factory(*c));
            {
                std::lock_guard lock(s->mutex);
                if (s->stopping) return;
                s->live.emplace(c.get(), c);
            }
            c->start();
        });
}

device_server::~device_server() {
    begin_stop();
}

result<std::uint16_t> device_server::listen(const std::string& address, std::uint16_t port,
                                            std::shared_ptr<asio::ssl::context> tls) {
    return listeners_->listen(address, port, std::move(tls));
}

void device_server::accept_websocket(boost::beast::ssl_stream<boost::beast::tcp_stream> stream,
                                     boost::beast::http::request<boost::beast::http::string_body> r,
                                     std::string subprotocol, std::string early) {
    listeners_->accept_websocket(std::move(stream), std::move(r), std::move(subprotocol),
                                 std::move(early));
}

void device_server::begin_stop() {
    {
        std::lock_guard lock(state_->mutex);
        if (state_->stopping) return;
        state_->stopping = true;
    }
    listeners_->close();
    for (auto& c : state_->snapshot()) c->kick("the hub is shutting down");
}

std::size_t device_server::active_connections() const {
    std::lock_guard lock(state_->mutex);
    return state_->live.size();
}

void device_server::post_to_each(const std::function<void(protocol_handler&)>& fn) {
    for (auto& c : state_->snapshot()) c->post(fn);
}

}  // namespace iothub::net
