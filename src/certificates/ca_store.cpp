#include "certificates/ca_store.hpp"

#include "common/crypto.hpp"
#include "common/encoding.hpp"

#include <boost/json.hpp>
#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

namespace iothub::certificates {
namespace json = boost::json;
namespace {

using x509_ptr = std::unique_ptr<X509, decltype(&X509_free)>;

error invalid(std::string what) {
    return error(errc::argument_invalid, std::move(what));
}

// PEM text, or Base64 DER with or without line breaks.
x509_ptr parse_certificate(const std::string& text) {
    if (text.find("-----BEGIN") != std::string::npos) {
        std::unique_ptr<BIO, decltype(&BIO_free)> bio(
            BIO_new_mem_buf(text.data(), static_cast<int>(text.size())), BIO_free);
        return x509_ptr(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr), X509_free);
    }
    std::string compact;
    for (char c : text)
        if (!std::isspace(static_cast<unsigned char>(c))) compact += c;
    auto der = base64_decode(compact);
    if (!der) return x509_ptr(nullptr, X509_free);
    const auto* p = reinterpret_cast<const unsigned char*>(der->data());
    return x509_ptr(d2i_X509(nullptr, &p, static_cast<long>(der->size())), X509_free);
}

x509_ptr from_der(const std::string& der) {
    const auto* p = reinterpret_cast<const unsigned char*>(der.data());
    return x509_ptr(d2i_X509(nullptr, &p, static_cast<long>(der.size())), X509_free);
}

std::string pem_of(X509* cert) {
    std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), BIO_free);
    PEM_write_bio_X509(bio.get(), cert);
    char* data = nullptr;
    long n = BIO_get_mem_data(bio.get(), &data);
    return std::string(data, static_cast<std::size_t>(n));
}

std::string common_name(X509* cert) {
    char buf[256] = {};
    int n = X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, buf, sizeof buf);
    return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string();
}

std::string subject_text(X509* cert) {
    std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), BIO_free);
    X509_NAME_print_ex(bio.get(), X509_get_subject_name(cert), 0, XN_FLAG_RFC2253);
    char* data = nullptr;
    long n = BIO_get_mem_data(bio.get(), &data);
    return std::string(data, static_cast<std::size_t>(n));
}

sys_time time_of(const ASN1_TIME* t) {
    std::tm tm{};
    ASN1_TIME_to_tm(t, &tm);
    return sys_time(std::chrono::seconds(timegm(&tm)));
}

result<void> check_name(const std::string& name) {
    if (name.empty() || name.size() > 64)
        return invalid("A certificate name has 1 to 64 characters.");
    for (char c : name)
        if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.')
            return invalid("Certificate names use letters, digits and - _ . only.");
    return {};
}

std::string encode(const ca_certificate& c) {
    return json::serialize(json::object{{"name", c.name},
                                        {"pem", c.pem},
                                        {"verified", c.verified},
                                        {"code", c.verification_code},
                                        {"created", format_iso8601(c.created)},
                                        {"updated", format_iso8601(c.updated)}});
}

result<ca_certificate> decode(const std::string& text, std::uint64_t version) {
    boost::system::error_code ec;
    auto v = json::parse(text, ec);
    if (ec || !v.is_object())
        return error(errc::server_error, "A stored CA certificate is corrupt.");
    const auto& o = v.get_object();
    // Read field by field with checks: a corrupt record is an error for this request, never an
    // exception on a server thread.
    auto text_of = [&](std::string_view key) -> std::optional<std::string> {
        const auto* f = o.if_contains(key);
        return f && f->is_string() ? std::optional(std::string(f->get_string())) : std::nullopt;
    };
    const auto* verified = o.if_contains("verified");
    auto name = text_of("name"), pem = text_of("pem"), code = text_of("code");
    if (!name || !pem || !code || !verified || !verified->is_bool())
        return error(errc::server_error, "A stored CA certificate is corrupt.");
    ca_certificate c;
    c.name = std::move(*name);
    c.pem = std::move(*pem);
    c.verified = verified->get_bool();
    c.verification_code = std::move(*code);
    c.created = parse_iso8601(text_of("created").value_or("")).value_or(sys_time{});
    c.updated = parse_iso8601(text_of("updated").value_or("")).value_or(sys_time{});
    c.version = version;
    auto cert = parse_certificate(c.pem);
    if (!cert) return error(errc::server_error, "A stored CA certificate does not parse.");
    c.subject = subject_text(cert.get());
    auto der_len = i2d_X509(cert.get(), nullptr);
    std::string der(static_cast<std::size_t>(der_len), '\0');
    auto* p = reinterpret_cast<unsigned char*>(der.data());
    i2d_X509(cert.get(), &p);
    c.thumbprint = hex_encode(sha1(der), true);
    c.not_before = time_of(X509_get0_notBefore(cert.get()));
    c.not_after = time_of(X509_get0_notAfter(cert.get()));
    return c;
}

