#include "registry/registry.hpp"

#include "common/crypto.hpp"
#include "common/encoding.hpp"
#include "storage/engine.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

#include <filesystem>

namespace iothub::registry {
namespace {
namespace json = boost::json;

class Registry : public ::testing::Test {
  protected:
    void SetUp() override {
        auto e = storage::open_rocksdb({dir_, true, 2});
        ASSERT_TRUE(e) << e.error().message();
        engine_ = std::move(*e);
        registry_ = std::make_unique<device_registry>(engine_->kv(), limits_);
        registry_->on_change([this](const identity_change& c) { changes_.push_back(c); });
    }
    void TearDown() override {
        registry_.reset();
        engine_.reset();
        std::filesystem::remove_all(dir_);
    }

    identity_spec device(std::string id, std::string_view body = "{}") {
        return *parse_device(json::parse(body), id);
    }
    identity_spec module(std::string d, std::string m, std::string_view body = "{}") {
        return *parse_module(json::parse(body), d, m);
    }
    static if_match any() { return if_match::parse("\"*\""); }
    static if_match etag(const identity& i) {
        return if_match::parse("\"" + etag_for(i.version) + "\"");
    }

    std::filesystem::path dir_ =
        std::filesystem::temp_directory_path() / ("iothub-reg-" + hex_encode(random_bytes(6)));
    registry_limits limits_{3, 100, 1000};
    std::unique_ptr<storage::engine> engine_;
    std::unique_ptr<device_registry> registry_;
    std::vector<identity_change> changes_;
};

TEST(IfMatch, ParsesTheFormsClientsSend) {
    EXPECT_EQ(if_match::parse("").what, if_match::kind::absent);
    EXPECT_EQ(if_match::parse("*").what, if_match::kind::any);
    EXPECT_EQ(if_match::parse("\"*\"").what, if_match::kind::any);
    auto q = if_match::parse("\"MTI=\"");
    EXPECT_EQ(q.what, if_match::kind::etag);
    EXPECT_EQ(q.etag, "MTI=");
    EXPECT_EQ(if_match::parse("MTI=").etag, "MTI=");
}

TEST_F(Registry, CreateGeneratesKeysGenerationAndEtag) {
    auto d = registry_->put_device(device("d1"), {});
    ASSERT_TRUE(d) << d.error().message();
    EXPECT_EQ(base64_decode(d->auth.primary_key)->size(), 32u);
    EXPECT_EQ(base64_decode(d->auth.secondary_key)->size(), 32u);
    EXPECT_NE(d->auth.primary_key, d->auth.secondary_key);
    EXPECT_FALSE(d->generation_id.empty());
    EXPECT_GT(d->version, 0u);
    auto got = registry_->get_device("d1");
    ASSERT_TRUE(got);
    EXPECT_EQ(got->auth.primary_key, d->auth.primary_key);
    EXPECT_EQ(got->version, d->version);
    ASSERT_EQ(changes_.size(), 1u);
    EXPECT_FALSE(changes_[0].before);
}

TEST_F(Registry, CreateKeepsGivenKeys) {
    constexpr auto key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
    auto d = registry_->put_device(
        device("d1", std::string(R"({"authentication":{"symmetricKey":{"primaryKey":")") + key +
                         R"("}}})"),
        {});
    ASSERT_TRUE(d);
    EXPECT_EQ(d->auth.primary_key, key);
    EXPECT_FALSE(d->auth.secondary_key.empty());
}

TEST_F(Registry, CreatingTwiceIsDeviceAlreadyExists) {
    ASSERT_TRUE(registry_->put_device(device("d1"), {}));
    auto again = registry_->put_device(device("d1"), {});
    ASSERT_FALSE(again);
    EXPECT_EQ(again.error().code(), errc::device_already_exists);
}

TEST_F(Registry, UpdateKeepsGenerationAndKeysAndStampsStatusChange) {
    auto d = *registry_->put_device(device("d1"), {});
    auto u = registry_->put_device(device("d1", R"({"status":"disabled"})"), any());
    ASSERT_TRUE(u) << u.error().message();
    EXPECT_EQ(u->generation_id, d.generation_id);
    EXPECT_EQ(u->auth.primary_key, d.auth.primary_key);
    EXPECT_EQ(u->status, device_status::disabled);
    EXPECT_TRUE(u->status_updated.has_value());
    EXPECT_GT(u->version, d.version);
}

