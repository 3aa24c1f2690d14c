// Device registration: the group key derivation, what authenticates (individual key, group-derived
// key, scope, resource, expiry), the assignment handed to the hub (keys, device id, initial twin
// only at the first assignment unless data is reset), disabled enrollments, and polling.
#include "dps/registrations.hpp"

#include "auth/sas.hpp"
#include "storage/engine.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

namespace iothub::dps {
namespace {
namespace json = boost::json;

const sys_time t0 = sys_time(std::chrono::seconds(1700000000));
constexpr std::string_view scope = "0ne00ABCDEF";
constexpr std::string_view group_key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

TEST(DeriveDeviceKey, IsHmacSha256OfTheRegistrationIdUnderTheGroupKey) {
    // Computed independently (Python's hmac module).
    EXPECT_EQ(derive_device_key(group_key, "lamp-1"),
              "lBd4p244PWDZPJ2yWTkU0FVGEBWsnu44uP74gqbm0Vc=");
}

class Registrations : public ::testing::Test {
  protected:
    registration_request request(std::string id, std::string key, std::string sr = {},
                                 sys_time expiry = t0 + std::chrono::hours(1)) {
        if (sr.empty()) sr = std::string(scope) + "/registrations/" + id;
        registration_request r;
        r.id_scope = std::string(scope);
        r.registration_id = std::move(id);
        r.authorization = auth::make_sas_token(
            sr, key,
            std::chrono::duration_cast<std::chrono::seconds>(expiry.time_since_epoch()).count(),
            "registration");
        return r;
    }
    std::string enroll(std::string_view id, std::string_view extra = "") {
        auto e = enrollments_.put(
            enrollment_kind::individual, id,
            json::parse(R"({"attestation":{"type":"symmetricKey"})" + std::string(extra) + "}")
                .as_object(),
            "", t0);
        EXPECT_TRUE(e) << e.error().message();
        return std::string(e->at("attestation").at("symmetricKey").at("primaryKey").as_string());
    }

    std::unique_ptr<storage::engine> engine_ = storage::open_memory();
    enrollment_store enrollments_{engine_->kv()};
    linked_hub_store hubs_{engine_->kv(), "hub.example"};
    std::vector<device_assignment> assigned_;
    std::vector<json::object> webhook_requests_;
    std::function<result<json::object>(const json::object&)> webhook_answer_;
    registration_service service_{
        engine_->kv(),
        enrollments_,
        hubs_,
        std::string(scope),
        [this](const device_assignment& a) -> result<void> {
            assigned_.push_back(a);
            return {};
        },
        [this](std::string_view, const json::object& request) -> result<json::object> {
            webhook_requests_.push_back(request);
            if (!webhook_answer_) return error(errc::service_unavailable, "no webhook");
            return webhook_answer_(request);
        }};
};

TEST_F(Registrations, AnIndividualEnrollmentIsAssignedAndPolled) {
    const auto key = enroll("dev-1", R"(,"deviceId":"device-one",
        "initialTwin":{"properties":{"desired":{"x":1}}})");
    auto op = service_.register_device(request("dev-1", key), t0);
    ASSERT_TRUE(op) << op.error().message();
    EXPECT_EQ(op->at("status"), "assigning");
    ASSERT_EQ(assigned_.size(), 1u);
    EXPECT_EQ(assigned_[0].device_id, "device-one");
    EXPECT_EQ(assigned_[0].primary_key, key);
    ASSERT_TRUE(assigned_[0].initial_twin);

    auto done =
        service_.operation_status(request("dev-1", key), op->at("operationId").as_string(), t0);
    ASSERT_TRUE(done) << done.error().message();
    EXPECT_EQ(done->at("status"), "assigned");
    EXPECT_EQ(done->at("registrationState").at("assignedHub"), "hub.example");
    EXPECT_EQ(done->at("registrationState").at("substatus"), "initialAssignment");
    EXPECT_EQ(service_.operation_status(request("dev-1", key), "5.nope", t0).error().code(),
              errc::not_found);

    // Again: the device's data stays (no initial twin); a reset applies it again.
    ASSERT_TRUE(service_.register_device(request("dev-1", key), t0));
    EXPECT_FALSE(assigned_.back().initial_twin);
    ASSERT_TRUE(enrollments_.put(enrollment_kind::individual, "dev-1",
                                 json::parse(R"({"attestation":{"type":"symmetricKey",
                                     "symmetricKey":{"primaryKey":")" +
                                             key + R"("}},
                                     "initialTwin":{"tags":{"a":1}},
                                     "reprovisionPolicy":{"migrateDeviceData":false}})")
                                     .as_object(),
                                 "", t0));
    auto reset = service_.register_device(request("dev-1", key), t0);
    ASSERT_TRUE(reset);
    EXPECT_TRUE(assigned_.back().initial_twin);
    auto state = service_.state("DEV-1");
    ASSERT_TRUE(state);
    EXPECT_EQ(state->at("substatus"), "deviceDataReset");
}

