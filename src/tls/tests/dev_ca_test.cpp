#include "tls/dev_ca.hpp"

#include "common/crypto.hpp"
#include "common/encoding.hpp"

#include <gtest/gtest.h>
#include <openssl/pem.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <sys/stat.h>

namespace iothub::tls {
namespace {

class DevCa : public ::testing::Test {
  protected:
    void TearDown() override { std::filesystem::remove_all(dir_); }

    static X509* load(const std::filesystem::path& p) {
        FILE* f = std::fopen(p.c_str(), "r");
        X509* c = PEM_read_X509(f, nullptr, nullptr, nullptr);
        std::fclose(f);
        return c;
    }
    // Verifies the server certificate against the CA the way a TLS client would, with hostname.
    static bool verifies(const dev_ca_files& f, const std::string& host) {
        X509* ca = load(f.ca_cert);
        X509* server = load(f.server_cert);
        X509_STORE* store = X509_STORE_new();
        X509_STORE_add_cert(store, ca);
        X509_STORE_CTX* ctx = X509_STORE_CTX_new();
        X509_STORE_CTX_init(ctx, store, server, nullptr);
        X509_VERIFY_PARAM* param = X509_STORE_CTX_get0_param(ctx);
        X509_VERIFY_PARAM_set_purpose(param, X509_PURPOSE_SSL_SERVER);
        if (host.find(':') != std::string::npos ||
            std::isdigit(static_cast<unsigned char>(host[0])))
            X509_VERIFY_PARAM_set1_ip_asc(param, host.c_str());
        else
            X509_VERIFY_PARAM_set1_host(param, host.c_str(), 0);
        bool ok = X509_verify_cert(ctx) == 1;
        X509_STORE_CTX_free(ctx);
        X509_STORE_free(store);
        X509_free(server);
        X509_free(ca);
        return ok;
    }

    std::filesystem::path dir_ =
        std::filesystem::temp_directory_path() / ("iothub-tls-" + hex_encode(random_bytes(6)));
};

TEST_F(DevCa, FirstRunMakesACaAndAServerCertForEveryName) {
    auto f = ensure_dev_certificates(dir_, {"hub.example"});
    ASSERT_TRUE(f) << f.error().message();
    EXPECT_TRUE(f->created_ca);
    EXPECT_TRUE(f->issued_server_cert);
    for (auto host : {"hub.example", "localhost", "127.0.0.1", "::1"})
        EXPECT_TRUE(verifies(*f, host)) << host;
    EXPECT_FALSE(verifies(*f, "other.example"));
    struct stat st {};
    ASSERT_EQ(::stat(f->ca_key.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u) << "private keys are owner-only";
    ASSERT_EQ(::stat(f->server_key.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST_F(DevCa, LaterRunsReuseAndNewNamesReissueUnderTheSameCa) {
    ASSERT_TRUE(ensure_dev_certificates(dir_, {"hub.example"}));
    auto again = ensure_dev_certificates(dir_, {"hub.example"});
    ASSERT_TRUE(again);
    EXPECT_FALSE(again->created_ca);
    EXPECT_FALSE(again->issued_server_cert);

    auto renamed = ensure_dev_certificates(dir_, {"new.example", "alias.example"});
    ASSERT_TRUE(renamed);
    EXPECT_FALSE(renamed->created_ca) << "clients keep trusting the same CA";
    EXPECT_TRUE(renamed->issued_server_cert);
    EXPECT_TRUE(verifies(*renamed, "new.example"));
    EXPECT_TRUE(verifies(*renamed, "alias.example"));
    auto names = certificate_names(renamed->server_cert);
    ASSERT_TRUE(names);
    EXPECT_NE(std::find(names->begin(), names->end(), "alias.example"), names->end());
}

TEST_F(DevCa, AServerCertFromAnotherCaIsReplaced) {
    ASSERT_TRUE(ensure_dev_certificates(dir_, {"hub.example"}));
    std::filesystem::remove(dir_ / "ca.pem");
    std::filesystem::remove(dir_ / "ca.key");
    auto f = ensure_dev_certificates(dir_, {"hub.example"});
    ASSERT_TRUE(f);
    EXPECT_TRUE(f->created_ca);
    EXPECT_TRUE(f->issued_server_cert);
    EXPECT_TRUE(verifies(*f, "hub.example"));
}

}  // namespace
}  // namespace iothub::tls
