#include "tls/dev_ca.hpp"

#include "common/encoding.hpp"

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <arpa/inet.h>
#include <cstdio>
#include <memory>
#include <optional>
#include <sys/stat.h>

namespace iothub::tls {
namespace {

template <auto Free>
struct deleter {
    template <class T>
    void operator()(T* p) const {
        Free(p);
    }
};
using pkey_ptr = std::unique_ptr<EVP_PKEY, deleter<EVP_PKEY_free>>;
using x509_ptr = std::unique_ptr<X509, deleter<X509_free>>;
using bio_ptr = std::unique_ptr<BIO, deleter<BIO_free_all>>;
using names_ptr = std::unique_ptr<GENERAL_NAMES, deleter<GENERAL_NAMES_free>>;

constexpr long ca_days = 3650;
constexpr long server_days = 825;
constexpr long renew_before_days = 30;

error pki_error(const std::string& what) {
    return error(errc::server_error, "TLS setup: " + what);
}

pkey_ptr new_key() {
    return pkey_ptr(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
}

// IP literals in canonical text ("::1", never "0:0:0:0:0:0:0:1"), so names compare as text.
std::optional<std::string> canonical_ip(const std::string& name) {
    unsigned char addr[16];
    char text[INET6_ADDRSTRLEN];
    if (inet_pton(AF_INET, name.c_str(), addr) == 1)
        return std::string(inet_ntop(AF_INET, addr, text, sizeof text));
    if (inet_pton(AF_INET6, name.c_str(), addr) == 1)
        return std::string(inet_ntop(AF_INET6, addr, text, sizeof text));
    return std::nullopt;
}

bool is_ip_literal(const std::string& name) {
    return canonical_ip(name).has_value();
}

bool add_ext(X509* cert, X509* issuer, int nid, const std::string& value) {
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
    if (!ext) return false;
    bool ok = X509_add_ext(cert, ext, -1) == 1;
    X509_EXTENSION_free(ext);
    return ok;
}

x509_ptr new_cert(EVP_PKEY* subject_key, const std::string& cn, long days) {
    x509_ptr cert(X509_new());
    X509_set_version(cert.get(), 2);
    unsigned char serial[16];
    RAND_bytes(serial, sizeof serial);
    serial[0] &= 0x7f;  // positive
    BIGNUM* bn = BN_bin2bn(serial, sizeof serial, nullptr);
    BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert.get()));
    BN_free(bn);
    X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600);  // tolerate small clock skew
    X509_gmtime_adj(X509_getm_notAfter(cert.get()), days * 86400);
    X509_set_pubkey(cert.get(), subject_key);
    X509_NAME* name = X509_get_subject_name(cert.get());
    X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8,
                               reinterpret_cast<const unsigned char*>("iothub"), -1, -1, 0);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                               reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
    return cert;
}

result<void> write_file(const std::filesystem::path& path, const std::string& text, bool secret) {
    auto tmp = path;
    tmp += ".tmp";
    FILE* f = std::fopen(tmp.c_str(), "wb");
    if (!f) return pki_error("cannot write " + tmp.string());
    if (secret) ::chmod(tmp.c_str(), 0600);
    bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
    ok = std::fflush(f) == 0 && ok;
    std::fclose(f);
    if (!ok) return pki_error("cannot write " + tmp.string());
    std::error_code ec;
    std::filesystem::rename(tmp, path, ec);
    if (ec) return pki_error("cannot rename " + tmp.string() + ": " + ec.message());
    return {};
}

std::string pem_of(X509* cert) {
    bio_ptr bio(BIO_new(BIO_s_mem()));
    PEM_write_bio_X509(bio.get(), cert);
    char* data = nullptr;
    long len = BIO_get_mem_data(bio.get(), &data);
    return std::string(data, static_cast<std::size_t>(len));
}

std::string pem_of(EVP_PKEY* key) {
    bio_ptr bio(BIO_new(BIO_s_mem()));
    PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr);
    char* data = nullptr;
    long len = BIO_get_mem_data(bio.get(), &data);
    return std::string(data, static_cast<std::size_t>(len));
}

x509_ptr read_cert(const std::filesystem::path& path) {
    bio_ptr bio(BIO_new_file(path.c_str(), "r"));
    if (!bio) return nullptr;
    return x509_ptr(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
}

pkey_ptr read_key(const std::filesystem::path& path) {
    bio_ptr bio(BIO_new_file(path.c_str(), "r"));
    if (!bio) return nullptr;
    return pkey_ptr(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
}

std::vector<std::string> names_of(X509* cert) {
    std::vector<std::string> out;
    names_ptr names(static_cast<GENERAL_NAMES*>(
        X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr)));
    if (!names) return out;
    for (int i = 0; i < sk_GENERAL_NAME_num(names.get()); ++i) {
        const GENERAL_NAME* n = sk_GENERAL_NAME_value(names.get(), i);
        if (n->type == GEN_DNS) {
            const auto* s = n->d.dNSName;
            out.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                             static_cast<std::size_t>(ASN1_STRING_length(s)));
        } else if (n->type == GEN_IPADD) {
            const auto* ip = n->d.iPAddress;
            char text[INET6_ADDRSTRLEN];
            int len = ASN1_STRING_length(ip);
            if ((len == 4 || len == 16) && inet_ntop(len == 4 ? AF_INET : AF_INET6,
                                                     ASN1_STRING_get0_data(ip), text, sizeof text))
                out.emplace_back(text);
        }
    }
    return out;
}

