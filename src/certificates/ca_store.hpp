// CA certificates registered with the hub, for devices that authenticate with X.509 certificates
// signed by a CA (authentication type certificateAuthority).
//
// A CA is registered unverified and becomes trusted once its owner proves possession of its
// private key: the hub issues a random verification code, and the owner answers with a
// certificate whose subject CN is that code, signed by the CA. (A CA may also be uploaded as
// already verified, as Azure allows.) Only verified CAs are in the trust store that device
// certificate chains are checked against.
//
// State lives in the kv store ("ca/<name>"); the in-memory trust store is rebuilt after every
// change. Thread safety: all methods may be called concurrently; writes block on storage.
#pragma once

#include "auth/client_certificate.hpp"
#include "common/error.hpp"
#include "common/time.hpp"
#include "storage/kv_store.hpp"

#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace iothub::certificates {

struct ca_certificate {
    std::string name;
    std::string pem;
    std::string subject;
    std::string thumbprint;  // upper-case hex SHA-1, as Azure shows it
    sys_time not_before, not_after;
    bool verified = false;
    std::string verification_code;  // pending proof of possession
    sys_time created, updated;
    std::uint64_t version = 0;
};

// What Azure shows of a certificate (the provisioning service's X509CertificateInfo).
struct certificate_info {
    std::string subject_name, issuer_name;
    std::string sha1_thumbprint, sha256_thumbprint;  // upper-case hex
    std::string serial_number;                       // upper-case hex
    sys_time not_before, not_after;
    int version = 3;
    std::string common_name;
};
// `text` is PEM or Base64 DER; errc::argument_invalid when it is not a certificate.
result<certificate_info> describe_certificate(const std::string& text);

// Verifies a presented chain (leaf first) up to one of `anchors` (PEM or Base64 DER; an
// intermediate may be one) and returns the leaf's CN; errc::unauthorized saying why not
// (expired, not signed by them, ...).
result<std::string> verify_chain_to(const auth::client_certificate& presented,
                                    const std::vector<std::string>& anchors);

class ca_store {
  public:
    explicit ca_store(storage::kv_store& kv);
    ~ca_store();

    // Reads every registered CA and builds the trust store; call once at start-up.
    result<void> load();

    // Creates or replaces `name` with a certificate given as PEM or Base64 DER. `etag`, when
    // given, must match the current version (errc::precondition_failed).
    result<ca_certificate> put(const std::string& name, const std::string& certificate,
                               bool verified, const std::optional<std::string>& etag);
    result<ca_certificate> get(const std::string& name);
    result<std::vector<ca_certificate>> list();
    result<void> remove(const std::string& name, const std::optional<std::string>& etag);

    result<ca_certificate> generate_verification_code(const std::string& name,
                                                      const std::optional<std::string>& etag);
    // Marks the CA verified if `proof` (PEM or Base64 DER) is signed by it and its subject CN is
    // the pending verification code.
    result<ca_certificate> verify(const std::string& name, const std::string& proof,
                                  const std::optional<std::string>& etag);

    // For device authentication: checks a client's chain against the verified CAs and returns
    // the leaf's subject CN.
    result<std::string> verify_chain(const auth::client_certificate& presented) const;

    static std::string etag_of(const ca_certificate& c);

  private:
    result<ca_certificate> save(ca_certificate c, const std::optional<std::string>& etag);
    void rebuild();

    storage::kv_store& kv_;
    mutable std::mutex mutex_;
    struct trust;
    std::shared_ptr<trust> trust_;
};

}  // namespace iothub::certificates
