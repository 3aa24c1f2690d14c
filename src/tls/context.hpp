// TLS server contexts for every listener: modern protocol versions only, and the certificate
// either from the development CA or the one the operator configured.
#pragma once

#include "auth/client_certificate.hpp"
#include "common/error.hpp"

#include <boost/asio/ssl/context.hpp>

#include <filesystem>
#include <memory>
#include <optional>

namespace iothub::tls {

// TLS 1.2 and 1.3. Client certificates are requested but not required, so X.509 devices can
// present one while SAS clients connect without.
result<std::shared_ptr<boost::asio::ssl::context>> make_server_context(
    const std::filesystem::path& cert_chain, const std::filesystem::path& key);

// A client context trusting `ca` (empty: the system store), verifying the peer's host name.
result<std::shared_ptr<boost::asio::ssl::context>> make_client_context(
    const std::filesystem::path& ca);

// The certificate a client presented in a completed handshake, if any.
std::optional<auth::client_certificate> peer_certificate(SSL* ssl);

}  // namespace iothub::tls