bool server_cert_usable(const std::filesystem::path& cert_path, X509* ca,
                        const std::vector<std::string>& wanted) {
    x509_ptr cert = read_cert(cert_path);
    if (!cert) return false;
    EVP_PKEY* ca_pub = X509_get0_pubkey(ca);
    if (!ca_pub || X509_verify(cert.get(), ca_pub) != 1) return false;  // signed by another CA
    if (X509_cmp_time(X509_get0_notAfter(cert.get()), nullptr) <= 0) return false;
    time_t soon = time(nullptr) + renew_before_days * 86400;
    if (X509_cmp_time(X509_get0_notAfter(cert.get()), &soon) <= 0) return false;
    auto have = names_of(cert.get());
    for (const auto& n : wanted) {
        const std::string want = canonical_ip(n).value_or(n);
        if (std::none_of(have.begin(), have.end(),
                         [&](const std::string& h) { return iequals(h, want); }))
            return false;
    }
    return true;
}

}  // namespace

result<std::vector<std::string>> certificate_names(const std::filesystem::path& pem) {
    x509_ptr cert = read_cert(pem);
    if (!cert) return pki_error("cannot read certificate " + pem.string());
    return names_of(cert.get());
}

result<dev_ca_files> ensure_dev_certificates(const std::filesystem::path& dir,
                                             const std::vector<std::string>& names) {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) return pki_error("cannot create " + dir.string() + ": " + ec.message());
    ::chmod(dir.c_str(), 0700);

    dev_ca_files files{dir / "ca.pem", dir / "ca.key", dir / "server.pem", dir / "server.key"};
    std::vector<std::string> wanted = names;
    for (const char* n : {"localhost", "127.0.0.1", "::1"})
        if (std::find(wanted.begin(), wanted.end(), n) == wanted.end()) wanted.emplace_back(n);

    x509_ptr ca = read_cert(files.ca_cert);
    pkey_ptr ca_key = read_key(files.ca_key);
    if (!ca || !ca_key) {
        ca_key = new_key();
        if (!ca_key) return pki_error("cannot generate the CA key");
        ca = new_cert(ca_key.get(), "iothub development CA", ca_days);
        X509_set_issuer_name(ca.get(), X509_get_subject_name(ca.get()));
        if (!add_ext(ca.get(), ca.get(), NID_basic_constraints, "critical,CA:TRUE,pathlen:0") ||
            !add_ext(ca.get(), ca.get(), NID_key_usage, "critical,keyCertSign,cRLSign") ||
            !add_ext(ca.get(), ca.get(), NID_subject_key_identifier, "hash"))
            return pki_error("cannot build the CA certificate");
        if (!X509_sign(ca.get(), ca_key.get(), EVP_sha256()))
            return pki_error("cannot sign the CA");
        if (auto r = write_file(files.ca_key, pem_of(ca_key.get()), true); !r) return r.error();
        if (auto r = write_file(files.ca_cert, pem_of(ca.get()), false); !r) return r.error();
        files.created_ca = true;
    }

    if (files.created_ca || !server_cert_usable(files.server_cert, ca.get(), wanted)) {
        pkey_ptr key = new_key();
        if (!key) return pki_error("cannot generate the server key");
        x509_ptr cert = new_cert(key.get(), wanted.front(), server_days);
        X509_set_issuer_name(cert.get(), X509_get_subject_name(ca.get()));
        std::string san;
        for (const auto& n : wanted)
            san += (san.empty() ? "" : ",") + std::string(is_ip_literal(n) ? "IP:" : "DNS:") + n;
        if (!add_ext(cert.get(), ca.get(), NID_basic_constraints, "critical,CA:FALSE") ||
            !add_ext(cert.get(), ca.get(), NID_key_usage,
                     "critical,digitalSignature,keyEncipherment") ||
            !add_ext(cert.get(), ca.get(), NID_ext_key_usage, "serverAuth") ||
            !add_ext(cert.get(), ca.get(), NID_subject_key_identifier, "hash") ||
            !add_ext(cert.get(), ca.get(), NID_authority_key_identifier, "keyid:always") ||
            !add_ext(cert.get(), ca.get(), NID_subject_alt_name, san))
            return pki_error("cannot build the server certificate for " + san);
        if (!X509_sign(cert.get(), ca_key.get(), EVP_sha256()))
            return pki_error("cannot sign the server certificate");
        if (auto r = write_file(files.server_key, pem_of(key.get()), true); !r) return r.error();
        if (auto r = write_file(files.server_cert, pem_of(cert.get()), false); !r) return r.error();
        files.issued_server_cert = true;
    }
    return files;
}

}  // namespace iothub::tls