TEST_F(Registry, StaleEtagIsPreconditionFailedAndChangesNothing) {
    auto d = *registry_->put_device(device("d1"), {});
    ASSERT_TRUE(registry_->put_device(device("d1", R"({"statusReason":"x"})"), etag(d)));
    auto stale = registry_->put_device(device("d1", R"({"status":"disabled"})"), etag(d));
    ASSERT_FALSE(stale);
    EXPECT_EQ(stale.error().code(), errc::precondition_failed);
    EXPECT_EQ(registry_->get_device("d1")->status, device_status::enabled);
    auto garbage = registry_->put_device(device("d1"), if_match::parse("\"nonsense\""));
    ASSERT_FALSE(garbage);
    EXPECT_EQ(garbage.error().code(), errc::precondition_failed);
}

TEST_F(Registry, UpdatingOrDeletingAMissingDeviceIsDeviceNotFound) {
    EXPECT_EQ(registry_->put_device(device("ghost"), any()).error().code(), errc::device_not_found);
    EXPECT_EQ(registry_->delete_device("ghost", any()).error().code(), errc::device_not_found);
    EXPECT_EQ(registry_->get_device("ghost").error().code(), errc::device_not_found);
}

TEST_F(Registry, DeleteHonoursEtag) {
    auto d = *registry_->put_device(device("d1"), {});
    auto newer = *registry_->put_device(device("d1"), any());
    EXPECT_EQ(registry_->delete_device("d1", etag(d)).error().code(), errc::precondition_failed);
    ASSERT_TRUE(registry_->delete_device("d1", etag(newer)));
    EXPECT_EQ(registry_->get_device("d1").error().code(), errc::device_not_found);
}

TEST_F(Registry, ModulesLiveAndDieWithTheirDevice) {
    EXPECT_EQ(registry_->put_module(module("d1", "m1"), {}).error().code(), errc::device_not_found);
    ASSERT_TRUE(registry_->put_device(device("d1"), {}));
    auto m = registry_->put_module(module("d1", "m1"), {});
    ASSERT_TRUE(m) << m.error().message();
    EXPECT_FALSE(m->auth.primary_key.empty());
    EXPECT_EQ(registry_->put_module(module("d1", "m1"), {}).error().code(),
              errc::module_already_exists);
    ASSERT_TRUE(registry_->put_module(module("d1", "m2"), {}));
    EXPECT_EQ(registry_->list_modules("d1")->size(), 2u);

    ASSERT_TRUE(registry_->delete_device("d1", any()));
    ASSERT_TRUE(registry_->put_device(device("d1"), {}));
    EXPECT_TRUE(registry_->list_modules("d1")->empty()) << "a new incarnation starts clean";
    EXPECT_EQ(registry_->get_module("d1", "m1").error().code(), errc::module_not_found);
    ASSERT_TRUE(registry_->put_module(module("d1", "m1"), {}));
}

TEST_F(Registry, ModuleUpdateDeleteAndLimit) {
    ASSERT_TRUE(registry_->put_device(device("d1"), {}));
    auto m = *registry_->put_module(module("d1", "m1"), {});
    auto u = registry_->put_module(module("d1", "m1", R"({"managedBy":"me"})"), etag(m));
    ASSERT_TRUE(u);
    EXPECT_EQ(u->managed_by, "me");
    EXPECT_EQ(registry_->delete_module("d1", "m1", etag(m)).error().code(),
              errc::precondition_failed);
    ASSERT_TRUE(registry_->delete_module("d1", "m1", any()));
    EXPECT_EQ(registry_->delete_module("d1", "m1", any()).error().code(), errc::module_not_found);
    for (auto id : {"a", "b", "c"}) ASSERT_TRUE(registry_->put_module(module("d1", id), {}));
    EXPECT_EQ(registry_->put_module(module("d1", "d"), {}).error().code(), errc::too_many_modules);
}

