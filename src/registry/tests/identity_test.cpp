#include "registry/identity.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

namespace iothub::registry {
namespace {
namespace json = boost::json;

TEST(IdRules, AcceptAzuresCharacterSet) {
    EXPECT_TRUE(validate_id("dev-1:a.b+c%d_e#f*g?h!i(j)k,l=m@n;o$p'q", "deviceId"));
    EXPECT_TRUE(validate_id(std::string(128, 'a'), "deviceId"));
}

TEST(IdRules, RejectEverythingElse) {
    for (std::string bad : {"", "a/b", "a b", "a\"b", "a&b", "caf\xc3\xa9", "a\\b", "a<b"}) {
        auto r = validate_id(bad, "deviceId");
        ASSERT_FALSE(r) << bad;
        EXPECT_EQ(r.error().code(), errc::argument_invalid);
    }
    EXPECT_FALSE(validate_id(std::string(129, 'a'), "deviceId"));
}

TEST(Etags, RoundTripAndRejectGarbage) {
    EXPECT_EQ(version_from_etag(etag_for(42)), 42u);
    EXPECT_FALSE(version_from_etag("not-base64!"));
    EXPECT_FALSE(version_from_etag("YWJj"));  // "abc"
    EXPECT_FALSE(version_from_etag(""));
}

TEST(ParseDevice, TakesTheIdFromThePathAndLeavesKeysEmpty) {
    auto spec = parse_device(json::parse(R"({"status":"disabled","statusReason":"maint"})"), "d1");
    ASSERT_TRUE(spec) << spec.error().message();
    EXPECT_EQ(spec->fields.device_id, "d1");
    EXPECT_EQ(spec->fields.status, device_status::disabled);
    EXPECT_EQ(spec->fields.status_reason, "maint");
    EXPECT_EQ(spec->fields.auth.kind, auth_kind::sas);
    EXPECT_TRUE(spec->fields.auth.primary_key.empty());
}

TEST(ParseDevice, InfersSelfSignedFromThumbprints) {
    auto spec = parse_device(
        json::parse(R"({"deviceId":"d1","authentication":{"x509Thumbprint":{"primaryThumbprint":
            "0123456789abcdef0123456789abcdef01234567"}}})"),
        "d1");
    ASSERT_TRUE(spec) << spec.error().message();
    EXPECT_EQ(spec->fields.auth.kind, auth_kind::self_signed);
}

TEST(ParseDevice, RejectsBadFieldsWithAPreciseMessage) {
    auto fails = [](std::string_view body, std::string_view path_id, std::string_view needle) {
        auto spec = parse_device(json::parse(body), path_id);
        ASSERT_FALSE(spec) << body;
        EXPECT_EQ(spec.error().code(), errc::argument_invalid);
        EXPECT_NE(spec.error().message().find(needle), std::string::npos) << spec.error().message();
    };
    fails(R"([])", "d1", "JSON object");
    fails(R"({"deviceId":"d2"})", "d1", "does not match");
    fails(R"({"deviceId":5})", "d1", "must be a string");
    fails(R"({"status":"paused"})", "d1", "enabled");
    fails(R"({"authentication":{"type":"kerberos"}})", "d1", "authentication.type");
    fails(R"({"authentication":{"symmetricKey":{"primaryKey":"short"}}})", "d1", "Base64");
    fails(R"({"authentication":{"symmetricKey":{"primaryKey":"YWJj"}}})", "d1", "16 and 64");
    fails(R"({"authentication":{"type":"selfSigned"}})", "d1", "primaryThumbprint");
    fails(R"({"authentication":{"type":"selfSigned","x509Thumbprint":{"primaryThumbprint":"zz"}}})",
          "d1", "primaryThumbprint");
    fails(R"({"authentication":{"type":"certificateAuthority","symmetricKey":{"primaryKey":
        "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}}})",
          "d1", "cannot have keys");
    fails(R"({"capabilities":{"iotEdge":"yes"}})", "d1", "iotEdge");
    fails(R"({"parentScopes":"x"})", "d1", "parentScopes");
    fails(R"({})", "bad/id", "not allowed");
}

TEST(DeviceJson, HasEveryFieldTheServiceSdkReads) {
    identity d;
    d.device_id = "d1";
    d.generation_id = "638000000000000000";
    d.version = 7;
    d.auth.primary_key = "cGs=";
    auto o = to_json(d);
    for (auto key :
         {"deviceId", "generationId", "etag", "connectionState", "status", "statusReason",
          "connectionStateUpdatedTime", "statusUpdatedTime", "lastActivityTime",
          "cloudToDeviceMessageCount", "authentication", "capabilities"})
        EXPECT_TRUE(o.contains(key)) << key;
    EXPECT_EQ(o["etag"].as_string(), etag_for(7));
    EXPECT_EQ(o["connectionState"], "Disconnected");
    EXPECT_EQ(o["lastActivityTime"], "0001-01-01T00:00:00Z");
    EXPECT_TRUE(o["statusReason"].is_null());
    auto& auth = o["authentication"].as_object();
    EXPECT_EQ(auth["type"], "sas");
    EXPECT_EQ(auth["symmetricKey"].as_object()["primaryKey"], "cGs=");
    EXPECT_TRUE(auth["symmetricKey"].as_object()["secondaryKey"].is_null());
    EXPECT_TRUE(auth["x509Thumbprint"].as_object()["primaryThumbprint"].is_null());
    EXPECT_EQ(o["capabilities"].as_object()["iotEdge"], false);
}

TEST(ModuleJson, HasModuleFieldsAndNoDeviceOnlyOnes) {
    identity m;
    m.device_id = "d1";
    m.module_id = "m1";
    m.generation_id = "1";
    m.managed_by = "edge";
    auto o = to_json(m);
    EXPECT_EQ(o["moduleId"], "m1");
    EXPECT_EQ(o["deviceId"], "d1");
    EXPECT_EQ(o["managedBy"], "edge");
    EXPECT_FALSE(o.contains("status"));
    EXPECT_FALSE(o.contains("capabilities"));
}

TEST(StoredEncoding, RoundTripsEveryField) {
    identity d;
    d.device_id = "d#1";
    d.module_id = "m";
    d.generation_id = "g";
    d.device_generation_id = "dg";
    d.auth = {auth_kind::self_signed, "", "", "AA", "BB"};
    d.status = device_status::disabled;
    d.status_reason = "r";
    d.status_updated = sys_time(std::chrono::seconds(1700000000));
    d.iot_edge = true;
    d.device_scope = "scope";
    d.parent_scopes = {"p1", "p2"};
    d.managed_by = "mb";
    auto back = decode_stored(encode_stored(d), 9);
    ASSERT_TRUE(back);
    EXPECT_EQ(back->version, 9u);
    EXPECT_EQ(encode_stored(*back), encode_stored(d));
    EXPECT_FALSE(decode_stored("{oops", 1));
}

}  // namespace
}  // namespace iothub::registry
