#include "instance/instance.hpp"

#include "common/crypto.hpp"
#include "common/encoding.hpp"

#include <gtest/gtest.h>

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
    ASSERT_EQ(first->policies.size(), 5u);
    struct stat st {};
    ASSERT_EQ(::stat(where_.identity_file.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u);

    auto second = open_identity(where_, std::nullopt);
    ASSERT_TRUE(second);
    EXPECT_EQ(second->policies[0].primary_key, first->policies[0].primary_key);
    EXPECT_EQ(second->policies[4].granted, first->policies[4].granted);
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
