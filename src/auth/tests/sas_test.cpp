#include "auth/sas.hpp"

#include <gtest/gtest.h>

namespace iothub::auth {
namespace {

// Vectors from the protocol reference, computed with the Azure SDKs' own code.
constexpr std::string_view key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
constexpr std::string_view node_device =
    "SharedAccessSignature sr=myhub.azure-devices.net%2Fdevices%2Fdev1&sig=wosmA3uJK9T0mdB5CIYn%"
    "2BsAVA2ODflnucuvNO5S6mbM%3D&se=1700000000";
constexpr std::string_view c_device =
    "SharedAccessSignature sr=myhub.azure-devices.net/devices/"
    "dev1&sig=LZdHbvbv4sRTXOAFJwPla4LIXjTUSo8Jtz2q6OF02wg%3D&se=1700000000&skn=";
constexpr std::string_view module_token =
    "SharedAccessSignature "
    "sr=myhub.azure-devices.net%2Fdevices%2Fdev1%2Fmodules%2Fmod1&sig="
    "ZId0CjYzILqd7GGIpC99uIpjPK4fJTkYbrDAh8qYiy8%3D&se=1700000000";
constexpr std::string_view service_token =
    "SharedAccessSignature "
    "sr=myhub.azure-devices.net&sig=sJAIZTF5oG40VHrie96heZ865%2BnR4QavBvHnzxZm8rk%3D&skn="
    "iothubowner&se=1700000000";

const sys_time before_expiry = sys_time(std::chrono::seconds(1699999000));
const sys_time after_expiry = sys_time(std::chrono::seconds(1700000000));
const host_names hub({"myhub.azure-devices.net"});

TEST(SasToken, MakesTheNodeStyleDeviceTokenByteForByte) {
    EXPECT_EQ(make_sas_token("myhub.azure-devices.net/devices/dev1", key, 1700000000), node_device);
}

TEST(SasToken, MakesTheModuleTokenByteForByte) {
    EXPECT_EQ(make_sas_token("myhub.azure-devices.net/devices/dev1/modules/mod1", key, 1700000000),
              module_token);
}

TEST(SasToken, ServiceTokenVerifiesWithTheRawHostResource) {
    auto t = parse_sas_token(service_token);
    ASSERT_TRUE(t);
    EXPECT_EQ(t->resource, "myhub.azure-devices.net");
    EXPECT_EQ(t->key_name, "iothubowner");
    EXPECT_TRUE(signature_matches(*t, key));
}

TEST(SasToken, BothDeviceEncodingsVerifyAgainstTheSameKey) {
    for (auto text : {node_device, c_device}) {
        auto t = parse_sas_token(text);
        ASSERT_TRUE(t) << text;
        EXPECT_TRUE(t->key_name.empty()) << "an empty skn means a device key";
        EXPECT_TRUE(signature_matches(*t, key)) << text;
        EXPECT_TRUE(check_token_scope(*t, hub, "/devices/dev1", before_expiry)) << text;
    }
}

TEST(SasToken, WrongKeyAndTamperedResourceFail) {
    auto t = parse_sas_token(node_device);
    ASSERT_TRUE(t);
    EXPECT_FALSE(signature_matches(*t, "MTExMTExMTExMTExMTExMTExMTExMTExMTExMTExMTE="));
    EXPECT_FALSE(signature_matches(*t, "not base64!"));
    auto tampered = *t;
    tampered.resource = "myhub.azure-devices.net%2Fdevices%2Fdev2";
    EXPECT_FALSE(signature_matches(tampered, key));
}

TEST(SasToken, ExpiryIsEnforced) {
    auto t = parse_sas_token(node_device);
    ASSERT_TRUE(t);
    auto r = check_token_scope(*t, hub, "/devices/dev1", after_expiry);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code(), errc::unauthorized);
    EXPECT_NE(r.error().message().find("expired"), std::string::npos);
}

TEST(SasToken, ScopeIsASegmentPrefixOnAKnownHost) {
    auto t = parse_sas_token(node_device);
    ASSERT_TRUE(t);
    EXPECT_FALSE(check_token_scope(*t, hub, "/devices/dev10", before_expiry));
    EXPECT_FALSE(check_token_scope(*t, hub, "/devices/dev", before_expiry));
    EXPECT_TRUE(check_token_scope(*t, hub, "/devices/dev1/modules/m", before_expiry));
    EXPECT_FALSE(
        check_token_scope(*t, host_names({"otherhub.example"}), "/devices/dev1", before_expiry));
    // Host names compare case-insensitively and ignore a port.
    auto svc = parse_sas_token(make_sas_token("MyHub.Azure-Devices.NET:443", key, 1700000000, "p"));
    ASSERT_TRUE(svc);
    EXPECT_TRUE(check_token_scope(*svc, hub, "/devices/anything", before_expiry));
}

TEST(SasToken, IdsWithPercentMatchRawOrDecoded) {
    // Node encodes "a%b" as a%25b; the C SDK sends it raw. Both name device "a%b".
    auto encoded = parse_sas_token(make_sas_token("hub.example/devices/a%b", key, 1700000000));
    ASSERT_TRUE(encoded);
    EXPECT_TRUE(
        check_token_scope(*encoded, host_names({"hub.example"}), "/devices/a%b", before_expiry));
    sas_token raw{"hub.example/devices/a%41", "x", 1700000000, ""};
    EXPECT_TRUE(
        check_token_scope(raw, host_names({"hub.example"}), "/devices/a%41", before_expiry));
    EXPECT_TRUE(check_token_scope(raw, host_names({"hub.example"}), "/devices/aA", before_expiry));
}

TEST(SasToken, ParsesFieldsInAnyOrderAndRejectsGarbage) {
    auto t = parse_sas_token("SharedAccessSignature se=5&skn=p%20q&sig=abc%3D&sr=h");
    ASSERT_TRUE(t);
    EXPECT_EQ(t->expiry, 5);
    EXPECT_EQ(t->key_name, "p q");
    EXPECT_EQ(t->signature, "abc=");
    EXPECT_FALSE(parse_sas_token("Bearer abc"));
    EXPECT_FALSE(parse_sas_token("SharedAccessSignature sr=h&sig=x"));
    EXPECT_FALSE(parse_sas_token("SharedAccessSignature sr=h&sig=x&se=12a"));
    EXPECT_FALSE(parse_sas_token("SharedAccessSignature sr=h&sig=%zz&se=1"));
    EXPECT_FALSE(parse_sas_token("SharedAccessSignature sr=h&sig&se=1"));
}

TEST(SasToken, EventHubsStyleKeysSignAsText) {
    auto text = make_sas_token("sb://h/hub", "plain-text-key", 1700000000, "p", key_encoding::text);
    auto t = parse_sas_token(text);
    ASSERT_TRUE(t);
    EXPECT_TRUE(signature_matches(*t, "plain-text-key", key_encoding::text));
    EXPECT_FALSE(signature_matches(*t, "plain-text-key", key_encoding::base64));
    auto scopes = token_scopes(t->resource);
    ASSERT_FALSE(scopes.empty());
    EXPECT_EQ(scopes.front().host, "h");
    EXPECT_EQ(scopes.front().path, "/hub");
}

}  // namespace
}  // namespace iothub::auth
