#include "twin/document.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

namespace iothub::twin {
namespace {
namespace json = boost::json;

json::object obj(std::string_view text) {
    return json::parse(text).as_object();
}

TEST(Merge, NestedPatchMergesAndNullDeletes) {
    auto doc = obj(R"({"a":1,"b":{"c":2,"d":3},"e":"x"})");
    json::object meta;
    apply_patch(doc, meta, obj(R"({"a":null,"b":{"c":20,"z":null,"n":{"m":1}},"e":{"f":true}})"),
                "T1", std::nullopt);
    EXPECT_EQ(doc, obj(R"({"b":{"c":20,"d":3,"n":{"m":1}},"e":{"f":true}})"));
}

TEST(Merge, NonObjectReplacesSubtreeAndArraysAreValues) {
    auto doc = obj(R"({"a":{"x":1},"l":[1,2,3]})");
    json::object meta;
    apply_patch(doc, meta, obj(R"({"a":5,"l":[4]})"), "T", std::nullopt);
    EXPECT_EQ(doc, obj(R"({"a":5,"l":[4]})"));
}

TEST(Merge, NullsInsideANewObjectAreNotStored) {
    json::object doc, meta;
    apply_patch(doc, meta, obj(R"({"a":{"b":null,"c":1}})"), "T", std::nullopt);
    EXPECT_EQ(doc, obj(R"({"a":{"c":1}})"));
}

TEST(Metadata, MirrorsTheTreeWithTimesAndVersions) {
    json::object doc, meta;
    apply_patch(doc, meta, obj(R"({"cfg":{"rate":5},"name":"n"})"), "T1", 2);
    EXPECT_EQ(meta, obj(R"({"$lastUpdated":"T1","$lastUpdatedVersion":2,
        "cfg":{"$lastUpdated":"T1","$lastUpdatedVersion":2,
               "rate":{"$lastUpdated":"T1","$lastUpdatedVersion":2}},
        "name":{"$lastUpdated":"T1","$lastUpdatedVersion":2}})"));
    apply_patch(doc, meta, obj(R"({"cfg":{"mode":"m"},"name":null})"), "T2", 3);
    // Untouched leaves keep their stamps; touched levels get the new one; deleted ones vanish.
    EXPECT_EQ(meta, obj(R"({"$lastUpdated":"T2","$lastUpdatedVersion":3,
        "cfg":{"$lastUpdated":"T2","$lastUpdatedVersion":3,
               "rate":{"$lastUpdated":"T1","$lastUpdatedVersion":2},
               "mode":{"$lastUpdated":"T2","$lastUpdatedVersion":3}}})"));
}

TEST(Metadata, ReportedHasNoVersions) {
    json::object doc, meta;
    apply_patch(doc, meta, obj(R"({"t":1})"), "T", std::nullopt);
    EXPECT_EQ(meta, obj(R"({"$lastUpdated":"T","t":{"$lastUpdated":"T"}})"));
}

TEST(Limits, KeyRules) {
    twin_limits l;
    EXPECT_TRUE(check_patch(obj(R"({"good_key-1":{"ok":1}})"), section::desired, l));
    for (auto bad : {R"({"a.b":1})", R"({"a b":1})", R"({"$x":1})", R"({"o":{"bad$":1}})",
                     "{\"c\\u0001\":1}", "{\"c\\u0085\":1}"}) {
        auto r = check_patch(obj(bad), section::desired, l);
        ASSERT_FALSE(r) << bad;
        EXPECT_EQ(r.error().code(), errc::argument_invalid);
    }
    json::object long_key;
    long_key[std::string(1025, 'k')] = 1;
    EXPECT_FALSE(check_patch(long_key, section::tags, l));
    long_key = {};
    long_key[std::string(1024, 'k')] = 1;
    EXPECT_TRUE(check_patch(long_key, section::tags, l));
}

TEST(Limits, DepthTenIsTheMaximum) {
    twin_limits l;
    auto nest = [](int levels) {
        json::value v = 1;
        for (int i = 0; i < levels; ++i) v = json::object{{"k", v}};
        return v.as_object();
    };
    EXPECT_TRUE(check_patch(nest(11), section::desired, l));  // 10 objects below the root
    auto r = check_patch(nest(12), section::desired, l);
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message().find("deeper than 10"), std::string::npos);
}

TEST(Limits, ValuesAndIntegers) {
    twin_limits l;
    json::object p;
    p["s"] = std::string(4096, 'v');
    EXPECT_TRUE(check_patch(p, section::reported, l));
    p["s"] = std::string(4097, 'v');
    EXPECT_FALSE(check_patch(p, section::reported, l));
    EXPECT_TRUE(
        check_patch(obj(R"({"i":4503599627370495,"j":-4503599627370496})"), section::reported, l));
    EXPECT_FALSE(check_patch(obj(R"({"i":4503599627370496})"), section::reported, l));
    EXPECT_FALSE(check_patch(obj(R"({"i":-4503599627370497})"), section::reported, l));
    EXPECT_FALSE(check_patch(obj(R"({"a":[1,null]})"), section::reported, l));
}

TEST(Size, CountsKeysAndValuesAsAzureDoes) {
    // "ab"(2) + 8 (number) + "c"(1) + 4 (bool) + "d"(1) + "xyz"(3) + "e"(1) + "f"(1) + 8 = 29
    EXPECT_EQ(size_of(obj(R"({"ab":1.5,"c":true,"d":"xyz","e":{"f":2}})")), 29u);
}

TEST(Diff, TurnsOneDocumentIntoAnother) {
    auto before = obj(R"({"a":1,"b":{"c":1,"d":2},"e":3})");
    auto after = obj(R"({"a":1,"b":{"c":5},"f":4})");
    auto d = diff(before, after);
    EXPECT_EQ(d, obj(R"({"e":null,"b":{"d":null,"c":5},"f":4})"));
    json::object meta;
    apply_patch(before, meta, d, "T", std::nullopt);
    EXPECT_EQ(before, after);
}

TEST(Reserved, SectionVersionAndMetadataAreNotPatchContent) {
    auto p = strip_reserved(obj(R"({"$version":3,"$metadata":{},"x":1})"));
    EXPECT_EQ(p, obj(R"({"x":1})"));
}

}  // namespace
}  // namespace iothub::twin
