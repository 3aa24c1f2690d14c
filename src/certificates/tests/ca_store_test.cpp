#include "certificates/ca_store.hpp"

#include "common/crypto.hpp"
#include "common/encoding.hpp"
#include "storage/engine.hpp"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

namespace iothub::certificates {
namespace {

// A small certificate factory for the tests.
struct issued {
    EVP_PKEY* key = nullptr;
    X509* cert = nullptr;
    issued() = default;
    issued(const issued&) = delete;
    issued(issued&& o) noexcept : key(o.key), cert(o.cert) {
        o.key = nullptr;
        o.cert = nullptr;
    }
    ~issued() {
        EVP_PKEY_free(key);
        X509_free(cert);
    }
    std::string pem() const {
        BIO* b = BIO_new(BIO_s_mem());
        PEM_write_bio_X509(b, cert);
        char* d = nullptr;
        long n = BIO_get_mem_data(b, &d);
        std::string s(d, static_cast<std::size_t>(n));
        BIO_free(b);
        return s;
    }
    std::string der() const {
        int n = i2d_X509(cert, nullptr);
        std::string s(static_cast<std::size_t>(n), '\0');
        auto* p = reinterpret_cast<unsigned char*>(s.data());
        i2d_X509(cert, &p);
        return s;
    }
};

issued make(const std::string& cn, bool ca, const issued* issuer, long days = 30) {
    issued out;
    out.key = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
    out.cert = X509_new();
    X509_set_version(out.cert, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(out.cert),
                     static_cast<long>(random_bytes(4)[0] & 0x7f) + 1);
    X509_gmtime_adj(X509_getm_notBefore(out.cert), -60);
    X509_gmtime_adj(X509_getm_notAfter(out.cert), days * 86400);
    X509_set_pubkey(out.cert, out.key);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(out.cert), "CN", MBSTRING_UTF8,
                               reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
    X509* issuer_cert = issuer ? issuer->cert : out.cert;
    X509_set_issuer_name(out.cert, X509_get_subject_name(issuer_cert));
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer_cert, out.cert, nullptr, nullptr, 0);
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, NID_basic_constraints,
                                              ca ? "critical,CA:TRUE" : "critical,CA:FALSE");
    X509_add_ext(out.cert, ext, -1);
    X509_EXTENSION_free(ext);
    X509_sign(out.cert, issuer ? issuer->key : out.key, EVP_sha256());
    return out;
}

auth::client_certificate presented(std::initializer_list<const issued*> chain) {
    auth::client_certificate c;
    for (const auto* i : chain) c.chain_der.push_back(i->der());
    c.sha1_hex = hex_encode(sha1(c.chain_der.front()), true);
    c.sha256_hex = hex_encode(sha256(c.chain_der.front()), true);
    return c;
}

class CaStore : public ::testing::Test {
  protected:
    std::unique_ptr<storage::engine> engine_ = storage::open_memory();
    ca_store store_{engine_->kv()};
    issued root_ = make("Test Root", true, nullptr);
};

TEST_F(CaStore, ProofOfPossessionVerifiesACa) {
    auto c = store_.put("root", root_.pem(), false, std::nullopt);
    ASSERT_TRUE(c) << c.error().message();
    EXPECT_FALSE(c->verified);
    EXPECT_EQ(c->subject, "CN=Test Root");
    EXPECT_EQ(c->thumbprint, hex_encode(sha1(root_.der()), true));

    auto device = make("dev1", false, &root_);
    EXPECT_FALSE(store_.verify_chain(presented({&device}))) << "an unverified CA is not trusted";

    EXPECT_FALSE(store_.verify("root", "whatever", std::nullopt)) << "no code issued yet";
    auto coded = store_.generate_verification_code("root", std::nullopt);
    ASSERT_TRUE(coded);
    ASSERT_FALSE(coded->verification_code.empty());
    auto wrong_cn = make("not-the-code", false, &root_);
    EXPECT_FALSE(store_.verify("root", wrong_cn.pem(), std::nullopt));
    auto other_root = make("Other", true, nullptr);
    auto wrong_signer = make(coded->verification_code, false, &other_root);
    EXPECT_FALSE(store_.verify("root", wrong_signer.pem(), std::nullopt));
    auto proof = make(coded->verification_code, false, &root_);
    auto verified = store_.verify("root", proof.pem(), std::nullopt);
    ASSERT_TRUE(verified) << verified.error().message();
    EXPECT_TRUE(verified->verified);

    auto cn = store_.verify_chain(presented({&device}));
    ASSERT_TRUE(cn) << cn.error().message();
    EXPECT_EQ(*cn, "dev1");
}

TEST_F(CaStore, IntermediatesPresentedByTheClientAreFollowed) {
    ASSERT_TRUE(store_.put("root", base64_encode(root_.der()), true, std::nullopt))
        << "Base64 DER works too";
    auto intermediate = make("Intermediate", true, &root_);
    auto device = make("dev2", false, &intermediate);
    EXPECT_FALSE(store_.verify_chain(presented({&device}))) << "without the intermediate";
    auto cn = store_.verify_chain(presented({&device, &intermediate}));
    ASSERT_TRUE(cn) << cn.error().message();
    EXPECT_EQ(*cn, "dev2");
}

TEST_F(CaStore, DeletingACaRevokesTrust) {
    ASSERT_TRUE(store_.put("root", root_.pem(), true, std::nullopt));
    auto device = make("dev3", false, &root_);
    ASSERT_TRUE(store_.verify_chain(presented({&device})));
    ASSERT_TRUE(store_.remove("root", std::nullopt));
    EXPECT_FALSE(store_.verify_chain(presented({&device})));
    EXPECT_EQ(store_.get("root").error().code(), errc::not_found);
}

TEST_F(CaStore, RejectsWhatIsNotACaAndHonoursEtags) {
    auto leaf = make("leaf", false, &root_);
    EXPECT_EQ(store_.put("leaf", leaf.pem(), true, std::nullopt).error().code(),
              errc::argument_invalid);
    EXPECT_EQ(store_.put("bad name!", root_.pem(), true, std::nullopt).error().code(),
              errc::argument_invalid);
    EXPECT_EQ(store_.put("x", "not a certificate", true, std::nullopt).error().code(),
              errc::argument_invalid);
    auto c = *store_.put("root", root_.pem(), false, std::nullopt);
    auto stale = ca_store::etag_of(c);
    ASSERT_TRUE(store_.generate_verification_code("root", stale));
    EXPECT_EQ(store_.generate_verification_code("root", stale).error().code(),
              errc::precondition_failed);
    EXPECT_EQ(store_.remove("root", stale).error().code(), errc::precondition_failed);
    EXPECT_EQ(store_.list()->size(), 1u);
}

TEST_F(CaStore, ExpiredDeviceCertificatesAreRefused) {
    ASSERT_TRUE(store_.put("root", root_.pem(), true, std::nullopt));
    auto expired = make("old", false, &root_, -1);
    auto r = store_.verify_chain(presented({&expired}));
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message().find("expired"), std::string::npos) << r.error().message();
}

}  // namespace
}  // namespace iothub::certificates
