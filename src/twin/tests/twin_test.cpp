#include "twin/twin.hpp"

#include "hub_events/hub_events.hpp"
#include "storage/engine.hpp"
#include "twin/tests/wait.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

#include <filesystem>
#include <thread>

namespace iothub::twin {
namespace {
namespace json = boost::json;
using registry::if_match;

json::value parse(std::string_view text) {
    return json::parse(text);
}

class Twins : public ::testing::Test {
  protected:
    void SetUp() override {
        auto e = storage::open_rocksdb({dir_, false, 2, {2}});
        ASSERT_TRUE(e) << e.error().message();
        engine_ = std::move(*e);
        registry_ = std::make_unique<registry::device_registry>(engine_->kv());
        twins_ = std::make_unique<twin_service>(engine_->kv(), *registry_, engine_->hub_events(),
                                                "hub.example", limits_);
        twins_->on_desired([this](const desired_change& c) { notified_.push_back(c); });
        registry_->on_change([this](const registry::identity_change& c) {
            if (c.before && !c.after) twins_->forget(*c.before);
        });
        create("dev1");
    }
    void TearDown() override {
        twins_.reset();
        registry_.reset();
        engine_.reset();
        std::filesystem::remove_all(dir_);
    }
    void create(const std::string& id) {
        auto spec = registry::parse_device(json::object{}, id);
        ASSERT_TRUE(registry_->put_device(*spec, {}));
    }
    json::object twin(std::string_view id = "dev1", std::string_view module = "") {
        auto t = twins_->get(id, module);
        EXPECT_TRUE(t) << t.error().message();
        return t ? *t : json::object{};
    }
    std::vector<storage::stored_event> change_events() {
        std::vector<storage::stored_event> all;
        auto& log = engine_->hub_events();
        for (int p = 0; p < log.partition_count(); ++p) {
            auto got = log.read(p, 0, 1000);
            if (got) all.insert(all.end(), got->begin(), got->end());
        }
        return all;
    }

    std::filesystem::path dir_ =
        std::filesystem::temp_directory_path() / ("iothub-twin-test-" + std::to_string(::getpid()));
    std::unique_ptr<storage::engine> engine_;
    std::unique_ptr<registry::device_registry> registry_;
    std::unique_ptr<twin_service> twins_;
    twin_limits limits_;
    std::vector<desired_change> notified_;
};

TEST_F(Twins, FreshTwinHasIdentityFieldsAndEmptySections) {
    auto t = twin();
    EXPECT_EQ(t.at("deviceId"), "dev1");
    EXPECT_EQ(t.at("status"), "enabled");
    EXPECT_EQ(t.at("authenticationType"), "sas");
    EXPECT_EQ(t.at("connectionState"), "Disconnected");
    EXPECT_EQ(t.at("version").to_number<int>(), 1);
    EXPECT_EQ(t.at("tags"), json::object{});
    const auto& desired = t.at("properties").at("desired").as_object();
    EXPECT_EQ(desired.at("$version").to_number<int>(), 1);
    EXPECT_TRUE(desired.at("$metadata").as_object().contains("$lastUpdated"));
    EXPECT_FALSE(t.contains("moduleId"));
}

TEST_F(Twins, UnknownDeviceIsDeviceNotFound) {
    auto t = twins_->get("nobody", "");
    ASSERT_FALSE(t);
    EXPECT_EQ(t.error().code(), errc::device_not_found);
}

TEST_F(Twins, ServicePatchMergesTagsAndDesiredAndNotifies) {
    auto r = waiting::update(
        *twins_, "dev1", "",
        parse(R"({"tags":{"loc":{"region":"eu"}},"properties":{"desired":{"rate":5}}})"), {});
    ASSERT_TRUE(r) << r.error().message();
    EXPECT_EQ(r->at("tags"), parse(R"({"loc":{"region":"eu"}})"));
    EXPECT_EQ(r->at("properties").at("desired").at("rate"), 5);
    EXPECT_EQ(r->at("properties").at("desired").at("$version").to_number<int>(), 2);
    EXPECT_EQ(r->at("version").to_number<int>(), 2);
    ASSERT_EQ(notified_.size(), 1u);
    EXPECT_EQ(notified_[0].patch, parse(R"({"rate":5,"$version":2})"));
    // A tags-only change tells the device nothing.
    ASSERT_TRUE(waiting::update(*twins_, "dev1", "", parse(R"({"tags":{"loc":null}})"), {}));
    EXPECT_EQ(notified_.size(), 1u);
    EXPECT_EQ(twin().at("tags"), json::object{});
}

TEST_F(Twins, ServiceWritesIgnoreReportedAndEchoedVersions) {
    auto r = waiting::update(
        *twins_, "dev1", "",
        parse(R"({"deviceId":"dev1","properties":{"desired":{"a":1,"$version":9,"$metadata":{}},
                  "reported":{"b":2}}})"),
        {});
    ASSERT_TRUE(r) << r.error().message();
    EXPECT_FALSE(r->at("properties").at("reported").as_object().contains("b"));
    EXPECT_EQ(r->at("properties").at("desired").at("$version").to_number<int>(), 2);
}