error not_found(const std::string& name) {
    return error(errc::not_found, "No CA certificate named '" + name + "'.");
}

}  // namespace

struct ca_store::trust {
    X509_STORE* store = X509_STORE_new();
    ~trust() { X509_STORE_free(store); }
};

result<certificate_info> describe_certificate(const std::string& text) {
    auto cert = parse_certificate(text);
    if (!cert) return invalid("The certificate is neither PEM nor Base64 DER.");
    certificate_info out;
    out.subject_name = subject_text(cert.get());
    {
        std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), BIO_free);
        X509_NAME_print_ex(bio.get(), X509_get_issuer_name(cert.get()), 0, XN_FLAG_RFC2253);
        char* data = nullptr;
        long n = BIO_get_mem_data(bio.get(), &data);
        out.issuer_name.assign(data, static_cast<std::size_t>(n));
    }
    auto digest = [&](const EVP_MD* md) {
        unsigned char buf[EVP_MAX_MD_SIZE];
        unsigned int len = 0;
        X509_digest(cert.get(), md, buf, &len);
        return hex_encode(std::span<const std::uint8_t>(buf, len), true);
    };
    out.sha1_thumbprint = digest(EVP_sha1());
    out.sha256_thumbprint = digest(EVP_sha256());
    if (const ASN1_INTEGER* serial = X509_get0_serialNumber(cert.get())) {
        std::unique_ptr<BIGNUM, decltype(&BN_free)> bn(ASN1_INTEGER_to_BN(serial, nullptr),
                                                       BN_free);
        if (bn) {
            char* hex = BN_bn2hex(bn.get());
            out.serial_number = hex;
            OPENSSL_free(hex);
        }
    }
    out.not_before = time_of(X509_get0_notBefore(cert.get()));
    out.not_after = time_of(X509_get0_notAfter(cert.get()));
    out.version = static_cast<int>(X509_get_version(cert.get())) + 1;
    out.common_name = common_name(cert.get());
    return out;
}

ca_store::ca_store(storage::kv_store& kv) : kv_(kv), trust_(std::make_shared<trust>()) {}
ca_store::~ca_store() = default;

std::string ca_store::etag_of(const ca_certificate& c) {
    return base64_encode(std::to_string(c.version));
}

result<void> ca_store::load() {
    rebuild();
    return {};
}

void ca_store::rebuild() {
    auto fresh = std::make_shared<trust>();
    std::string after;
    for (;;) {
        auto page = kv_.scan("ca/", after, 200);
        if (!page || page->empty()) break;
        for (const auto& e : *page) {
            auto c = decode(e.data.value, e.data.version);
            if (!c || !c->verified) continue;
            if (auto cert = parse_certificate(c->pem))
                X509_STORE_add_cert(fresh->store, cert.get());
        }
        after = page->back().key;
    }
    std::lock_guard lock(mutex_);
    trust_ = std::move(fresh);
}

result<ca_certificate> ca_store::save(ca_certificate c, const std::optional<std::string>& etag) {
    storage::precondition pre = storage::precondition::none();
    if (etag && *etag != "*") {
        std::string bare = *etag;
        if (bare.size() >= 2 && bare.front() == '"') bare = bare.substr(1, bare.size() - 2);
        auto text = base64_decode(bare);
        std::uint64_t v = 0;
        if (!text || text->empty() || (v = std::strtoull(text->c_str(), nullptr, 10)) == 0)
            return error(errc::precondition_failed, "The ETag does not match.");
        pre = storage::precondition::version(v);
    }
    c.updated = now();
    auto v = kv_.put("ca/" + c.name, encode(c), pre);
    if (!v) {
        if (v.error().code() == errc::precondition_failed || v.error().code() == errc::not_found)
            return error(errc::precondition_failed,
                         "The ETag does not match; read the certificate again.");
        return v.error();
    }
    rebuild();
    return get(c.name);
}

result<ca_certificate> ca_store::put(const std::string& name, const std::string& certificate,
                                     bool verified, const std::optional<std::string>& etag) {
    if (auto ok = check_name(name); !ok) return ok.error();
    auto cert = parse_certificate(certificate);
    if (!cert) return invalid("The certificate is neither PEM nor Base64 DER X.509.");
    auto* bc = static_cast<BASIC_CONSTRAINTS*>(
        X509_get_ext_d2i(cert.get(), NID_basic_constraints, nullptr, nullptr));
    const bool is_ca = bc && bc->ca;
    BASIC_CONSTRAINTS_free(bc);
    if (!is_ca)
        return invalid("The certificate is not a CA certificate (basicConstraints CA:TRUE).");
    ca_certificate c;
    c.name = name;
    c.pem = pem_of(cert.get());
    c.verified = verified;
    c.created = now();
    if (auto existing = get(name)) c.created = existing->created;
    return save(std::move(c), etag);
}

