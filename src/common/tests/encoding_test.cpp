#include "common/encoding.hpp"

#include <gtest/gtest.h>

namespace iothub {
namespace {

TEST(Base64, RoundTripsEveryLengthModuloThree) {
    for (std::string s : {"", "f", "fo", "foo", "foob", "fooba", "foobar"}) {
        auto enc = base64_encode(s);
        auto dec = base64_decode(enc);
        ASSERT_TRUE(dec.has_value()) << enc;
        EXPECT_EQ(*dec, s);
    }
    EXPECT_EQ(base64_encode(std::string_view("foobar")), "Zm9vYmFy");
    EXPECT_EQ(base64_encode(std::string_view("fo")), "Zm8=");
}

TEST(Base64, RejectsMalformedInput) {
    EXPECT_FALSE(base64_decode("abc"));       // not a multiple of four
    EXPECT_FALSE(base64_decode("ab=c"));      // padding in the middle
    EXPECT_FALSE(base64_decode("a==="));      // too much padding
    EXPECT_FALSE(base64_decode("ab c"));      // whitespace
    EXPECT_FALSE(base64_decode("Zm8=Zm8="));  // padding before the last quantum
    EXPECT_TRUE(base64_decode("Zm8="));
}

TEST(PercentEncoding, EncodesAllButUnreservedWithUpperHex) {
    EXPECT_EQ(percent_encode("hub.example/devices/d#1"), "hub.example%2Fdevices%2Fd%231");
    EXPECT_EQ(percent_encode("a+b=c"), "a%2Bb%3Dc");
    EXPECT_EQ(percent_encode("A-z_0.9~"), "A-z_0.9~");
}

TEST(PercentEncoding, DecodesAndKeepsPlus) {
    EXPECT_EQ(percent_decode("a%2Fb%2fc"), "a/b/c");
    EXPECT_EQ(percent_decode("a+b"), "a+b");
    EXPECT_FALSE(percent_decode("abc%"));
    EXPECT_FALSE(percent_decode("abc%4"));
    EXPECT_FALSE(percent_decode("abc%zz"));
}

TEST(Hex, EncodesLowerAndUpper) {
    EXPECT_EQ(hex_encode(std::string_view("\x01\xab", 2)), "01ab");
    EXPECT_EQ(hex_encode(std::string_view("\x01\xab", 2), true), "01AB");
}

TEST(Text, ComparesCaseInsensitively) {
    EXPECT_TRUE(iequals("LocalHost", "localhost"));
    EXPECT_FALSE(iequals("localhost", "localhost."));
    EXPECT_EQ(to_lower("MiXeD"), "mixed");
}

}  // namespace
}  // namespace iothub
