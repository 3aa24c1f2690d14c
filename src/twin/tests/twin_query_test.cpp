#include "twin/twin_query.hpp"

#include "storage/engine.hpp"
#include "twin/tests/wait.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

namespace iothub::twin {
namespace {
namespace json = boost::json;

class TwinQuery : public ::testing::Test {
  protected:
    void SetUp() override {
        registry_ = std::make_unique<registry::device_registry>(engine_->kv());
        twins_ =
            std::make_unique<twin_service>(engine_->kv(), *registry_, engine_->hub_events(), "hub");
        // 30 devices d00..d29; region eu for even numbers; module "m" on every third.
        for (int i = 0; i < 30; ++i) {
            char id[8];
            std::snprintf(id, sizeof id, "d%02d", i);
            ASSERT_TRUE(registry_->put_device(*registry::parse_device(json::object{}, id), {}));
            json::object tags{{"region", i % 2 == 0 ? "eu" : "us"}, {"n", i}};
            ASSERT_TRUE(waiting::update(*twins_, id, "", json::object{{"tags", tags}}, {}));
            if (i % 3 == 0) {
                ASSERT_TRUE(
                    registry_->put_module(*registry::parse_module(json::object{}, id, "m"), {}));
                ASSERT_TRUE(waiting::update_reported(*twins_, id, "m", json::object{{"ok", i}}));
            }
        }
    }

    // Every row of a query, following continuation tokens; counts the pages.
    json::array all(std::string_view q, std::size_t page, int* pages = nullptr) {
        json::array rows;
        std::string token;
        for (int n = 1;; ++n) {
            auto r = run_query(*twins_, q, page, token);
            EXPECT_TRUE(r) << r.error().message();
            if (!r) return rows;
            EXPECT_LE(r->rows.size(), page);
            for (auto& row : r->rows) rows.push_back(row);
            if (pages) *pages = n;
            if (!r->continuation) return rows;
            EXPECT_FALSE(r->rows.empty()) << "a continuation promises another page with rows";
            token = *r->continuation;
        }
    }

    std::unique_ptr<storage::engine> engine_ = storage::open_memory();
    std::unique_ptr<registry::device_registry> registry_;
    std::unique_ptr<twin_service> twins_;
};

TEST_F(TwinQuery, PagesThroughMatchesWithoutLosingOrRepeatingAny) {
    int pages = 0;
    auto rows = all("SELECT * FROM devices WHERE tags.region = 'eu'", 4, &pages);
    ASSERT_EQ(rows.size(), 15u);
    EXPECT_EQ(pages, 4);
    for (std::size_t i = 0; i < rows.size(); ++i)
        EXPECT_EQ(rows[i].at("tags").at("n").to_number<int>(), static_cast<int>(i * 2));
    // Exactly one full page: no continuation after it.
    pages = 0;
    EXPECT_EQ(all("SELECT * FROM devices WHERE tags.n < 5", 5, &pages).size(), 5u);
    EXPECT_EQ(pages, 1);
}

TEST_F(TwinQuery, ItemTypesProjectionsAndTop) {
    auto r = run_query(*twins_, "SELECT * FROM devices", 2, "");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->item_type, "Twin");
    r = run_query(*twins_, "SELECT deviceId, tags.n AS n FROM devices WHERE tags.n >= 28", 10, "");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->item_type, "Raw");
    EXPECT_EQ(json::value(r->rows),
              json::parse(R"([{"deviceId":"d28","n":28},{"deviceId":"d29","n":29}])"));
    auto top = all("SELECT TOP 7 deviceId FROM devices", 3);
    EXPECT_EQ(top.size(), 7u);
}

TEST_F(TwinQuery, AggregatesAndGroups) {
    auto rows = all("SELECT COUNT() AS n FROM devices", 10);
    EXPECT_EQ(json::value(rows), json::parse(R"([{"n":30}])"));
    rows = all("SELECT tags.region, COUNT() AS n FROM devices GROUP BY tags.region", 1);
    EXPECT_EQ(json::value(rows), json::parse(R"([{"region":"eu","n":15},{"region":"us","n":15}])"));
}

TEST_F(TwinQuery, ModulesCollection) {
    auto rows = all("SELECT * FROM devices.modules WHERE properties.reported.ok >= 12", 2);
    ASSERT_EQ(rows.size(), 6u);
    EXPECT_EQ(rows[0].at("moduleId"), "m");
    EXPECT_EQ(rows[0].at("deviceId"), "d12");
    auto none = run_query(*twins_, "SELECT * FROM devices.jobs", 10, "");
    ASSERT_TRUE(none);
    EXPECT_TRUE(none->rows.empty());
}

TEST_F(TwinQuery, BadQueriesAndTokensAreRefused) {
    auto r = run_query(*twins_, "SELECT * FROM devices WHERE", 10, "");
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code(), errc::argument_invalid);
    auto first = run_query(*twins_, "SELECT * FROM devices", 5, "");
    ASSERT_TRUE(first && first->continuation);
    EXPECT_FALSE(run_query(*twins_, "SELECT deviceId FROM devices", 5, *first->continuation))
        << "a token belongs to its query";
    EXPECT_FALSE(run_query(*twins_, "SELECT * FROM devices", 5, "not-a-token"));
}

}  // namespace
}  // namespace iothub::twin
