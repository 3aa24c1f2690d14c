#include "auth/connection_string.hpp"

#include <gtest/gtest.h>

namespace iothub::auth {
namespace {

TEST(ConnectionString, ParsesKeysWithEqualsInValues) {
    auto cs = connection_string::parse("HostName=hub.example;DeviceId=d1;SharedAccessKey=YWJjZA==");
    ASSERT_TRUE(cs);
    EXPECT_EQ(cs->get("HostName"), "hub.example");
    EXPECT_EQ(cs->get("SharedAccessKey"), "YWJjZA==");
    EXPECT_FALSE(cs->get("hostname")) << "keys are case-sensitive";
}

TEST(ConnectionString, CarriesATokenValue) {
    auto cs = connection_string::parse(
        "HostName=h;DeviceId=d;SharedAccessSignature=SharedAccessSignature "
        "sr=h%2Fdevices%2Fd&sig=a%"
        "3D&se=1");
    ASSERT_TRUE(cs);
    EXPECT_EQ(cs->get("SharedAccessSignature"),
              "SharedAccessSignature sr=h%2Fdevices%2Fd&sig=a%3D&se=1");
}

TEST(ConnectionString, RejectsMalformed) {
    EXPECT_FALSE(connection_string::parse(""));
    EXPECT_FALSE(connection_string::parse("HostName"));
    EXPECT_FALSE(connection_string::parse("=value"));
    EXPECT_TRUE(connection_string::parse("A=1;;B=2;"));
}

TEST(ConnectionString, PrintsInAzureOrder) {
    auto cs = connection_string::parse("SharedAccessKey=k;Zeta=z;DeviceId=d;HostName=h");
    ASSERT_TRUE(cs);
    EXPECT_EQ(cs->to_string(), "HostName=h;DeviceId=d;SharedAccessKey=k;Zeta=z");
    EXPECT_EQ(service_connection_string("h", "iothubowner", "k"),
              "HostName=h;SharedAccessKeyName=iothubowner;SharedAccessKey=k");
    EXPECT_EQ(module_connection_string("h", "d", "m", "k"),
              "HostName=h;DeviceId=d;ModuleId=m;SharedAccessKey=k");
}

}  // namespace
}  // namespace iothub::auth