TEST_F(Twins, EtagPreconditions) {
    auto t = twin();
    std::string etag = std::string(t.at("etag").as_string());
    auto ok = waiting::update(*twins_, "dev1", "", parse(R"({"tags":{"a":1}})"),
                              if_match::parse("\"" + etag + "\""));
    ASSERT_TRUE(ok) << ok.error().message();
    EXPECT_NE(ok->at("etag").as_string(), etag) << "every change moves the ETag";
    auto stale = waiting::update(*twins_, "dev1", "", parse(R"({"tags":{"a":2}})"),
                                 if_match::parse("\"" + etag + "\""));
    ASSERT_FALSE(stale);
    EXPECT_EQ(stale.error().code(), errc::precondition_failed);
    EXPECT_EQ(twin().at("tags").at("a"), 1) << "a rejected write changes nothing";
    EXPECT_TRUE(
        waiting::update(*twins_, "dev1", "", parse(R"({"tags":{"a":3}})"), if_match::parse("*")));
}

TEST_F(Twins, ReplaceSetsTagsAndDesiredAndNotifiesTheDifference) {
    ASSERT_TRUE(waiting::update(*twins_, "dev1", "",
                                parse(R"({"tags":{"x":1},"properties":{"desired":{"a":1,"b":2}}})"),
                                {}));
    auto r = waiting::replace(*twins_, "dev1", "",
                              parse(R"({"tags":{"y":2},"properties":{"desired":{"b":3}}})"), {});
    ASSERT_TRUE(r) << r.error().message();
    EXPECT_EQ(r->at("tags"), parse(R"({"y":2})"));
    auto desired = r->at("properties").at("desired").as_object();
    EXPECT_FALSE(desired.contains("a"));
    EXPECT_EQ(desired.at("b"), 3);
    ASSERT_EQ(notified_.size(), 2u);
    EXPECT_EQ(notified_[1].patch, parse(R"({"a":null,"b":3,"$version":3})"));
}

TEST_F(Twins, ReportedPatchFromTheDevice) {
    auto v =
        waiting::update_reported(*twins_, "dev1", "", parse(R"({"temp":21,"fw":{"v":"1.0"}})"));
    ASSERT_TRUE(v) << v.error().message();
    EXPECT_EQ(*v, 2u);
    v = waiting::update_reported(*twins_, "dev1", "", parse(R"({"fw":null})"));
    ASSERT_TRUE(v);
    EXPECT_EQ(*v, 3u);
    auto view = twins_->device_view("dev1", "");
    ASSERT_TRUE(view);
    EXPECT_EQ(*view, parse(R"({"desired":{"$version":1},"reported":{"temp":21,"$version":3}})"));
    auto t = twin();
    EXPECT_TRUE(t.at("properties").at("reported").at("$metadata").as_object().contains("temp"));
    EXPECT_TRUE(notified_.empty());

    auto conditional = waiting::update_reported(*twins_, "dev1", "", parse(R"({"x":1})"), 2);
    ASSERT_FALSE(conditional);
    EXPECT_EQ(conditional.error().code(), errc::precondition_failed);
    EXPECT_TRUE(waiting::update_reported(*twins_, "dev1", "", parse(R"({"x":1})"), 3));
}

