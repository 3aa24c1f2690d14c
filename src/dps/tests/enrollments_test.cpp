// Enrollments: defaults Azure fills in, generated and given keys, ETags and If-Match, ids that
// compare ignoring case, refusals (TPM, bad ids, bad fields), X.509 certificates described, query
// pages with continuation, and bulk operations.
#include "dps/enrollments.hpp"

#include "common/encoding.hpp"
#include "storage/engine.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

namespace iothub::dps {
namespace {
namespace json = boost::json;

const sys_time t0 = sys_time(std::chrono::seconds(1700000000));

json::object parse(std::string_view text) {
    return json::parse(text).as_object();
}

class Enrollments : public ::testing::Test {
  protected:
    std::unique_ptr<storage::engine> engine_ = storage::open_memory();
    enrollment_store store_{engine_->kv()};
};

TEST_F(Enrollments, AnIndividualSymmetricKeyEnrollmentGetsAzuresDefaults) {
    auto e = store_.put(
        enrollment_kind::individual, "Dev-01",
        parse(R"({"registrationId":"Dev-01","attestation":{"type":"symmetricKey"}})"), "", t0);
    ASSERT_TRUE(e) << e.error().message();
    EXPECT_EQ(e->at("registrationId"), "Dev-01");
    EXPECT_EQ(e->at("provisioningStatus"), "enabled");
    EXPECT_EQ(e->at("allocationPolicy"), "hashed");
    EXPECT_EQ(e->at("reprovisionPolicy").at("updateHubAssignment"), true);
    EXPECT_EQ(e->at("reprovisionPolicy").at("migrateDeviceData"), true);
    EXPECT_EQ(e->at("capabilities").at("iotEdge"), false);
    const auto& keys = e->at("attestation").at("symmetricKey");
    auto primary = base64_decode(keys.at("primaryKey").as_string());
    ASSERT_TRUE(primary);
    EXPECT_EQ(primary->size(), 64u) << "generated as DPS does";
    EXPECT_NE(keys.at("primaryKey"), keys.at("secondaryKey"));
    EXPECT_EQ(e->at("createdDateTimeUtc"), e->at("lastUpdatedDateTimeUtc"));
    ASSERT_TRUE(e->contains("etag"));

    // Ids compare ignoring case; the attestation mechanism reveals the same keys.
    auto again = store_.get(enrollment_kind::individual, "dev-01");
    ASSERT_TRUE(again);
    EXPECT_EQ(again->at("etag"), e->at("etag"));
    auto mechanism = store_.attestation(enrollment_kind::individual, "DEV-01");
    ASSERT_TRUE(mechanism);
    EXPECT_EQ(mechanism->at("symmetricKey"), keys);
}

TEST_F(Enrollments, ETagsGuardUpdatesAndDeletes) {
    const auto doc = parse(R"({"attestation":{"type":"symmetricKey","symmetricKey":{
        "primaryKey":"MDEyMzQ1Njc4OWFiY2RlZg==","secondaryKey":"ZmVkY2JhOTg3NjU0MzIxMA=="}},
        "initialTwin":{"tags":{"site":"north"},"properties":{"desired":{"interval":5}}}})");
    auto first = store_.put(enrollment_kind::individual, "d1", doc, "", t0);
    ASSERT_TRUE(first) << first.error().message();
    EXPECT_EQ(first->at("attestation").at("symmetricKey").at("primaryKey"),
              "MDEyMzQ1Njc4OWFiY2RlZg==");
    EXPECT_EQ(first->at("initialTwin").at("tags").at("site"), "north");
    const std::string etag(first->at("etag").as_string());

    auto second = store_.put(enrollment_kind::individual, "d1", doc, "\"" + etag + "\"",
                             t0 + std::chrono::seconds(5));
    ASSERT_TRUE(second) << second.error().message();
    EXPECT_NE(second->at("etag"), first->at("etag"));
    EXPECT_EQ(second->at("createdDateTimeUtc"), first->at("createdDateTimeUtc"));
    EXPECT_NE(second->at("lastUpdatedDateTimeUtc"), first->at("lastUpdatedDateTimeUtc"));

    auto stale = store_.put(enrollment_kind::individual, "d1", doc, etag, t0);
    ASSERT_FALSE(stale);
    EXPECT_EQ(stale.error().code(), errc::precondition_failed);
    EXPECT_EQ(store_.remove(enrollment_kind::individual, "d1", etag).error().code(),
              errc::precondition_failed);
    ASSERT_TRUE(store_.remove(enrollment_kind::individual, "d1",
                              std::string(second->at("etag").as_string())));
    EXPECT_EQ(store_.get(enrollment_kind::individual, "d1").error().code(), errc::not_found);
    EXPECT_EQ(store_.put(enrollment_kind::individual, "d1", doc, "*", t0).error().code(),
              errc::not_found)
        << "If-Match * needs an existing enrollment";
}

