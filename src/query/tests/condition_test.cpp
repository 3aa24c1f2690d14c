// Route conditions: bare expressions, case-insensitive names, three-valued outcomes.
#include "query/query.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

namespace iothub::query {
namespace {
namespace json = boost::json;

json::object row() {
    return json::parse(R"({"$contentType":"application/json","$connectionDeviceId":"d1",
        "level":"critical","temp":"21.5","$body":{"Weather":{"Temperature":30,"tags":["a","b"]}},
        "$twin":{"tags":{"building":"43"},"properties":{"reported":{"fw":"1.2"}}}})")
        .as_object();
}

truth eval(std::string_view text, const json::object& r = row()) {
    auto c = parse_condition(text);
    EXPECT_TRUE(c) << text << ": " << (c ? "" : c.error().message());
    if (!c) return truth::undefined;
    return c->evaluate(r);
}

TEST(condition, true_false_and_undefined) {
    EXPECT_EQ(eval("level = 'critical'"), truth::true_);
    EXPECT_EQ(eval("level = 'normal'"), truth::false_);
    EXPECT_EQ(eval("missing = 'x'"), truth::undefined);
    EXPECT_EQ(eval("true"), truth::true_);
    EXPECT_EQ(eval("'text'"), truth::undefined);  // not a Boolean
    EXPECT_EQ(eval("missing = 'x' OR level = 'critical'"), truth::true_);
    EXPECT_EQ(eval("missing = 'x' AND level = 'critical'"), truth::undefined);
    EXPECT_EQ(eval("NOT (missing = 'x')"), truth::undefined);
    EXPECT_EQ(to_string(truth::undefined), "undefined");
}

TEST(condition, names_match_ignoring_case) {
    EXPECT_EQ(eval("$CONTENTTYPE = 'application/json'"), truth::true_);
    EXPECT_EQ(eval("$body.weather.temperature > 25"), truth::true_);
    EXPECT_EQ(eval("$body.Weather.tags[1] = 'b'"), truth::true_);
    EXPECT_EQ(eval("LEVEL = 'critical'"), truth::true_);
    EXPECT_EQ(eval("$twin.tags.Building = '43'"), truth::true_);
    // Values still compare exactly.
    EXPECT_EQ(eval("level = 'CRITICAL'"), truth::false_);
}

TEST(condition, functions_of_routes) {
    EXPECT_EQ(eval("AS_NUMBER(temp) > 20"), truth::true_);
    EXPECT_EQ(eval("as_number(level) > 20"), truth::undefined);
    EXPECT_EQ(eval("is_defined($body.Weather)"), truth::true_);
    EXPECT_EQ(eval("STARTS_WITH($connectionDeviceId, 'd')"), truth::true_);
    EXPECT_EQ(eval("length(level) = 8 AND upper(level) = 'CRITICAL'"), truth::true_);
    EXPECT_EQ(eval("$body.Weather.Temperature % 7 = 2"), truth::true_);
}

TEST(condition, refused_when_it_does_not_parse) {
    for (auto text : {"", "level =", "SELECT * FROM devices", "COUNT() > 1", "nosuch(level)",
                      "level = 'a' level", "(level = 'a'"}) {
        auto c = parse_condition(text);
        ASSERT_FALSE(c) << text;
        EXPECT_EQ(c.error().code(), errc::argument_invalid);
        EXPECT_FALSE(c.error().message().empty());
    }
}

TEST(condition, tells_which_parts_it_reads) {
    auto c = parse_condition("$BODY.x = 1 OR level = 'a'");
    ASSERT_TRUE(c);
    EXPECT_TRUE(c->refers_to("$body"));
    EXPECT_FALSE(c->refers_to("$twin"));
}

TEST(condition, lists_the_first_name_of_every_path_once) {
    auto c = parse_condition(
        "level = 'a' AND (IS_DEFINED($body.x.y) OR $contentType = 'j') AND level != 'b' AND "
        "LENGTH(kind) > $body.n AND 3 IN [1, 2]");
    ASSERT_TRUE(c);
    EXPECT_EQ(c->roots(), (std::vector<std::string>{"level", "$body", "$contentType", "kind"}));
    EXPECT_TRUE(condition().roots().empty()) << "a route without a condition reads nothing";
}

}  // namespace
}  // namespace iothub::query
