#include "common/fifo.hpp"

#include <gtest/gtest.h>

#include <memory>
#include <string>

namespace iothub {
namespace {

TEST(Fifo, KeepsOrderAcrossCompactions) {
    fifo<int> q;
    int next_in = 0, next_out = 0;
    // Interleaved pushes and pops so the head moves past the compaction threshold many times.
    for (int round = 0; round < 200; ++round) {
        for (int i = 0; i < 7; ++i) q.push_back(next_in++);
        for (int i = 0; i < 5; ++i) {
            ASSERT_FALSE(q.empty());
            EXPECT_EQ(q.front(), next_out++);
            q.pop_front();
        }
        ASSERT_EQ(q.size(), static_cast<std::size_t>(next_in - next_out));
        EXPECT_EQ(q[0], next_out);
        EXPECT_EQ(q.back(), next_in - 1);
    }
    int expected = next_out;
    for (int v : q) EXPECT_EQ(v, expected++);
    EXPECT_EQ(expected, next_in);
}

TEST(Fifo, PoppedElementsAreReleasedAtOnce) {
    fifo<std::shared_ptr<int>> q;
    auto first = std::make_shared<int>(1);
    q.push_back(first);
    q.push_back(std::make_shared<int>(2));
    EXPECT_EQ(first.use_count(), 2);
    q.pop_front();
    EXPECT_EQ(first.use_count(), 1);
    EXPECT_EQ(*q.front(), 2);
}

TEST(Fifo, DrainedQueueIsEmptyAndReusable) {
    fifo<std::string> q;
    EXPECT_TRUE(q.empty());
    EXPECT_EQ(q.begin(), q.end());
    q.emplace_back("a");
    q.emplace_back("b");
    q.pop_front();
    q.pop_front();
    EXPECT_TRUE(q.empty());
    EXPECT_EQ(q.size(), 0u);
    q.push_back("c");
    EXPECT_EQ(q.front(), "c");
    q.clear();
    EXPECT_TRUE(q.empty());
}

}  // namespace
}  // namespace iothub
