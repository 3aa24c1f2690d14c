#include "http/message.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

#include <thread>

namespace iothub::http {
namespace {

TEST(ParseTarget, DecodesSegmentsButSplitsOnRawSlashes) {
    auto t = parse_target("/devices/a%2Fb%23c%3F%25%24/modules/m?api-version=2021-04-12&top=5");
    ASSERT_TRUE(t);
    ASSERT_EQ(t->segments.size(), 4u);
    EXPECT_EQ(t->segments[1], "a/b#c?%$");
    EXPECT_EQ(t->path, "/devices/a%2Fb%23c%3F%25%24/modules/m");
    ASSERT_EQ(t->query.size(), 2u);
    EXPECT_EQ(t->query[1].first, "top");
    EXPECT_EQ(t->query[1].second, "5");
}

TEST(ParseTarget, IgnoresATrailingSlashAndKeepsPlusInPaths) {
    auto t = parse_target("/devices/?api-version=x");
    ASSERT_TRUE(t);
    ASSERT_EQ(t->segments.size(), 1u);
    EXPECT_EQ(t->segments[0], "devices");
    auto p = parse_target("/devices/a+b?q=a+b");
    ASSERT_TRUE(p);
    EXPECT_EQ(p->segments[1], "a+b");
    EXPECT_EQ(p->query[0].second, "a b");
}

TEST(ParseTarget, RejectsMalformedEscapes) {
    EXPECT_FALSE(parse_target("/devices/a%zz"));
    EXPECT_FALSE(parse_target("/devices/a?x=%4"));
    EXPECT_FALSE(parse_target("devices"));
}

TEST(ErrorResponse, SatisfiesBothSdkParsers) {
    auto r = error_response(error(errc::device_not_found, "Device 'd1' is not registered."));
    EXPECT_EQ(r.status, 404);
    bool has_code = false;
    for (auto& [k, v] : r.headers)
        if (k == "iothub-errorcode") has_code = v == "DeviceNotFound";
    EXPECT_TRUE(has_code);
    auto body = boost::json::parse(r.body).as_object();
    std::string message(body["Message"].as_string());
    // Node: Message.split(';') -> "ErrorCode:DeviceNotFound", then the text.
    EXPECT_EQ(message.substr(0, message.find(';')), "ErrorCode:DeviceNotFound");
    EXPECT_EQ(message.substr(message.find(';') + 1), "Device 'd1' is not registered.");
    EXPECT_NE(std::string(body["ExceptionMessage"].as_string()).find("Tracking ID:"),
              std::string::npos);
}

TEST(Responder, DeliversOnceAndFailsSafeWhenDropped) {
    std::vector<int> seen;
    {
        responder r([&](response res) { seen.push_back(res.status); });
        r(response::no_content());
        r(response::no_content());  // ignored
    }
    {
        responder dropped([&](response res) { seen.push_back(res.status); });
    }
    ASSERT_EQ(seen.size(), 2u);
    EXPECT_EQ(seen[0], 204);
    EXPECT_EQ(seen[1], 500);
}

TEST(Responder, MayBeCalledFromAnotherThread) {
    int status = 0;
    {
        responder r([&](response res) { status = res.status; });
        std::thread([r] { r(response::json(201, boost::json::object{})); }).join();
    }
    EXPECT_EQ(status, 201);
}

}  // namespace
}  // namespace iothub::http