TEST_F(Registrations, ALinkedHubOrAWebhookChoosesWhereTheDeviceGoes) {
    const std::string other = "HostName=hub-b.example;SharedAccessKeyName=o;SharedAccessKey=AAAA";
    ASSERT_TRUE(hubs_.put({{"connectionString", other}}, "hub-b.example"));
    const auto key = enroll("moving-1", R"(,"allocationPolicy":"custom",
        "customAllocationDefinition":{"webhookUrl":"http://127.0.0.1:1/a"},
        "initialTwin":{"tags":{"from":"enrollment"}})");
    webhook_answer_ = [](const json::object& r) -> result<json::object> {
        return json::object{{"iotHubHostName", "hub-b.example"},
                            {"payload", r.at("deviceRuntimeContext").at("payload")}};
    };
    auto r = request("moving-1", key);
    r.payload = json::object{{"echo", 7}};
    auto op = service_.register_device(r, t0);
    ASSERT_TRUE(op) << op.error().message();
    ASSERT_EQ(assigned_.size(), 1u);
    EXPECT_EQ(assigned_[0].hub.host_name, "hub-b.example");
    EXPECT_FALSE(assigned_[0].hub.is_self());
    EXPECT_FALSE(assigned_[0].migrate_from);
    auto done = service_.operation_status(r, op->at("operationId").as_string(), t0);
    ASSERT_TRUE(done);
    EXPECT_EQ(done->at("registrationState").at("assignedHub"), "hub-b.example");
    EXPECT_EQ(json::serialize(done->at("registrationState").at("payload")), R"({"echo":7})");

    // The webhook moves it home: its data goes along from the hub it leaves.
    webhook_answer_ = [](const json::object&) -> result<json::object> {
        return json::object{{"iotHubHostName", "hub.example"}};
    };
    ASSERT_TRUE(service_.register_device(r, t0));
    ASSERT_EQ(assigned_.size(), 2u);
    EXPECT_TRUE(assigned_[1].hub.is_self());
    ASSERT_TRUE(assigned_[1].migrate_from);
    EXPECT_EQ(assigned_[1].migrate_from->host_name, "hub-b.example");
    auto state = service_.state("moving-1");
    ASSERT_TRUE(state);
    EXPECT_EQ(state->at("substatus"), "deviceDataMigrated");

    // Back to the hub it was first assigned to: a return, not a move to a new hub; its data
    // still goes along.
    webhook_answer_ = [](const json::object&) -> result<json::object> {
        return json::object{{"iotHubHostName", "HUB-B.example"}};
    };
    ASSERT_TRUE(service_.register_device(r, t0));
    ASSERT_EQ(assigned_.size(), 3u);
    ASSERT_TRUE(assigned_[2].migrate_from);
    EXPECT_TRUE(assigned_[2].migrate_from->is_self());
    state = service_.state("moving-1");
    ASSERT_TRUE(state);
    EXPECT_EQ(state->at("substatus"), "reprovisionedToInitialAssignment");
    // Staying where it is, it is not a return.
    ASSERT_TRUE(service_.register_device(r, t0));
    EXPECT_EQ(service_.state("moving-1")->at("substatus"), "deviceDataMigrated");

    // A webhook that fails fails the registration and assigns nothing, and the hubs the device
    // was on are still known afterwards.
    webhook_answer_ = nullptr;
    auto failed = service_.register_device(r, t0);
    ASSERT_TRUE(failed);
    EXPECT_EQ(assigned_.size(), 4u);
    state = service_.state("moving-1");
    EXPECT_EQ(state->at("status"), "failed");
    for (const auto& [k, v] : *state) EXPECT_NE(k, "assignedHubsBefore") << "kept, never shown";
    webhook_answer_ = [](const json::object&) -> result<json::object> {
        return json::object{{"iotHubHostName", "hub.example"}};
    };
    ASSERT_TRUE(service_.register_device(r, t0));
    EXPECT_EQ(service_.state("moving-1")->at("substatus"), "reprovisionedToInitialAssignment");
}

