// The development PKI a zero-configuration hub makes for itself: a CA that users trust once, and a
// server certificate it signs for the hub's names. Both live in <data dir>/tls/.
//
// The CA is made once and kept. The server certificate is (re)issued whenever it is missing, does
// not cover every configured name, or expires within 30 days, so changing --hostname just works.
#pragma once

#include "common/error.hpp"

#include <filesystem>
#include <string>
#include <vector>

namespace iothub::tls {

struct dev_ca_files {
    std::filesystem::path ca_cert;      // ca.pem: what clients must trust
    std::filesystem::path ca_key;       // ca.key (0600)
    std::filesystem::path server_cert;  // server.pem
    std::filesystem::path server_key;   // server.key (0600)
    bool issued_server_cert = false;    // true when this call made a new server certificate
    bool created_ca = false;
};

// `names` are DNS names or IP literals; localhost, 127.0.0.1 and ::1 are always added.
result<dev_ca_files> ensure_dev_certificates(const std::filesystem::path& dir,
                                             const std::vector<std::string>& names);

// The DNS names and IP addresses (as text) in a PEM certificate's subjectAltName.
result<std::vector<std::string>> certificate_names(const std::filesystem::path& pem);

}  // namespace iothub::tls
