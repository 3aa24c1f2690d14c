#include "service_api/service_api.hpp"

#include "service_api/c2d_api.hpp"
#include "storage/engine.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

namespace iothub::service_api {
namespace {
namespace json = boost::json;

class ServiceApi : public ::testing::Test {
  protected:
    void SetUp() override {
        add_routes(routes_, context{registry_, policies_, hosts_});
        add_c2d_routes(routes_, c2d_context{policies_, hosts_, c2d_});
    }

    std::string token(std::string_view policy) {
        const auto* p = policies_.find(policy);
        return auth::make_sas_token("hub.example", p->primary_key, unix_seconds(now()) + 600,
                                    policy);
    }

    http::response call(std::string method, std::string target, std::string body = {},
                        std::vector<std::pair<std::string, std::string>> headers = {},
                        std::string_view policy = "iothubowner") {
        http::request req;
        req.method = std::move(method);
        req.target = target;
        auto t = http::parse_target(target);
        req.path = t->path;
        req.segments = t->segments;
        req.query = t->query;
        req.body = std::move(body);
        req.headers = std::move(headers);
        if (!policy.empty()) req.headers.emplace_back("authorization", token(policy));
        http::response out;
        auto m = routes_.match(req);
        if (!m) return http::error_response(m.error());
        (*m)->fn(req, http::responder([&](http::response r) { out = std::move(r); }));
        return out;
    }
    static std::string header(const http::response& r, std::string_view name) {
        for (auto& [k, v] : r.headers)
            if (k == name) return v;
        return {};
    }

    std::unique_ptr<storage::engine> engine_ = storage::open_memory();
    registry::device_registry registry_{engine_->kv()};
    auth::policy_set policies_{auth::default_policies()};
    auth::host_names hosts_{{"hub.example"}};
    connections::connection_table connections_;
    c2d::c2d_service c2d_{engine_->kv(), registry_, connections_};
    http::router routes_;
};

TEST_F(ServiceApi, CreateThenGetWithQuotedEtag) {
    auto created = call("PUT", "/devices/a%23b?api-version=2021-04-12", R"({"deviceId":"a#b"})",
                        {{"content-type", "application/json; charset=utf-8"}});
    ASSERT_EQ(created.status, 200) << created.body;
    auto etag = header(created, "ETag");
    ASSERT_GE(etag.size(), 3u);
    EXPECT_EQ(etag.front(), '"');
    EXPECT_EQ(etag.back(), '"');
    auto body = json::parse(created.body).as_object();
    EXPECT_EQ(body["deviceId"], "a#b");
    EXPECT_EQ("\"" + std::string(body["etag"].as_string()) + "\"", etag);
    auto got = call("GET", "/devices/a%23b");
    EXPECT_EQ(got.status, 200);
}

TEST_F(ServiceApi, RightsAreEnforcedPerOperation) {
    auto denied = call("PUT", "/devices/d1", "{}", {}, "registryRead");
    EXPECT_EQ(denied.status, 401);
    EXPECT_EQ(header(denied, "iothub-errorcode"), "IotHubUnauthorizedAccess");
    EXPECT_EQ(call("PUT", "/devices/d1", "{}", {}, "registryReadWrite").status, 200);
    EXPECT_EQ(call("GET", "/devices/d1", "", {}, "registryRead").status, 200);
    EXPECT_EQ(call("GET", "/devices/d1", "", {}, "service").status, 401);
    EXPECT_EQ(call("GET", "/devices/d1", "", {}, "").status, 401);
    EXPECT_EQ(call("GET", "/statistics/service", "", {}, "service").status, 200);
}

TEST_F(ServiceApi, BadBodiesGetPreciseErrorsAndChangeNothing) {
    auto code = [&](const http::response& r) { return header(r, "iothub-errorcode"); };
    EXPECT_EQ(code(call("PUT", "/devices/d1", "")), "ArgumentNull");
    EXPECT_EQ(code(call("PUT", "/devices/d1", "{nope")), "IotHubFormatError");
    EXPECT_EQ(code(call("PUT", "/devices/d1", "{}", {{"content-type", "text/plain"}})),
              "GenericUnsupportedMediaType");
    EXPECT_EQ(code(call("PUT", "/devices/d1", R"({"status":"sleepy"})")), "ArgumentInvalid");
    EXPECT_EQ(code(call("PUT", "/devices/bad%20id", "{}")), "ArgumentInvalid");
    EXPECT_EQ(code(call("GET", "/devices?top=0")), "ArgumentInvalid");
    EXPECT_EQ(call("GET", "/devices/d1").status, 404);
    EXPECT_EQ(code(call("GET", "/devices/d1")), "DeviceNotFound");
}

TEST_F(ServiceApi, ListStatisticsAndBulk) {
    auto bulk = call(
        "POST", "/devices",
        R"([{"id":"a","importMode":"create"},{"id":"b","importMode":"create","status":"disabled"}])");
    ASSERT_EQ(bulk.status, 200) << bulk.body;
    EXPECT_EQ(json::parse(bulk.body).as_object()["isSuccessful"], true);
    auto list = call("GET", "/devices/?top=1");
    ASSERT_EQ(list.status, 200);
    EXPECT_EQ(json::parse(list.body).as_array().size(), 1u);
    auto stats = json::parse(call("GET", "/statistics/devices").body).as_object();
    EXPECT_EQ(stats["totalDeviceCount"], 2);
    EXPECT_EQ(stats["disabledDeviceCount"], 1);
}

TEST_F(ServiceApi, ModulesRoundTrip) {
    ASSERT_EQ(call("PUT", "/devices/d1", "{}").status, 200);
    auto m = call("PUT", "/devices/d1/modules/m1", R"({"moduleId":"m1","deviceId":"d1"})");
    ASSERT_EQ(m.status, 200) << m.body;
    EXPECT_EQ(json::parse(call("GET", "/devices/d1/modules").body).as_array().size(), 1u);
    EXPECT_EQ(call("DELETE", "/devices/d1/modules/m1", "", {{"if-match", "\"*\""}}).status, 204);
    EXPECT_EQ(header(call("GET", "/devices/d1/modules/m1"), "iothub-errorcode"), "ModuleNotFound");
}

TEST_F(ServiceApi, PurgeEmptiesTheDevicesQueue) {
    ASSERT_EQ(call("PUT", "/devices/d%231", "{}").status, 200);
    for (auto body : {"a", "b"}) {
        c2d::message m;
        m.body = body;
        ASSERT_TRUE(c2d_.send("d#1", m, now()));
    }
    auto purged = call("DELETE", "/devices/d%231/commands?api-version=2021-04-12");
    ASSERT_EQ(purged.status, 200) << purged.body;
    EXPECT_EQ(json::parse(purged.body),
              json::parse(R"({"deviceId":"d#1","totalMessagesPurged":2})"));
    EXPECT_EQ(c2d_.depth("d#1"), 0u);

    auto missing = call("DELETE", "/devices/nobody/commands");
    EXPECT_EQ(missing.status, 404);
    EXPECT_EQ(header(missing, "iothub-errorcode"), "DeviceNotFound");
    EXPECT_EQ(call("DELETE", "/devices/d%231/commands", "", {}, "registryReadWrite").status, 401);
    EXPECT_EQ(call("DELETE", "/devices/d%231/commands", "", {}, "service").status, 200);
}

}  // namespace
}  // namespace iothub::service_api
