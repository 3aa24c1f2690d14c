#include "common/time.hpp"

#include <gtest/gtest.h>

namespace iothub {
namespace {

TEST(Iso8601, FormatsSevenFractionalDigitsInUtc) {
    auto t = sys_time(std::chrono::seconds(1700000000)) + std::chrono::nanoseconds(123456789);
    EXPECT_EQ(format_iso8601(t), "2023-11-14T22:13:20.1234567Z");
}

TEST(Iso8601, ParsesZuluOffsetsAndFractions) {
    auto base = sys_time(std::chrono::seconds(1700000000));
    EXPECT_EQ(parse_iso8601("2023-11-14T22:13:20Z"), base);
    EXPECT_EQ(parse_iso8601("2023-11-14T22:13:20.5Z"), base + std::chrono::milliseconds(500));
    EXPECT_EQ(parse_iso8601("2023-11-14T23:13:20+01:00"), base);
    EXPECT_EQ(parse_iso8601(format_iso8601(base)), base);
}

TEST(Iso8601, RejectsMalformed) {
    EXPECT_FALSE(parse_iso8601("2023-11-14 22:13:20Z"));
    EXPECT_FALSE(parse_iso8601("2023-13-14T22:13:20Z"));
    EXPECT_FALSE(parse_iso8601("2023-02-30T22:13:20Z"));
    EXPECT_FALSE(parse_iso8601("2023-11-14T22:13:20"));
    EXPECT_FALSE(parse_iso8601("2023-11-14T22:13:20Zjunk"));
}

}  // namespace
}  // namespace iothub
