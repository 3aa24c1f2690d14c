// A client's X.509 certificate as the TLS layer received it, reduced to what authentication
// needs: the leaf's thumbprints and the chain as presented.
#pragma once

#include <string>
#include <vector>

namespace iothub::auth {

struct client_certificate {
    std::string sha1_hex;                // upper-case hex of the leaf's DER SHA-1
    std::string sha256_hex;              // upper-case hex of the leaf's DER SHA-256
    std::vector<std::string> chain_der;  // leaf first, then what the client sent with it
};

}  // namespace iothub::auth
