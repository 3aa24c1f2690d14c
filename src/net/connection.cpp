#include "net/connection.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <spdlog/spdlog.h>

#include <vector>

namespace iothub::net {

namespace {
// How long a connection told to stop may take to say goodbye before its stream is cut.
constexpr auto stop_grace = std::chrono::seconds(2);
// Bytes taken from the stream per read.
constexpr std::size_t read_chunk = 16 * 1024;
}  // namespace

connection::connection(std::unique_ptr<transport> t, asio::any_io_executor ex,
                       std::function<void(connection*)> on_closed)
    : transport_(std::move(t)),
      ex_(ex),
      on_closed_(std::move(on_closed)),
      timer_(ex, steady::time_point::max()),
      resume_(ex, steady::time_point::max()) {}

connection::~connection() = default;

asio::awaitable<void> connection::run() {
    auto self = shared_from_this();
    asio::co_spawn(ex_, timer_loop(self), asio::detached);
    handler_->start();
    wake();
    std::vector<char> in(read_chunk);
    while (!finished_ && !handler_->finished()) {
        if (!handler_->wants_read()) {
            resume_.expires_at(steady::time_point::max());
            co_await resume_.async_wait(as_tuple);
            continue;
        }
        reading_ = true;
        auto [ec, n] = co_await transport_->read_some(asio::buffer(in));
        reading_ = false;
        if (finished_) break;
        if (ec)
            handler_->stream_ended(ec == asio::error::eof ? "connection closed by the client"
                                                          : "connection lost: " + ec.message());
        else
            handler_->received(std::string_view(in.data(), n));
        wake();
    }
}

void connection::wake() {
    if (finished_ || !handler_) return;
    handler_->take_output(out_);
    if (handler_->wants_read()) resume_.cancel();
    // Re-armed only when the deadline moves earlier: a keep-alive deadline moves later with
    // every packet, and re-arming for each would cost a timer cancellation per read. A timer
    // that fires early finds nothing due; the protocol checks its own times.
    const auto due = std::min(handler_->deadline(), cut_at_);
    if (due < armed_) {
        armed_ = due;
        timer_.expires_at(due);  // wakes the timer loop, which waits again with the new time
    }
    if (writing_) return;
    if (!out_.empty()) {
        writing_ = true;
        asio::co_spawn(ex_, write_loop(shared_from_this()), asio::detached);
    } else if (handler_->finished()) {
        // Not from inside the handler's own call: it may still be running.
        asio::post(ex_, [self = shared_from_this()] {
            if (!self->writing_ && self->out_.empty() && self->handler_->finished()) self->finish();
        });
    }
}

asio::awaitable<void> connection::write_loop([[maybe_unused]] std::shared_ptr<connection> self) {
    while (!out_.empty() && !finished_) {
        sending_.clear();
        std::swap(out_, sending_);
        auto ec = co_await transport_->write(asio::buffer(sending_));
        if (ec) {
            out_.clear();
            if (!finished_)
                handler_->stream_ended("connection lost while writing: " + ec.message());
            break;
        }
    }
    writing_ = false;
    if (!finished_) wake();
}

asio::awaitable<void> connection::timer_loop([[maybe_unused]] std::shared_ptr<connection> self) {
    while (!finished_) {
        auto [ec] = co_await timer_.async_wait(as_tuple);
        if (finished_) break;
        if (ec) continue;  // re-armed with another time
        armed_ = steady::time_point::max();
        timer_.expires_at(armed_);
        if (steady::now() >= cut_at_) {
            spdlog::debug("{} {}: did not close within the grace period; cut", transport_->kind(),
                          transport_->peer());
            transport_->abort();
            finish();
            break;
        }
        handler_->on_deadline();
        wake();
    }
}

void connection::finish() {
    if (finished_) return;
    finished_ = true;
    timer_.cancel();
    resume_.cancel();
    handler_->closed();
    if (reading_) {
        transport_->abort();  // a read is pending; nothing more will be sent
    } else {
        asio::co_spawn(
            ex_,
            [self = shared_from_this()]() -> asio::awaitable<void> {
                asio::steady_timer guard(self->ex_, stop_grace);
                guard.async_wait([self](error_code ec) {
                    if (!ec) self->transport_->abort();
                });
                co_await self->transport_->shutdown();
                guard.cancel();
            },
            asio::detached);
    }
    if (on_closed_) on_closed_(this);
}

void connection::post(std::function<void(protocol_handler&)> fn) {
    asio::post(ex_, [weak = weak_from_this(), fn = std::move(fn)] {
        auto self = weak.lock();
        if (!self || self->finished_) return;
        fn(*self->handler_);
        self->wake();
    });
}

void connection::kick(std::string reason) {
    asio::post(ex_, [self = shared_from_this(), reason = std::move(reason)] {
        if (self->finished_) return;
        self->cut_at_ = std::min(self->cut_at_, steady::now() + stop_grace);
        self->handler_->stop(reason);
        self->wake();
    });
}

// --- the server shell ---------------------------------------------------------------------------

struct device_server::state {
    runtime::shard_set& shards;
    handler_factory factory;
    mutable std::mutex mutex;
    std::map<connection*, std::weak_ptr<connection>> live;
    bool stopping = false;

    state(runtime::shard_set& s, handler_factory f) : shards(s), factory(std::move(f)) {}

    std::vector<std::shared_ptr<connection>> snapshot() const {
        std::vector<std::shared_ptr<connection>> out;
        std::lock_guard lock(mutex);
        for (auto& [raw, weak] : live)
            if (auto c = weak.lock()) out.push_back(std::move(c));
        return out;
    }
};

device_server::device_server(runtime::shard_set& shards, std::string protocol,
                             std::chrono::seconds tls_handshake_timeout, handler_factory factory)
    : state_(std::make_shared<state>(shards, std::move(factory))) {
    listeners_ = std::make_unique<stream_listeners>(
        shards, std::move(protocol), tls_handshake_timeout,
        [weak = std::weak_ptr<state>(state_)](std::unique_ptr<transport> t,
                                              asio::any_io_executor ex) {
            auto s = weak.lock();
            if (!s) return;
            auto c = std::make_shared<connection>(std::move(t), ex, [weak](connection* gone) {
                if (auto st = weak.lock()) {
                    std::lock_guard lock(st->mutex);
                    st->live.erase(gone);
                }
            });
            c->set_handler(s->factory(*c));
            {
                std::lock_guard lock(s->mutex);
                if (s->stopping) return;
                s->live.emplace(c.get(), c);
            }
            asio::co_spawn(
                ex, [c]() -> asio::awaitable<void> { co_await c->run(); }, asio::detached);
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
                                     std::string subprotocol) {
    listeners_->accept_websocket(std::move(stream), std::move(r), std::move(subprotocol));
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
