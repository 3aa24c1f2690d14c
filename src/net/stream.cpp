#include "net/stream.hpp"

#include "tls/context.hpp"

#include <boost/asio/bind_allocator.hpp>
#include <boost/asio/post.hpp>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include <cerrno>
#include <cstring>
#include <mutex>
#include <set>
#include <sys/socket.h>

namespace iothub::net {

std::string endpoint_text(const tcp::socket& s) {
    error_code ec;
    auto ep = s.remote_endpoint(ec);
    return ec ? std::string("?") : ep.address().to_string() + ":" + std::to_string(ep.port());
}

std::string_view intern_kind(std::string_view kind) {
    static std::mutex mutex;
    static std::set<std::string, std::less<>> names;
    std::lock_guard lock(mutex);
    auto it = names.find(kind);
    if (it == names.end()) it = names.emplace(kind).first;
    return *it;
}

namespace {

auto asio_wait(direction d) {
    return d == direction::read ? tcp::socket::wait_read : tcp::socket::wait_write;
}

// The pending readiness wait is all an idle connection keeps in the reactor. Asio's default
// handler allocator recycles blocks per thread and hands a wait whatever block is cached, often
// one several times its size left by a larger operation (a few hundred bytes per idle
// connection); this one allocates what the operation needs.
template <class T>
struct exact_allocator {
    using value_type = T;
    exact_allocator() = default;
    template <class U>
    exact_allocator(const exact_allocator<U>&) noexcept {}
    T* allocate(std::size_t n) { return static_cast<T*>(::operator new(n * sizeof(T))); }
    void deallocate(T* p, std::size_t n) noexcept { ::operator delete(p, n * sizeof(T)); }
    template <class U>
    bool operator==(const exact_allocator<U>&) const noexcept {
        return true;
    }
};

// --- TCP ---

// What TCP and TLS streams share: the non-blocking socket, its readiness waits, and the names for
// logs.
class socket_stream : public stream {
  public:
    socket_stream(tcp::socket s, std::string_view kind)
        : socket_(std::move(s)), peer_(endpoint_text(socket_)), kind_(kind) {
        error_code ec;
        socket_.non_blocking(true, ec);
    }
    void async_wait(direction d, std::function<void(error_code)> ready) override {
        socket_.async_wait(asio_wait(d),
                           asio::bind_allocator(exact_allocator<void>(), std::move(ready)));
    }
    std::string peer() const override { return peer_; }
    std::string_view kind() const override { return kind_; }

  protected:
    void close_socket() {
        error_code ec;
        socket_.shutdown(tcp::socket::shutdown_both, ec);
        socket_.close(ec);
    }

    tcp::socket socket_;

  private:
    std::string peer_;
    std::string_view kind_;
};

class tcp_stream final : public socket_stream {
  public:
    using socket_stream::socket_stream;