result<ca_certificate> ca_store::get(const std::string& name) {
    if (auto ok = check_name(name); !ok) return ok.error();
    auto got = kv_.get("ca/" + name);
    if (!got) return got.error();
    if (!*got) return not_found(name);
    return decode((*got)->value, (*got)->version);
}

result<std::vector<ca_certificate>> ca_store::list() {
    std::vector<ca_certificate> out;
    auto page = kv_.scan("ca/", "", 1000);
    if (!page) return page.error();
    for (const auto& e : *page) {
        auto c = decode(e.data.value, e.data.version);
        if (!c) return c.error();
        out.push_back(std::move(*c));
    }
    return out;
}

result<void> ca_store::remove(const std::string& name, const std::optional<std::string>& etag) {
    auto c = get(name);
    if (!c) return c.error();
    if (etag && *etag != "*" && *etag != "\"*\"" && *etag != etag_of(*c) &&
        *etag != "\"" + etag_of(*c) + "\"")
        return error(errc::precondition_failed,
                     "The ETag does not match; read the certificate again.");
    if (auto r = kv_.remove("ca/" + name, storage::precondition::version(c->version)); !r)
        return r.error().code() == errc::not_found ? not_found(name) : r.error();
    rebuild();
    return {};
}

result<ca_certificate> ca_store::generate_verification_code(
    const std::string& name, const std::optional<std::string>& etag) {
    auto c = get(name);
    if (!c) return c.error();
    c->verification_code = hex_encode(random_bytes(24), true);
    return save(std::move(*c), etag ? etag : std::optional<std::string>(etag_of(*c)));
}

result<ca_certificate> ca_store::verify(const std::string& name, const std::string& proof,
                                        const std::optional<std::string>& etag) {
    auto c = get(name);
    if (!c) return c.error();
    if (c->verification_code.empty())
        return invalid("Generate a verification code for '" + name + "' first.");
    auto leaf = parse_certificate(proof);
    if (!leaf) return invalid("The proof is neither PEM nor Base64 DER X.509.");
    auto ca = parse_certificate(c->pem);
    if (X509_verify(leaf.get(), X509_get0_pubkey(ca.get())) != 1)
        return invalid("The proof certificate is not signed by CA '" + name + "'.");
    if (common_name(leaf.get()) != c->verification_code)
        return invalid("The proof certificate's subject CN is not the verification code.");
    c->verified = true;
    c->verification_code.clear();
    return save(std::move(*c), etag ? etag : std::optional<std::string>(etag_of(*c)));
}

namespace {

// The presented chain (leaf first) verified up to a certificate of `store`; the leaf's CN.
result<std::string> verify_in(X509_STORE* store, const auth::client_certificate& presented,
                              bool partial) {
    if (presented.chain_der.empty()) return error(errc::unauthorized, "No client certificate.");
    auto leaf = from_der(presented.chain_der.front());
    if (!leaf) return error(errc::unauthorized, "The client certificate does not parse.");
    STACK_OF(X509)* untrusted = sk_X509_new_null();
    std::vector<x509_ptr> keep;
    for (std::size_t i = 1; i < presented.chain_der.size(); ++i)
        if (auto c = from_der(presented.chain_der[i])) {
            sk_X509_push(untrusted, c.get());
            keep.push_back(std::move(c));
        }
    X509_STORE_CTX* ctx = X509_STORE_CTX_new();
    X509_STORE_CTX_init(ctx, store, leaf.get(), untrusted);
    X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_CLIENT);
    // An intermediate may be the anchor (a group's signing certificate need not be a root).
    if (partial) X509_STORE_CTX_set_flags(ctx, X509_V_FLAG_PARTIAL_CHAIN);
    const bool ok = X509_verify_cert(ctx) == 1;
    const int why = X509_STORE_CTX_get_error(ctx);
    X509_STORE_CTX_free(ctx);
    sk_X509_free(untrusted);
    if (!ok)
        return error(errc::unauthorized,
                     std::string("The client certificate chain is not trusted: ") +
                         X509_verify_cert_error_string(why) + ".");
    return common_name(leaf.get());
}

}  // namespace

result<std::string> ca_store::verify_chain(const auth::client_certificate& presented) const {
    std::shared_ptr<trust> t;
    {
        std::lock_guard lock(mutex_);
        t = trust_;
    }
    return verify_in(t->store, presented, false);
}

result<std::string> verify_chain_to(const auth::client_certificate& presented,
                                    const std::vector<std::string>& anchors) {
    std::unique_ptr<X509_STORE, decltype(&X509_STORE_free)> store(X509_STORE_new(),
                                                                  X509_STORE_free);
    for (const auto& text : anchors)
        if (auto c = parse_certificate(text)) X509_STORE_add_cert(store.get(), c.get());
    return verify_in(store.get(), presented, true);
}

}  // namespace iothub::certificates
