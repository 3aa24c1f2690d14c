#include "telemetry/consumer_groups.hpp"

#include "storage/engine.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

namespace iothub::telemetry {
namespace {

TEST(ConsumerGroups, DefaultAlwaysExistsAndCannotBeDeleted) {
    auto engine = storage::open_memory();
    consumer_groups groups(engine->kv(), 20);
    EXPECT_EQ(*groups.list(), std::vector<std::string>{"$Default"});
    EXPECT_EQ(*groups.find("$default"), "$Default");
    EXPECT_EQ(*groups.create("$DEFAULT"), false);
    auto r = groups.remove("$Default");
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code(), errc::argument_invalid);
}

TEST(ConsumerGroups, NamesFollowTheRulesAndCompareWithoutCase) {
    auto engine = storage::open_memory();
    consumer_groups groups(engine->kv(), 20);
    const std::string too_long(51, 'a');
    for (const std::string& bad :
         {std::string(), std::string("has space"), std::string("slash/"), too_long}) {
        auto r = groups.create(bad);
        ASSERT_FALSE(r) << bad;
        EXPECT_EQ(r.error().code(), errc::argument_invalid);
    }
    EXPECT_EQ(*groups.create("Analytics"), true);
    EXPECT_EQ(*groups.create("analytics"), false) << "the same group";
    EXPECT_EQ(*groups.find("ANALYTICS"), "Analytics");
    EXPECT_EQ(*groups.list(), (std::vector<std::string>{"$Default", "Analytics"}));
    EXPECT_FALSE(groups.find("other"));
    EXPECT_EQ(groups.find("other").error().code(), errc::not_found);
}

TEST(ConsumerGroups, TheQuotaCountsDefaultAndHoldsUnderConcurrentCreates) {
    auto engine = storage::open_memory();
    consumer_groups groups(engine->kv(), 5);
    std::atomic<int> created{0}, refused{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t)
        threads.emplace_back([&, t] {
            for (int i = 0; i < 4; ++i) {
                auto r = groups.create("g" + std::to_string(t) + "-" + std::to_string(i));
                if (r && *r)
                    ++created;
                else if (!r && r.error().code() == errc::quota_exceeded)
                    ++refused;
            }
        });
    for (auto& t : threads) t.join();
    EXPECT_EQ(created.load(), 4) << "$Default and four others";
    EXPECT_EQ(refused.load(), 28);
    EXPECT_EQ(groups.list()->size(), 5u);
}

TEST(ConsumerGroups, CheckpointsBelongToTheirGroupAndGoWithIt) {
    auto engine = storage::open_memory();
    consumer_groups groups(engine->kv(), 20);
    EXPECT_EQ(groups.set_checkpoint("nope", "0:1").error().code(), errc::not_found);
    ASSERT_TRUE(groups.create("cg1"));
    EXPECT_FALSE(*groups.checkpoint("cg1"));
    ASSERT_TRUE(groups.set_checkpoint("CG1", "0:15,1:7"));
    EXPECT_EQ(*groups.checkpoint("cg1"), "0:15,1:7");
    ASSERT_TRUE(groups.remove("cg1"));
    EXPECT_EQ(groups.remove("cg1").error().code(), errc::not_found);
    ASSERT_TRUE(groups.create("cg1"));
    EXPECT_FALSE(*groups.checkpoint("cg1")) << "a new group starts without one";
}

TEST(ConsumerGroups, GroupsStoredOneKeyEachByEarlierVersionsAreKept) {
    auto engine = storage::open_memory();
    ASSERT_TRUE(engine->kv().put("cg/old", R"({"name":"Old"})"));
    ASSERT_TRUE(engine->kv().put("cg/old/checkpoint", "0:3"));
    consumer_groups groups(engine->kv(), 20);
    EXPECT_EQ(*groups.list(), (std::vector<std::string>{"$Default", "Old"}));
    EXPECT_EQ(*groups.checkpoint("old"), "0:3");
    ASSERT_TRUE(groups.create("new"));
    EXPECT_EQ(*groups.list(), (std::vector<std::string>{"$Default", "Old", "new"}));
    ASSERT_TRUE(groups.remove("Old"));
    EXPECT_FALSE(*engine->kv().get("cg/old"));
    EXPECT_EQ(*groups.list(), (std::vector<std::string>{"$Default", "new"}));
}

}  // namespace
}  // namespace iothub::telemetry