TEST_F(Enrollments, RefusesWhatAzureRefuses) {
    auto refused = [&](enrollment_kind k, std::string_view id, std::string_view doc) {
        auto r = store_.put(k, id, parse(doc), "", t0);
        return r ? std::string("accepted") : r.error().message();
    };
    EXPECT_NE(refused(enrollment_kind::individual, "d",
                      R"({"attestation":{"type":"tpm","tpm":{"endorsementKey":"AAA="}}})")
                  .find("TPM attestation is not supported"),
              std::string::npos);
    EXPECT_NE(refused(enrollment_kind::individual, "d", "{}").find("no attestation"),
              std::string::npos);
    EXPECT_NE(refused(enrollment_kind::individual, "bad id!",
                      R"({"attestation":{"type":"symmetricKey"}})")
                  .find("is not valid"),
              std::string::npos);
    EXPECT_NE(
        refused(enrollment_kind::individual, "ends.", R"({"attestation":{"type":"symmetricKey"}})")
            .find("is not valid"),
        std::string::npos);
    EXPECT_NE(refused(enrollment_kind::individual, "d",
                      R"({"registrationId":"other","attestation":{"type":"symmetricKey"}})")
                  .find("differs"),
              std::string::npos);
    EXPECT_NE(refused(enrollment_kind::individual, "d",
                      R"({"attestation":{"type":"symmetricKey"},"provisioningStatus":"paused"})")
                  .find("provisioningStatus"),
              std::string::npos);
    EXPECT_NE(refused(enrollment_kind::individual, "d",
                      R"({"attestation":{"type":"symmetricKey"},"allocationPolicy":"custom"})")
                  .find("customAllocationDefinition"),
              std::string::npos);
    EXPECT_NE(
        refused(enrollment_kind::individual, "d",
                R"({"attestation":{"type":"symmetricKey","symmetricKey":{"primaryKey":"x"}}})")
            .find("Base64"),
        std::string::npos);
    EXPECT_NE(refused(enrollment_kind::group, "g",
                      R"({"attestation":{"type":"x509","x509":{"signingCertificates":{
                          "primary":{"certificate":"not a certificate"}}}}})")
                  .find("neither PEM nor Base64 DER"),
              std::string::npos);
}

TEST_F(Enrollments, AGroupMayNameACaByReference) {
    auto g = store_.put(enrollment_kind::group, "Line-7",
                        parse(R"({"enrollmentGroupId":"Line-7","attestation":{"type":"x509",
                            "x509":{"caReferences":{"primary":"factory-root"}}},
                            "allocationPolicy":"static","iotHubs":["hub.example"]})"),
                        "", t0);
    ASSERT_TRUE(g) << g.error().message();
    EXPECT_EQ(g->at("attestation").at("x509").at("caReferences").at("primary"), "factory-root");
    EXPECT_EQ(g->at("allocationPolicy"), "static");
    EXPECT_FALSE(g->contains("registrationId"));
}

TEST_F(Enrollments, QueriesPageWithAContinuation) {
    for (int i = 0; i < 5; ++i)
        ASSERT_TRUE(store_.put(enrollment_kind::individual, "dev-" + std::to_string(i),
                               parse(R"({"attestation":{"type":"symmetricKey"}})"), "", t0));
    std::vector<std::string> seen;
    std::string continuation;
    int pages = 0;
    do {
        auto page =
            store_.query(enrollment_kind::individual, "SELECT * FROM enrollments", 2, continuation);
        ASSERT_TRUE(page) << page.error().message();
        for (const auto& e : page->items) seen.emplace_back(e.at("registrationId").as_string());
        continuation = page->continuation;
        ASSERT_LT(++pages, 10);
    } while (!continuation.empty());
    EXPECT_EQ(pages, 3);
    EXPECT_EQ(seen, (std::vector<std::string>{"dev-0", "dev-1", "dev-2", "dev-3", "dev-4"}));
    EXPECT_EQ(
        store_.query(enrollment_kind::individual, "SELECT * FROM enrollments WHERE x = 1", 2, "")
            .error()
            .code(),
        errc::argument_invalid);
    auto groups = store_.query(enrollment_kind::group, "select * from enrollmentGroups", 10, "");
    ASSERT_TRUE(groups);
    EXPECT_TRUE(groups->items.empty());
}

TEST_F(Enrollments, BulkOperationsReportEachFailure) {
    auto r = store_.bulk(enrollment_kind::individual, parse(R"({"mode":"create","enrollments":[
        {"registrationId":"b1","attestation":{"type":"symmetricKey"}},
        {"registrationId":"b2","attestation":{"type":"tpm"}}]})"),
                         t0);
    ASSERT_TRUE(r) << r.error().message();
    EXPECT_EQ(r->at("isSuccessful"), false);
    ASSERT_EQ(r->at("errors").as_array().size(), 1u);
    EXPECT_EQ(r->at("errors").at(0).at("registrationId"), "b2");
    EXPECT_EQ(r->at("errors").at(0).at("errorCode"), 400004);
    ASSERT_TRUE(store_.get(enrollment_kind::individual, "b1"));

    auto again = store_.bulk(enrollment_kind::individual, parse(R"({"mode":"create",
        "enrollments":[{"registrationId":"b1","attestation":{"type":"symmetricKey"}}]})"),
                             t0);
    ASSERT_TRUE(again);
    EXPECT_EQ(again->at("errors").at(0).at("errorCode"), 409201) << "create does not replace";

    auto gone =
        store_.bulk(enrollment_kind::individual,
                    parse(R"({"mode":"delete","enrollments":[{"registrationId":"b1"}]})"), t0);
    ASSERT_TRUE(gone);
    EXPECT_EQ(gone->at("isSuccessful"), true);
    EXPECT_EQ(store_.get(enrollment_kind::individual, "b1").error().code(), errc::not_found);

    json::array eleven;
    for (int i = 0; i < 11; ++i) eleven.push_back(json::object{{"registrationId", "x"}});
    EXPECT_EQ(store_
                  .bulk(enrollment_kind::individual,
                        json::object{{"mode", "create"}, {"enrollments", eleven}}, t0)
                  .error()
                  .code(),
              errc::argument_invalid);
}

}  // namespace
}  // namespace iothub::dps