TEST_F(Twins, ViolatingPatchesAreRejectedWhole) {
    limits_.reported_bytes = 64;
    twins_ = std::make_unique<twin_service>(engine_->kv(), *registry_, engine_->hub_events(),
                                            "hub.example", limits_);
    ASSERT_TRUE(waiting::update_reported(*twins_, "dev1", "", parse(R"({"a":"0123456789"})")));
    auto too_big = waiting::update_reported(
        *twins_, "dev1", "",
        parse(R"({"b":"0123456789012345678901234567890123456789012345678901234567890"})"));
    ASSERT_FALSE(too_big);
    EXPECT_EQ(too_big.error().code(), errc::argument_invalid);
    auto bad_key = waiting::update(
        *twins_, "dev1", "", parse(R"({"tags":{"ok":1},"properties":{"desired":{"a.b":1}}})"), {});
    ASSERT_FALSE(bad_key);
    auto t = twin();
    EXPECT_EQ(t.at("tags"), json::object{}) << "the valid half of a rejected patch is not applied";
    EXPECT_FALSE(t.at("properties").at("reported").as_object().contains("b"));
    EXPECT_FALSE(waiting::update(*twins_, "dev1", "", parse(R"({"tags":[1]})"), {}));
    EXPECT_FALSE(waiting::update_reported(*twins_, "dev1", "", parse("[1]")));
}

TEST_F(Twins, ModuleTwinsAreTheirOwn) {
    auto spec = registry::parse_module(json::object{}, "dev1", "m1");
    ASSERT_TRUE(registry_->put_module(*spec, {}));
    ASSERT_TRUE(
        waiting::update(*twins_, "dev1", "m1", parse(R"({"properties":{"desired":{"k":1}}})"), {}));
    auto m = twin("dev1", "m1");
    EXPECT_EQ(m.at("moduleId"), "m1");
    EXPECT_EQ(m.at("properties").at("desired").at("k"), 1);
    EXPECT_FALSE(twin().at("properties").at("desired").as_object().contains("k"));
    ASSERT_EQ(notified_.size(), 1u);
    EXPECT_EQ(notified_[0].module_id, "m1");
    auto missing = twins_->get("dev1", "nope");
    ASSERT_FALSE(missing);
    EXPECT_EQ(missing.error().code(), errc::module_not_found);
}

TEST_F(Twins, RecreatedDeviceStartsWithAFreshTwin) {
    ASSERT_TRUE(waiting::update(*twins_, "dev1", "", parse(R"({"tags":{"old":true}})"), {}));
    ASSERT_TRUE(registry_->delete_device("dev1", if_match::parse("*")));
    EXPECT_FALSE(engine_->kv().get(twin_key("dev1", "")).value().has_value())
        << "forget() removed the deleted device's twin";
    create("dev1");
    auto t = twin();
    EXPECT_EQ(t.at("tags"), json::object{});
    EXPECT_EQ(t.at("version").to_number<int>(), 1);
}

TEST_F(Twins, StaleRecordOfAnEarlierIncarnationIsIgnored) {
    ASSERT_TRUE(waiting::update(*twins_, "dev1", "", parse(R"({"tags":{"old":true}})"), {}));
    // Simulate a crash between deleting the identity and removing its twin.
    auto stale = engine_->kv().get(twin_key("dev1", "")).value()->value;
    ASSERT_TRUE(registry_->delete_device("dev1", if_match::parse("*")));
    ASSERT_TRUE(engine_->kv().put(twin_key("dev1", ""), stale));
    create("dev1");
    EXPECT_EQ(twin().at("tags"), json::object{});
    ASSERT_TRUE(waiting::update(*twins_, "dev1", "", parse(R"({"tags":{"new":true}})"), {}));
    EXPECT_EQ(twin().at("tags"), parse(R"({"new":true})"));
}

TEST_F(Twins, EveryChangeRecordsATwinChangeEvent) {
    ASSERT_TRUE(
        waiting::update(*twins_, "dev1", "", parse(R"({"properties":{"desired":{"a":1}}})"), {}));
    ASSERT_TRUE(waiting::update_reported(*twins_, "dev1", "", parse(R"({"b":2})")));
    ASSERT_TRUE(waiting::replace(*twins_, "dev1", "", parse(R"({"tags":{"t":1}})"), {}));
    auto events = change_events();
    ASSERT_EQ(events.size(), 3u);
    auto prop = [](const storage::stored_event& e, std::string_view name) {
        for (const auto& [k, v] : e.record.application_properties)
            if (k == name) return v;
        for (const auto& [k, v] : e.record.system_properties)
            if (k == name) return v;
        return std::string();
    };
    EXPECT_EQ(prop(events[0], "opType"), "updateTwin");
    EXPECT_EQ(prop(events[2], "opType"), "replaceTwin");
    EXPECT_EQ(prop(events[0], "iothub-message-schema"), "twinChangeNotification");
    EXPECT_EQ(prop(events[0], "iothub-message-source"), "twinChangeEvents");
    EXPECT_EQ(prop(events[0], "hubName"), "hub.example");
    EXPECT_EQ(prop(events[0], "deviceId"), "dev1");
    auto body = json::parse(events[1].record.body).as_object();
    EXPECT_EQ(body.at("properties").at("reported").at("b"), 2);
    EXPECT_EQ(body.at("properties").at("reported").at("$version").to_number<int>(), 2);
    EXPECT_EQ(body.at("version").to_number<int>(), 3);
}