TEST_F(Registrations, AGroupDeviceSignsWithItsDerivedKey) {
    ASSERT_TRUE(enrollments_.put(enrollment_kind::group, "floor",
                                 json::parse(R"({"attestation":{"type":"symmetricKey",
                                     "symmetricKey":{"primaryKey":")" +
                                             std::string(group_key) + R"("}}})")
                                     .as_object(),
                                 "", t0));
    auto op =
        service_.register_device(request("lamp-1", derive_device_key(group_key, "lamp-1")), t0);
    ASSERT_TRUE(op) << op.error().message();
    ASSERT_EQ(assigned_.size(), 1u);
    EXPECT_EQ(assigned_[0].device_id, "lamp-1");
    EXPECT_EQ(assigned_[0].primary_key, derive_device_key(group_key, "lamp-1"));
    // The group key itself is not the device's.
    EXPECT_EQ(
        service_.register_device(request("lamp-1", std::string(group_key)), t0).error().code(),
        errc::unauthorized);
    auto page = service_.states_of_group("FLOOR", 10, "");
    ASSERT_TRUE(page);
    ASSERT_EQ(page->items.size(), 1u);
    EXPECT_EQ(page->items[0].at("registrationId"), "lamp-1");
}

TEST_F(Registrations, RefusesWhatDoesNotAuthenticate) {
    const auto key = enroll("dev-2");
    auto refused = [&](const registration_request& r) {
        auto out = service_.register_device(r, t0);
        return out ? errc{} : out.error().code();
    };
    EXPECT_EQ(refused(request("dev-2", enroll("other"))), errc::unauthorized) << "another key";
    EXPECT_EQ(refused(request("dev-2", key, "0ne00ABCDEF/registrations/other")), errc::unauthorized)
        << "another resource";
    EXPECT_EQ(refused(request("dev-2", key, {}, t0 - std::chrono::seconds(1))), errc::unauthorized)
        << "expired";
    auto wrong_scope = request("dev-2", key);
    wrong_scope.id_scope = "0ne00000000";
    EXPECT_EQ(refused(wrong_scope), errc::unauthorized);
    EXPECT_EQ(refused(request("unknown", key)), errc::unauthorized);
    EXPECT_TRUE(assigned_.empty());
}

TEST_F(Registrations, ADisabledEnrollmentAssignsNothing) {
    const auto key = enroll("off", R"(,"provisioningStatus":"disabled")");
    auto op = service_.register_device(request("off", key), t0);
    ASSERT_TRUE(op) << op.error().message();
    EXPECT_EQ(op->at("status"), "disabled");
    EXPECT_TRUE(assigned_.empty());
}

}  // namespace
}  // namespace iothub::dps