    io_result read_some(std::span<char> into) override {
        error_code ec;
        auto n = socket_.read_some(asio::buffer(into.data(), into.size()), ec);
        if (!ec) return io_result::done(n);
        if (ec == asio::error::would_block) return io_result::wait(direction::read);
        if (ec == asio::error::eof) return {io_result::status::closed, 0, {}};
        return io_result::failure(ec.message());
    }
    io_result write_some(std::span<const char> from) override {
        error_code ec;
        auto n = socket_.write_some(asio::buffer(from.data(), from.size()), ec);
        if (!ec) return io_result::done(n);
        if (ec == asio::error::would_block) return io_result::wait(direction::write);
        return io_result::failure(ec.message());
    }
    void close() override { close_socket(); }
};

// --- TLS ---

// OpenSSL's own socket BIO writes with write(2), which raises SIGPIPE on a connection the peer
// reset; this one sends with MSG_NOSIGNAL, so no process-wide signal setting is needed.
int bio_write(BIO* b, const char* data, int len) {
    BIO_clear_retry_flags(b);
    auto n = ::send(BIO_get_fd(b, nullptr), data, static_cast<std::size_t>(len), MSG_NOSIGNAL);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        BIO_set_retry_write(b);
    return static_cast<int>(n);
}

int bio_read(BIO* b, char* data, int len) {
    BIO_clear_retry_flags(b);
    auto n = ::recv(BIO_get_fd(b, nullptr), data, static_cast<std::size_t>(len), 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) BIO_set_retry_read(b);
    return static_cast<int>(n);
}

int bio_puts(BIO* b, const char* s) {
    return bio_write(b, s, static_cast<int>(std::strlen(s)));
}

// The rest (the descriptor, flush) is the socket BIO's. Reads never flag EOF, so a peer that
// closes without close_notify reads as closed, not as a truncation error.
BIO_METHOD* socket_method() {
    static BIO_METHOD* method = [] {
        const BIO_METHOD* base = BIO_s_socket();
        BIO_METHOD* m = BIO_meth_new(
            BIO_get_new_index() | BIO_TYPE_SOURCE_SINK | BIO_TYPE_DESCRIPTOR, "iothub socket");
        BIO_meth_set_write(m, bio_write);
        BIO_meth_set_read(m, bio_read);
        BIO_meth_set_puts(m, bio_puts);
        BIO_meth_set_ctrl(m, BIO_meth_get_ctrl(base));
        BIO_meth_set_create(m, BIO_meth_get_create(base));
        BIO_meth_set_destroy(m, BIO_meth_get_destroy(base));
        return m;
    }();
    return method;
}

std::string openssl_error(const char* what) {
    std::string out = what;
    while (auto e = ERR_get_error()) {
        char buf[256];
        ERR_error_string_n(e, buf, sizeof buf);
        out += ": ";
        out += buf;
    }
    return out;
}

class tls_stream final : public socket_stream {
  public:
    tls_stream(tcp::socket s, asio::ssl::context& ctx, tls_role role, std::string_view kind,
               const std::string& server_name, SSL_SESSION* session)
        : socket_stream(std::move(s), kind) {
        ssl_ = SSL_new(ctx.native_handle());
        if (!ssl_) return;
        BIO* bio = BIO_new(socket_method());
        BIO_set_fd(bio, socket_.native_handle(), BIO_NOCLOSE);
        SSL_set_bio(ssl_, bio, bio);
        // Record buffers exist only while a record is in flight: an idle connection holds none.
        // Reading ahead takes a record's header and body in one recv instead of two.
        SSL_set_mode(ssl_, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                               SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
        SSL_set_read_ahead(ssl_, 1);
        if (role == tls_role::server) {
            SSL_set_accept_state(ssl_);
        } else {
            SSL_set_connect_state(ssl_);
            if (!server_name.empty()) {
                SSL_set_tlsext_host_name(ssl_, server_name.c_str());
                SSL_set1_host(ssl_, server_name.c_str());
            }
            if (session) SSL_set_session(ssl_, session);
        }
    }
    // Takes over `ssl`, established by another stack whose buffers hold nothing more of it: the
    // session continues on the socket itself.
    tls_stream(tcp::socket s, SSL* ssl, std::string_view kind)
        : socket_stream(std::move(s), kind), ssl_(ssl), established_(true) {
        BIO* bio = BIO_new(socket_method());
        BIO_set_fd(bio, socket_.native_handle(), BIO_NOCLOSE);
        SSL_set_bio(ssl_, bio, bio);  // frees what the other stack read and wrote through
        SSL_set_mode(ssl_, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                               SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
        SSL_set_read_ahead(ssl_, 1);
    }
    ~tls_stream() override {
        if (ssl_) SSL_free(ssl_);
    }

    io_result handshake() override {
        if (!ssl_) return io_result::failure("TLS: no memory");
        ERR_clear_error();
        int r = SSL_do_handshake(ssl_);
        if (r == 1) {
            established_ = true;
            return io_result::done();
        }
        return outcome(r, "TLS handshake");
    }
    io_result read_some(std::span<char> into) override {
        ERR_clear_error();
        std::size_t n = 0;
        int r = SSL_read_ex(ssl_, into.data(), into.size(), &n);
        if (r == 1) return io_result::done(n);
        return outcome(r, "TLS read");
    }
    io_result write_some(std::span<const char> from) override {
        ERR_clear_error();
        std::size_t n = 0;
        int r = SSL_write_ex(ssl_, from.data(), from.size(), &n);
        if (r == 1) return io_result::done(n);
        return outcome(r, "TLS write");
    }
    bool has_buffered_input() const override { return ssl_ && SSL_has_pending(ssl_) == 1; }
    void close() override {
        if (ssl_ && established_ && !broken_) {
            // One close_notify if the socket takes it now; nobody waits for the peer's.
            ERR_clear_error();
            SSL_shutdown(ssl_);
            ERR_clear_error();
        }
        close_socket();
    }
    std::optional<auth::client_certificate> client_certificate() override {
        return ssl_ ? tls::peer_certificate(ssl_) : std::nullopt;
    }

    SSL* native() { return ssl_; }

  private:
    io_result outcome(int r, const char* what) {
        switch (SSL_get_error(ssl_, r)) {
            case SSL_ERROR_WANT_READ:
                return io_result::wait(direction::read);
            case SSL_ERROR_WANT_WRITE:
                return io_result::wait(direction::write);
            case SSL_ERROR_ZERO_RETURN:
                return {io_result::status::closed, 0, {}};
            case SSL_ERROR_SYSCALL: {
                broken_ = true;
                const int e = errno;
                if (ERR_peek_error() == 0 && (r == 0 || e == 0))
                    return {io_result::status::closed, 0, {}};  // EOF without close_notify
                if (ERR_peek_error() != 0) return io_result::failure(openssl_error(what));
                return io_result::failure(std::string(what) + ": " + std::strerror(e));
            }
            default:
                broken_ = true;
                return io_result::failure(openssl_error(what));
        }
    }

    SSL* ssl_ = nullptr;
    bool established_ = false;
    bool broken_ = false;  // after a fatal error OpenSSL must not be asked to shut down
};

}  // namespace

std::unique_ptr<stream> make_tcp_stream(tcp::socket s, std::string_view kind) {
    return std::make_unique<tcp_stream>(std::move(s), intern_kind(kind));
}

std::unique_ptr<stream> make_tls_stream(tcp::socket s, asio::ssl::context& ctx, tls_role role,
                                        std::string_view kind, const std::string& server_name,
                                        SSL_SESSION* session) {
    return std::make_unique<tls_stream>(std::move(s), ctx, role, intern_kind(kind), server_name,
                                        session);
}

SSL_SESSION* tls_session_of(stream& s) {
    auto* t = dynamic_cast<tls_stream*>(&s);
    return t && t->native() ? SSL_get1_session(t->native()) : nullptr;
}

bool tls_resumed(stream& s) {
    auto* t = dynamic_cast<tls_stream*>(&s);
    return t && t->native() && SSL_session_reused(t->native()) == 1;
}

std::unique_ptr<stream> adopt_tls_stream(tcp::socket s, SSL* ssl, std::string_view kind) {
    return std::make_unique<tls_stream>(std::move(s), ssl, intern_kind(kind));
}

}  // namespace iothub::net