TEST_F(Registry, ListHonoursTopAndStatisticsCount) {
    for (auto id : {"c", "a", "b"}) ASSERT_TRUE(registry_->put_device(device(id), {}));
    ASSERT_TRUE(registry_->put_device(device("b", R"({"status":"disabled"})"), any()));
    auto two = registry_->list_devices(2);
    ASSERT_TRUE(two);
    ASSERT_EQ(two->size(), 2u);
    EXPECT_EQ((*two)[0].device_id, "a");
    auto stats = registry_->statistics();
    ASSERT_TRUE(stats);
    EXPECT_EQ(stats->total, 3u);
    EXPECT_EQ(stats->enabled, 2u);
    EXPECT_EQ(stats->disabled, 1u);
}

TEST_F(Registry, BulkReportsPerItemAndAppliesTheRest) {
    ASSERT_TRUE(registry_->put_device(device("exists"), {}));
    ASSERT_TRUE(registry_->put_device(device("guarded"), {}));
    auto items = parse_bulk(json::parse(R"([
        {"id":"new1","importMode":"create"},
        {"id":"exists","importMode":"create"},
        {"id":"ghost","importMode":"Delete"},
        {"id":"guarded","importMode":"UpdateIfMatchETag","eTag":"bad","status":"disabled"},
        {"id":"new2","importMode":"createOrUpdate","status":"disabled"}
    ])"),
                            limits_);
    ASSERT_TRUE(items) << items.error().message();
    auto r = registry_->bulk(std::move(*items));
    ASSERT_TRUE(r);
    ASSERT_EQ(r->errors.size(), 3u);
    EXPECT_EQ(r->errors[0].cause.code(), errc::device_already_exists);
    EXPECT_EQ(r->errors[1].cause.code(), errc::device_not_found);
    EXPECT_EQ(r->errors[2].cause.code(), errc::precondition_failed);
    EXPECT_EQ(r->errors[1].operation, "Delete");
    EXPECT_TRUE(registry_->get_device("new1"));
    EXPECT_EQ(registry_->get_device("new2")->status, device_status::disabled);
    EXPECT_EQ(registry_->get_device("guarded")->status, device_status::enabled);
    auto j = to_json(*r);
    EXPECT_EQ(j["isSuccessful"], false);
    EXPECT_EQ(j["errors"].as_array()[0].as_object()["errorCode"], "DeviceAlreadyExists");
}

TEST_F(Registry, BulkDeletesAndUpdates) {
    ASSERT_TRUE(registry_->put_device(device("a"), {}));
    ASSERT_TRUE(registry_->put_device(device("b"), {}));
    auto items = parse_bulk(json::parse(R"([
        {"id":"a","importMode":"delete"},
        {"id":"b","importMode":"update","status":"disabled"}])"),
                            limits_);
    ASSERT_TRUE(items);
    auto r = registry_->bulk(std::move(*items));
    ASSERT_TRUE(r);
    EXPECT_TRUE(r->successful());
    EXPECT_EQ(registry_->get_device("a").error().code(), errc::device_not_found);
    EXPECT_EQ(registry_->get_device("b")->status, device_status::disabled);
}

TEST_F(Registry, BulkRequestLevelErrorsRejectEverything) {
    auto code = [&](std::string_view body) {
        auto r = parse_bulk(json::parse(body), limits_);
        return r ? errc::server_error : r.error().code();
    };
    EXPECT_EQ(code(R"({})"), errc::argument_invalid);
    EXPECT_EQ(code(R"([])"), errc::argument_invalid);
    EXPECT_EQ(code(R"([{"id":"a","importMode":"explode"}])"), errc::argument_invalid);
    EXPECT_EQ(code(R"([{"id":"a"},{"id":"a"}])"), errc::defined_multiple_times);
    EXPECT_EQ(code(R"([{"id":"bad id"}])"), errc::argument_invalid);
    json::array many;
    for (int i = 0; i < 101; ++i) many.push_back(json::object{{"id", "d" + std::to_string(i)}});
    EXPECT_EQ(parse_bulk(many, registry_limits{}).error().code(), errc::too_many_devices);
}

}  // namespace
}  // namespace iothub::registry
