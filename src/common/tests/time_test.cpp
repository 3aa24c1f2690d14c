#include "common/time.hpp"

#include <gtest/gtest.h>

#include <cstdio>
#include <ctime>

namespace iothub {
namespace {

TEST(Iso8601, FormatsSevenFractionalDigitsInUtc) {
    auto t = sys_time(std::chrono::seconds(1700000000)) + std::chrono::nanoseconds(123456789);
    EXPECT_EQ(format_iso8601(t), "2023-11-14T22:13:20.1234567Z");
}

TEST(Iso8601, FormatsEveryDayLikeTheCLibrary) {
    // Leap days, month ends, before and after the epoch: compared with gmtime's view of each.
    for (std::int64_t s :
         {0LL, 951782400LL, 951868799LL, 1709164800LL, 4102444799LL, -86400LL, 1234567890LL}) {
        const auto t = sys_time(std::chrono::seconds(s)) + std::chrono::microseconds(42);
        std::time_t tt = static_cast<std::time_t>(s);
        std::tm tm{};
        gmtime_r(&tt, &tm);
        char expected[64];
        std::snprintf(expected, sizeof expected, "%04d-%02d-%02dT%02d:%02d:%02d.0000420Z",
                      tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                      tm.tm_sec);
        EXPECT_EQ(format_iso8601(t), expected) << s;
    }
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
