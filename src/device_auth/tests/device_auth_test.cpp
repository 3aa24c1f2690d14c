#include "device_auth/device_auth.hpp"

#include "storage/engine.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

namespace iothub::device_auth {
namespace {

class DeviceAuth : public ::testing::Test {
  protected:
    void SetUp() override {
        dev_ = *registry_.put_device(*registry::parse_device(boost::json::parse("{}"), "dev1"), {});
        mod_ = *registry_.put_module(
            *registry::parse_module(boost::json::parse("{}"), "dev1", "mod1"), {});
        std::string print(40, 'A');
        ASSERT_TRUE(registry_.put_device(
            *registry::parse_device(
                boost::json::parse(R"({"authentication":{"x509Thumbprint":{"primaryThumbprint":")" +
                                   print + R"("}}})"),
                "x509dev"),
            {}));
    }
    result<device_principal> sas(std::string device, std::string module, std::string token) {
        return auth_.authenticate({device, module, token, {}}, t0_);
    }
    std::string token(std::string resource, std::string key, std::string skn = {},
                      std::int64_t ttl = 600) {
        return auth::make_sas_token(resource, key, unix_seconds(t0_) + ttl, skn);
    }

    sys_time t0_ = sys_time(std::chrono::seconds(1700000000));
    std::unique_ptr<storage::engine> engine_ = storage::open_memory();
    registry::device_registry registry_{engine_->kv()};
    auth::policy_set policies_{auth::default_policies()};
    auth::host_names hosts_{{"hub.example"}};
    device_authenticator auth_{registry_, policies_, hosts_};
    registry::identity dev_, mod_;
};

TEST_F(DeviceAuth, DeviceKeysPrimaryAndSecondary) {
    for (const auto& key : {dev_.auth.primary_key, dev_.auth.secondary_key}) {
        auto p = sas("dev1", "", token("hub.example/devices/dev1", key));
        ASSERT_TRUE(p) << p.error().message();
        EXPECT_EQ(p->how, device_principal::method::device_key);
        EXPECT_EQ(p->generation_id, dev_.generation_id);
        EXPECT_EQ(p->expires, t0_ + std::chrono::seconds(600));
        EXPECT_EQ(p->key(), "dev1");
    }
}

TEST_F(DeviceAuth, ModulesUseTheirOwnKeys) {
    auto p =
        sas("dev1", "mod1", token("hub.example/devices/dev1/modules/mod1", mod_.auth.primary_key));
    ASSERT_TRUE(p) << p.error().message();
    EXPECT_EQ(p->key(), "dev1/mod1");
    EXPECT_FALSE(
        sas("dev1", "mod1", token("hub.example/devices/dev1/modules/mod1", dev_.auth.primary_key)));
    EXPECT_FALSE(sas("dev1", "", token("hub.example/devices/dev1", mod_.auth.primary_key)))
        << "a module key does not open its device";
}

TEST_F(DeviceAuth, PoliciesNeedDeviceConnect) {
    const auto* device = policies_.find("device");
    auto p = sas("dev1", "", token("hub.example/devices/dev1", device->primary_key, "device"));
    ASSERT_TRUE(p) << p.error().message();
    EXPECT_EQ(p->how, device_principal::method::policy_key);
    EXPECT_NE(p->auth_method().find("\"scope\":\"hub\""), std::string::npos);
    EXPECT_TRUE(sas("dev1", "", token("hub.example/devices", device->primary_key, "device")));
    const auto* svc = policies_.find("service");
    auto no = sas("dev1", "", token("hub.example/devices/dev1", svc->primary_key, "service"));
    ASSERT_FALSE(no);
    EXPECT_NE(no.error().message().find("DeviceConnect"), std::string::npos);
}

TEST_F(DeviceAuth, EveryFailureSaysWhy) {
    auto fails = [&](result<device_principal> r, errc code, std::string_view needle) {
        ASSERT_FALSE(r);
        EXPECT_EQ(r.error().code(), code);
        EXPECT_NE(r.error().message().find(needle), std::string::npos) << r.error().message();
    };
    fails(sas("ghost", "", token("hub.example/devices/ghost", dev_.auth.primary_key)),
          errc::unauthorized, "not registered");
    fails(sas("dev1", "", token("hub.example/devices/dev1", mod_.auth.primary_key)),
          errc::unauthorized, "does not match");
    fails(sas("dev1", "", token("hub.example/devices/dev1", dev_.auth.primary_key, "", -1)),
          errc::unauthorized, "expired");
    fails(sas("dev1", "", token("hub.example/devices/dev2", dev_.auth.primary_key)),
          errc::unauthorized, "does not grant");
    fails(sas("dev1", "", "garbage"), errc::unauthorized, "SharedAccessSignature");
    fails(sas("dev1", "", ""), errc::unauthorized, "No credentials");
    fails(sas("dev1", "ghost",
              token("hub.example/devices/dev1/modules/ghost", dev_.auth.primary_key)),
          errc::unauthorized, "Module 'ghost'");
    ASSERT_TRUE(registry_.put_device(
        *registry::parse_device(boost::json::parse(R"({"status":"disabled"})"), "dev1"),
        registry::if_match::parse("*")));
    fails(sas("dev1", "", token("hub.example/devices/dev1", dev_.auth.primary_key)),
          errc::device_disabled, "disabled");
    // A disabled device's modules are refused too.
    fails(
        sas("dev1", "mod1", token("hub.example/devices/dev1/modules/mod1", mod_.auth.primary_key)),
        errc::device_disabled, "disabled");
}

TEST_F(DeviceAuth, X509ThumbprintsMatchEitherDigestInAnyCase) {
    client_certificate cert{std::string(40, 'a'), std::string(64, 'b'), {}};
    auto p = auth_.authenticate({"x509dev", "", {}, cert}, t0_);
    ASSERT_TRUE(p) << p.error().message();
    EXPECT_EQ(p->how, device_principal::method::x509_thumbprint);
    EXPECT_FALSE(p->expires);
    client_certificate other{std::string(40, 'C'), std::string(64, 'D'), {}};
    EXPECT_FALSE(auth_.authenticate({"x509dev", "", {}, other}, t0_));
    EXPECT_FALSE(auth_.authenticate({"dev1", "", {}, cert}, t0_))
        << "a sas device has no thumbprint";
    EXPECT_FALSE(auth_.authenticate(
        {"x509dev", "", token("hub.example/devices/x509dev", dev_.auth.primary_key), {}}, t0_));
}

TEST(EndsConnections, DeletionDisablingAndCredentialChanges) {
    registry::identity a;
    a.generation_id = "g";
    a.auth.primary_key = "k1";
    auto b = a;
    EXPECT_FALSE(ends_connections({a, b}));
    EXPECT_TRUE(ends_connections({a, std::nullopt}));
    b.status = registry::device_status::disabled;
    EXPECT_TRUE(ends_connections({a, b}));
    b = a;
    b.auth.secondary_key = "k2";
    EXPECT_TRUE(ends_connections({a, b}));
    b = a;
    b.status_reason = "just a note";
    EXPECT_FALSE(ends_connections({a, b}));
    EXPECT_FALSE(ends_connections({std::nullopt, a}));
}

}  // namespace
}  // namespace iothub::device_auth
