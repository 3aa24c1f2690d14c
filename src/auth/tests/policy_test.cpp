#include "auth/policy.hpp"

#include "common/encoding.hpp"

#include <gtest/gtest.h>

namespace iothub::auth {
namespace {

const host_names hosts({"hub.example", "alias.example"});
const sys_time t0 = sys_time(std::chrono::seconds(1700000000));

TEST(Rights, ParseAndPrintAzureNames) {
    auto r = rights::parse("RegistryRead, serviceconnect");
    ASSERT_TRUE(r);
    EXPECT_TRUE(r->has(right::registry_read));
    EXPECT_TRUE(r->has(right::service_connect));
    EXPECT_FALSE(r->has(right::registry_write));
    EXPECT_EQ(r->to_string(), "RegistryRead, ServiceConnect");
    EXPECT_FALSE(rights::parse("RegistryRead, Admin"));
}

TEST(Policies, DefaultsAreAzuresFiveWithDistinctFreshKeys) {
    auto policies = default_policies();
    ASSERT_EQ(policies.size(), 5u);
    EXPECT_EQ(policies[0].name, "iothubowner");
    EXPECT_EQ(policies[0].granted.to_string(),
              "RegistryRead, RegistryWrite, ServiceConnect, DeviceConnect");
    EXPECT_EQ(policies[3].name, "registryRead");
    EXPECT_EQ(policies[3].granted.to_string(), "RegistryRead");
    for (const auto& p : policies) {
        auto k = base64_decode(p.primary_key);
        ASSERT_TRUE(k);
        EXPECT_EQ(k->size(), 32u) << "256-bit keys";
        EXPECT_NE(p.primary_key, p.secondary_key);
    }
    EXPECT_NE(policies[0].primary_key, default_policies()[0].primary_key);
}

class PolicyAuth : public ::testing::Test {
  protected:
    policy_set set{default_policies()};
    std::string token(std::string_view policy, bool secondary = false,
                      std::string_view resource = "hub.example", std::int64_t se = 1700003600) {
        const auto* p = set.find(policy);
        return make_sas_token(resource, secondary ? p->secondary_key : p->primary_key, se, policy);
    }
};

TEST_F(PolicyAuth, AcceptsPrimaryAndSecondaryKeys) {
    for (bool secondary : {false, true}) {
        auto r = set.authenticate(token("iothubowner", secondary), hosts, "/devices/d1",
                                  right::registry_write, t0);
        ASSERT_TRUE(r) << r.error().message();
        EXPECT_EQ(r->policy, "iothubowner");
    }
}

TEST_F(PolicyAuth, EnforcesRights) {
    auto r =
        set.authenticate(token("registryRead"), hosts, "/devices/d1", right::registry_write, t0);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code(), errc::unauthorized);
    EXPECT_NE(r.error().message().find("RegistryWrite"), std::string::npos);
    EXPECT_TRUE(
        set.authenticate(token("registryRead"), hosts, "/devices/d1", right::registry_read, t0));
}

TEST_F(PolicyAuth, RejectsEveryWayATokenCanBeWrong) {
    auto fails = [&](std::string header, std::string_view needle) {
        auto r = set.authenticate(header, hosts, "/devices/d1", right::registry_read, t0);
        ASSERT_FALSE(r) << header;
        EXPECT_NE(r.error().message().find(needle), std::string::npos) << r.error().message();
    };
    fails("", "missing");
    fails("Bearer x", "SharedAccessSignature");
    fails(token("iothubowner", false, "hub.example", 1700000000), "expired");
    fails(token("iothubowner", false, "other.example"), "does not grant");
    fails(token("iothubowner", false, "hub.example/devices/d2"), "does not grant");
    auto forged =
        make_sas_token("hub.example", set.find("service")->primary_key, 1700003600, "iothubowner");
    fails(forged, "does not match");
    fails(make_sas_token("hub.example", set.find("service")->primary_key, 1700003600, "nobody"),
          "Unknown shared access policy");
    fails(make_sas_token("hub.example/devices/d1", set.find("service")->primary_key, 1700003600),
          "names no policy");
}

TEST_F(PolicyAuth, AliasesAndScopedTokensWork) {
    EXPECT_TRUE(set.authenticate(token("iothubowner", false, "ALIAS.example"), hosts, "/devices/d1",
                                 right::registry_read, t0));
    EXPECT_TRUE(set.authenticate(token("iothubowner", false, "hub.example/devices"), hosts,
                                 "/devices/d1", right::registry_read, t0));
}

}  // namespace
}  // namespace iothub::auth
