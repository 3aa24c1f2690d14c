#include "tls/context.hpp"

#include "common/crypto.hpp"
#include "common/encoding.hpp"

#include <openssl/ssl.h>
#include <openssl/x509.h>

namespace iothub::tls {
namespace ssl = boost::asio::ssl;

result<std::shared_ptr<ssl::context>> make_server_context(const std::filesystem::path& cert_chain,
                                                          const std::filesystem::path& key) {
    auto ctx = std::make_shared<ssl::context>(ssl::context::tls_server);
    ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                     ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1 |
                     ssl::context::single_dh_use);
    boost::system::error_code ec;
    ctx->use_certificate_chain_file(cert_chain.string(), ec);
    if (ec)
        return error(errc::server_error,
                     "Cannot load certificate " + cert_chain.string() + ": " + ec.message());
    ctx->use_private_key_file(key.string(), ssl::context::pem, ec);
    if (ec)
        return error(errc::server_error, "Cannot load key " + key.string() + ": " + ec.message());
    if (SSL_CTX_check_private_key(ctx->native_handle()) != 1)
        return error(errc::server_error,
                     "The TLS key does not match the certificate " + cert_chain.string());
    // Asking for client certificates makes OpenSSL refuse to resume a session (alert 80,
    // "session id context uninitialized") unless the context has a session id context; clients
    // such as Node resume sessions on new connections. A resumed session keeps the client's
    // certificate, so X.509 authentication still sees it.
    static constexpr unsigned char session_context[] = "iothub";
    SSL_CTX_set_session_id_context(ctx->native_handle(), session_context,
                                   sizeof session_context - 1);
    // Resumption is by ticket only: the session travels with the client, encrypted under a key
    // of this process, so the server keeps nothing per session (a server-side cache would hold
    // one entry per connected device). One ticket per handshake is enough for the next connect
    // and costs half the default two.
    SSL_CTX_set_session_cache_mode(ctx->native_handle(), SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(ctx->native_handle(), 1);
    // Ask for a client certificate without demanding one or judging it here: the device's
    // registry entry decides whether it is acceptable (thumbprint or CA chain).
    SSL_CTX_set_verify(ctx->native_handle(), SSL_VERIFY_PEER,
                       [](int, X509_STORE_CTX*) { return 1; });
    return ctx;
}

result<std::shared_ptr<ssl::context>> make_client_context(const std::filesystem::path& ca) {
    auto ctx = std::make_shared<ssl::context>(ssl::context::tls_client);
    boost::system::error_code ec;
    if (ca.empty()) {
        ctx->set_default_verify_paths(ec);
    } else {
        ctx->load_verify_file(ca.string(), ec);
    }
    if (ec)
        return error(errc::argument_invalid, "Cannot load CA " + ca.string() + ": " + ec.message());
    ctx->set_verify_mode(ssl::verify_peer);
    return ctx;
}

std::optional<auth::client_certificate> peer_certificate(SSL* ssl) {
    X509* leaf = SSL_get1_peer_certificate(ssl);
    if (!leaf) return std::nullopt;
    auto der_of = [](X509* c) {
        int n = i2d_X509(c, nullptr);
        std::string der(static_cast<std::size_t>(std::max(n, 0)), '\0');
        auto* p = reinterpret_cast<unsigned char*>(der.data());
        i2d_X509(c, &p);
        return der;
    };
    auth::client_certificate out;
    out.chain_der.push_back(der_of(leaf));
    out.sha1_hex = hex_encode(sha1(out.chain_der.front()), true);
    out.sha256_hex = hex_encode(sha256(out.chain_der.front()), true);
    // On a server the peer chain excludes the leaf.
    if (STACK_OF(X509)* chain = SSL_get_peer_cert_chain(ssl))
        for (int i = 0; i < sk_X509_num(chain); ++i)
            out.chain_der.push_back(der_of(sk_X509_value(chain, i)));
    X509_free(leaf);
    return out;
}

}  // namespace iothub::tls