TEST_F(Twins, ChangesNothingReadsAreCommittedWithoutAnEvent) {
    hub_events::interest interest;
    interest.set(hub_events::twin_change_source, false);
    twins_->set_event_interest(&interest);
    ASSERT_TRUE(
        waiting::update(*twins_, "dev1", "", parse(R"({"properties":{"desired":{"a":1}}})"), {}));
    ASSERT_TRUE(waiting::update_reported(*twins_, "dev1", "", parse(R"({"b":2})")));
    EXPECT_TRUE(change_events().empty());
    EXPECT_EQ(twin().at("properties").at("reported").at("b"), 2);
    EXPECT_EQ(twin().at("version").to_number<int>(), 3);
    interest.set(hub_events::twin_change_source, true);
    ASSERT_TRUE(waiting::update_reported(*twins_, "dev1", "", parse(R"({"c":3})")));
    EXPECT_EQ(change_events().size(), 1u);
}

TEST_F(Twins, ScanPagesThroughEveryTwin) {
    for (int i = 0; i < 25; ++i) create("d" + std::to_string(100 + i));
    std::vector<std::string> seen;
    std::string after;
    for (;;) {
        auto page = twins_->scan(false, after, 10);
        ASSERT_TRUE(page);
        for (const auto& t : page->twins) seen.push_back(std::string(t.at("deviceId").as_string()));
        after = page->last_key;
        if (page->done) break;
    }
    EXPECT_EQ(seen.size(), 26u);
    EXPECT_TRUE(std::is_sorted(seen.begin(), seen.end()));
}

TEST_F(Twins, ModelIdIsKept) {
    ASSERT_TRUE(twins_->set_model_id("dev1", "", "dtmi:com:example:Thermostat;1"));
    EXPECT_EQ(twin().at("modelId"), "dtmi:com:example:Thermostat;1");
}

}  // namespace
}  // namespace iothub::twin

namespace iothub::twin {
namespace {

TEST_F(Twins, ConcurrentWritersLoseNothingAndDesiredNotificationsStayInVersionOrder) {
    // Reported patches from four writers and desired patches from a fifth, all on one twin: each
    // write reads, computes and commits on the condition that nothing changed meanwhile, and
    // reads again when something did.
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t)
        threads.emplace_back([&, t] {
            for (int i = 0; i < 10; ++i)
                EXPECT_TRUE(waiting::update_reported(
                    *twins_, "dev1", "",
                    json::object{{"w" + std::to_string(t) + "_" + std::to_string(i), i}}));
        });
    threads.emplace_back([&] {
        for (int i = 0; i < 10; ++i)
            EXPECT_TRUE(waiting::update(
                *twins_, "dev1", "",
                json::object{{"properties", json::object{{"desired", json::object{{"d", i}}}}}},
                {}));
    });
    for (auto& t : threads) t.join();
    auto doc = twin();
    const auto& reported = doc.at("properties").at("reported").as_object();
    for (int t = 0; t < 4; ++t)
        for (int i = 0; i < 10; ++i)
            EXPECT_TRUE(reported.contains("w" + std::to_string(t) + "_" + std::to_string(i)));
    EXPECT_EQ(reported.at("$version"), 41);
    ASSERT_EQ(notified_.size(), 10u);
    for (std::size_t i = 1; i < notified_.size(); ++i)
        EXPECT_LT(notified_[i - 1].version, notified_[i].version);
    EXPECT_EQ(change_events().size(), 50u) << "one event per committed change";
}

}  // namespace
}  // namespace iothub::twin
