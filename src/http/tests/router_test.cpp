#include "http/router.hpp"

#include <gtest/gtest.h>

namespace iothub::http {
namespace {

request make(std::string method, std::string target) {
    request r;
    r.method = std::move(method);
    r.target = target;
    auto t = parse_target(target);
    r.path = t->path;
    r.segments = t->segments;
    return r;
}

class Router : public ::testing::Test {
  protected:
    void SetUp() override {
        auto tag = [this](std::string name) {
            return [this, name](request&, responder) { hit = name; };
        };
        routes.add("GET", "/devices", tag("list"));
        routes.add("GET", "/devices/{id}", tag("get"));
        routes.add("PUT", "/devices/{id}", tag("put"));
        routes.add("GET", "/devices/{id}/modules/{mid}", tag("module"));
        routes.add("GET", "/devices/{id}/messages/devicebound", tag("poll"),
                   route_options{.fold_case = true});
    }
    router routes;
    std::string hit;
};

TEST_F(Router, MatchesLiteralsAndCaptures) {
    auto req = make("GET", "/devices/a%23b/modules/m1");
    auto m = routes.match(req);
    ASSERT_TRUE(m);
    (*m)->fn(req, responder([](response) {}));
    EXPECT_EQ(hit, "module");
    EXPECT_EQ(req.param("id"), "a#b");
    EXPECT_EQ(req.param("mid"), "m1");
    auto list = make("GET", "/devices/");
    ASSERT_TRUE(routes.match(list));
}

TEST_F(Router, DistinguishesNotFoundFromMethodNotAllowed) {
    auto wrong_method = make("DELETE", "/devices/d1");
    auto r = routes.match(wrong_method);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code(), errc::method_not_allowed);
    auto unknown = make("GET", "/nothing/here");
    auto u = routes.match(unknown);
    ASSERT_FALSE(u);
    EXPECT_EQ(u.error().code(), errc::not_found);
    auto empty_capture = make("GET", "/devices//modules/m");
    EXPECT_FALSE(routes.match(empty_capture));
}

TEST_F(Router, FoldCaseRoutesMatchLiteralsInAnyCase) {
    auto req = make("GET", "/devices/Dev1/messages/deviceBound");
    auto m = routes.match(req);
    ASSERT_TRUE(m);
    (*m)->fn(req, responder([](response) {}));
    EXPECT_EQ(hit, "poll");
    EXPECT_EQ(req.param("id"), "Dev1") << "captures keep their case";
    auto exact = make("GET", "/Devices/d1");
    EXPECT_FALSE(routes.match(exact)) << "other routes stay case-sensitive";
}

TEST(RouterRest, RestCaptureTakesOneOrMoreSegments) {
    router routes;
    routes.add(
        "PUT", "/blobs/{path...}", [](request&, responder) {}, route_options{.max_body = 4096});
    auto one = make("PUT", "/blobs/a");
    ASSERT_TRUE(routes.match(one));
    EXPECT_EQ(one.param("path"), "a");
    auto many = make("PUT", "/blobs/dev1/dir/x%2Fy.txt");
    ASSERT_TRUE(routes.match(many));
    EXPECT_EQ(many.param("path"), "dev1/dir/x/y.txt");
    auto none = make("PUT", "/blobs");
    EXPECT_FALSE(routes.match(none));
    EXPECT_EQ(routes.largest_body(1024), 4096u);
    EXPECT_EQ(routes.largest_body(8192), 8192u);
}

}  // namespace
}  // namespace iothub::http
