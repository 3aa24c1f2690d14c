#include "instance/instance.hpp"

#include "common/crypto.hpp"
#include "common/encoding.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sys/stat.h>

namespace iothub::instance {
namespace {

class Instance : public ::testing::Test {
  protected:
    void TearDown() override { std::filesystem::remove_all(where_.data_dir); }
    layout where_ = layout_for(std::filesystem::temp_directory_path() /
                               ("iothub-inst-" + hex_encode(random_bytes(6))));
};

TEST_F(Instance, FirstOpenCreatesPoliciesThatLaterOpensReuse) {
    EXPECT_EQ(read_identity(where_).error().code(), errc::not_found);
    auto first = open_identity(where_, std::nullopt);
    ASSERT_TRUE(first) << first.error().message();
    EXPECT_EQ(first->hostname, "localhost");
    ASSERT_EQ(first->policies.size(), 6u) << "Azure's five and the provisioning service's";
    EXPECT_EQ(first->policies[5].name, "provisioningserviceowner");
    EXPECT_EQ(first->policies[5].granted.to_string(),
              "EnrollmentRead, EnrollmentWrite, RegistrationStatusRead, RegistrationStatusWrite");
    ASSERT_EQ(first->id_scope.size(), 11u);
    EXPECT_EQ(first->id_scope.substr(0, 3), "0ne");
    EXPECT_EQ(first->id_scope.find_first_not_of("0123456789ABCDEF", 3), std::string::npos);
    struct stat st {};
    ASSERT_EQ(::stat(where_.identity_file.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u);

    auto second = open_identity(where_, std::nullopt);
    ASSERT_TRUE(second);
    EXPECT_EQ(second->policies[0].primary_key, first->policies[0].primary_key);
    EXPECT_EQ(second->policies[4].granted, first->policies[4].granted);
    EXPECT_EQ(second->id_scope, first->id_scope);
}

TEST_F(Instance, AnEarlierIdentityGainsAnIdScopeAndTheProvisioningPolicy) {
    std::filesystem::create_directories(where_.data_dir);
    std::ofstream(where_.identity_file)
        << R"({"hostname":"hub.example","policies":[{"keyName":"iothubowner",)"
        << R"("primaryKey":"cHJpbWFyeQ==","secondaryKey":"c2Vjb25kYXJ5",)"
        << R"("rights":"RegistryRead, RegistryWrite, ServiceConnect, DeviceConnect"}]})";
    auto before = read_identity(where_);
    ASSERT_TRUE(before) << before.error().message();
    EXPECT_TRUE(before->id_scope.empty());
    auto opened = open_identity(where_, std::nullopt);
    ASSERT_TRUE(opened) << opened.error().message();
    EXPECT_EQ(opened->policies.size(), 2u);
    EXPECT_EQ(opened->policies[0].primary_key, "cHJpbWFyeQ==") << "existing keys stay";
    EXPECT_FALSE(opened->id_scope.empty());
    auto again = read_identity(where_);
    ASSERT_TRUE(again);
    EXPECT_EQ(again->id_scope, opened->id_scope) << "recorded";
    EXPECT_EQ(again->policies.size(), 2u);
}

TEST_F(Instance, ANewHostNameIsRecordedButKeysStay) {
    auto first = *open_identity(where_, std::string("a.example"));
    auto renamed = open_identity(where_, std::string("b.example"));
    ASSERT_TRUE(renamed);
    EXPECT_EQ(renamed->hostname, "b.example");
    EXPECT_EQ(read_identity(where_)->hostname, "b.example");
    EXPECT_EQ(renamed->policies[0].primary_key, first.policies[0].primary_key);
}

TEST_F(Instance, CorruptFilesAreReportedNotReplaced) {
    ASSERT_TRUE(open_identity(where_, std::nullopt));
    ASSERT_TRUE(write_file_atomically(where_.identity_file, "{not json", true));
    auto r = open_identity(where_, std::nullopt);
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message().find("not valid JSON"), std::string::npos);
}

TEST_F(Instance, RuntimeInfoRoundTrips) {
    ASSERT_TRUE(open_identity(where_, std::nullopt));
    ASSERT_TRUE(write_runtime(where_, {"h.example", 8443, 18883, 15671, 11883, 42}));
    auto info = read_runtime(where_);
    ASSERT_TRUE(info);
    EXPECT_EQ(info->https_port, 8443);
    EXPECT_EQ(info->amqp_port, 15671);
    EXPECT_EQ(info->mqtt_plain_port, 11883);
    EXPECT_EQ(info->pid, 42);
    remove_runtime(where_);
    EXPECT_FALSE(read_runtime(where_));
}

}  // namespace
}  // namespace iothub::instance
