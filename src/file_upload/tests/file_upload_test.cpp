#include "file_upload/file_upload.hpp"

#include "common/encoding.hpp"
#include "storage/engine.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <unistd.h>

namespace iothub::file_upload {
namespace {
namespace json = boost::json;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

const sys_time t0 = sys_time(std::chrono::seconds(1700000000));

// The query of a SAS as the HTTP layer hands it over: split at '&' and '=', percent-decoded.
std::vector<std::pair<std::string, std::string>> query_of(std::string_view sas) {
    std::vector<std::pair<std::string, std::string>> out;
    if (sas.starts_with('?')) sas.remove_prefix(1);
    while (!sas.empty()) {
        auto amp = sas.find('&');
        auto part = sas.substr(0, amp);
        auto eq = part.find('=');
        out.emplace_back(std::string(part.substr(0, eq)),
                         percent_decode(part.substr(eq + 1)).value_or(""));
        sas = amp == std::string_view::npos ? std::string_view{} : sas.substr(amp + 1);
    }
    return out;
}

void set(std::vector<std::pair<std::string, std::string>>& q, const std::string& k, std::string v) {
    for (auto& [key, value] : q)
        if (key == k) value = std::move(v);
}

TEST(SafeSegments, AcceptsNestedNames) {
    auto s = safe_segments("logs/2024/a.txt");
    ASSERT_TRUE(s);
    EXPECT_EQ(*s, (std::vector<std::string>{"logs", "2024", "a.txt"}));
}

TEST(SafeSegments, RefusesEscapes) {
    for (const std::string& bad : std::vector<std::string>{
             "", "/etc/passwd", "../x", "a/../../x", "a/./b", "a//b", "a/", ".", "..",
             std::string("a\0b", 3), "a\\..\\b", std::string(1025, 'x')})
        EXPECT_FALSE(safe_segments(bad)) << bad;
}

TEST(Sas, SignedTokenChecksForItsBlobOnly) {
    const std::string secret = "0123456789abcdef0123456789abcdef";
    auto sas = sign_sas(secret, "c", "dev1/a.txt", t0 + 1h);
    ASSERT_TRUE(sas.starts_with("?sv=2018-03-28&sr=b&sig="));
    auto q = query_of(sas);
    EXPECT_TRUE(check_sas(secret, "c", "dev1/a.txt", q, t0));
    // Another blob, another container, another secret: all refused.
    EXPECT_FALSE(check_sas(secret, "c", "dev1/b.txt", q, t0));
    EXPECT_FALSE(check_sas(secret, "c", "dev2/a.txt", q, t0));
    EXPECT_FALSE(check_sas(secret, "d", "dev1/a.txt", q, t0));
    EXPECT_FALSE(check_sas("another secret", "c", "dev1/a.txt", q, t0));
    // Expired.
    auto expired = check_sas(secret, "c", "dev1/a.txt", q, t0 + 2h);
    ASSERT_FALSE(expired);
    EXPECT_EQ(expired.error().code(), errc::unauthorized);
    EXPECT_NE(expired.error().message().find("expired"), std::string::npos);
    // A stretched expiry or changed permissions break the signature.
    auto stretched = q;
    set(stretched, "se", "2099-01-01T00:00:00Z");
    EXPECT_FALSE(check_sas(secret, "c", "dev1/a.txt", stretched, t0));
    auto read_only = q;
    set(read_only, "sp", "r");
    EXPECT_FALSE(check_sas(secret, "c", "dev1/a.txt", read_only, t0));
    // Missing parts.
    EXPECT_FALSE(check_sas(secret, "c", "dev1/a.txt", {}, t0));
}

TEST(BlockList, Parses) {
    auto ids = parse_block_list(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<BlockList><Latest>QUE=</Latest>\n"
        "<Uncommitted>QkI=</Uncommitted><Committed>Q0M=</Committed></BlockList>");
    ASSERT_TRUE(ids);
    EXPECT_EQ(*ids, (std::vector<std::string>{"QUE=", "QkI=", "Q0M="}));
    auto empty = parse_block_list("<BlockList></BlockList>");
    ASSERT_TRUE(empty);
    EXPECT_TRUE(empty->empty());
    EXPECT_FALSE(parse_block_list("<BlockList><Latest>x</Latest>"));
    EXPECT_FALSE(parse_block_list("<BlockList><Other>x</Other></BlockList>"));
    EXPECT_FALSE(parse_block_list("<BlockList><Latest></Latest></BlockList>"));
}

TEST(Md5, KnownValue) {
    EXPECT_EQ(md5_base64(""), "1B2M2Y8AsgTpgAmY7PhCfg==");
}

class FileUpload : public ::testing::Test {
  protected:
    void SetUp() override {
        root_ = fs::temp_directory_path() /
                ("iothub-files-test-" + std::to_string(::getpid()) + "-" +
                 ::testing::UnitTest::GetInstance()->current_test_info()->name());
        fs::remove_all(root_);
        engine_ = storage::open_memory();
        settings_.host_name = "hub.example";
        settings_.max_bytes = 1000;
        restart();
    }
    void TearDown() override {
        service_.reset();
        fs::remove_all(root_);
    }
    // A new service over the same storage and directory, as after a hub restart.
    void restart() {
        service_.reset();
        blobs_.reset();
        auto blobs = storage::open_file_blobs(root_);
        ASSERT_TRUE(blobs) << blobs.error().message();
        blobs_ = std::move(*blobs);
        service_ = std::make_unique<file_upload_service>(engine_->kv(), *blobs_, settings_);
        auto r = service_->load();
        ASSERT_TRUE(r) << r.error().message();
    }
    std::vector<std::string> path(const upload_grant& g) { return *safe_segments(g.blob_name); }

    // Opens a session, uploads `body` with Put Blob, reports success.
    void upload(const std::string& device, const std::string& name, const std::string& body) {
        auto g = service_->start_upload(device, name, t0);
        ASSERT_TRUE(g);
        ASSERT_TRUE(service_->authorize(path(*g), query_of(g->sas_token), t0));
        ASSERT_TRUE(service_->put_blob(path(*g), body, t0));
        ASSERT_TRUE(service_->notify(device, g->correlation_id, true, t0));
    }

    fs::path root_;
    std::unique_ptr<storage::blob_store> blobs_;
    upload_settings settings_;
    std::unique_ptr<storage::engine> engine_;
    std::unique_ptr<file_upload_service> service_;
};

TEST_F(FileUpload, GrantNamesTheDevicesBlob) {
    auto g = service_->start_upload("dev1", "dir/a.txt", t0);
    ASSERT_TRUE(g);
    EXPECT_EQ(g->blob_name, "dev1/dir/a.txt");
    EXPECT_EQ(g->container, std::string(default_container));
    EXPECT_EQ(g->host_name, "hub.example");
    EXPECT_FALSE(g->correlation_id.empty());
    EXPECT_TRUE(service_->authorize(path(*g), query_of(g->sas_token), t0));
    EXPECT_FALSE(service_->authorize({"dev2", "dir", "a.txt"}, query_of(g->sas_token), t0));
    EXPECT_FALSE(service_->authorize(path(*g), query_of(g->sas_token), t0 + 2h));
    EXPECT_FALSE(service_->start_upload("dev1", "../../etc/passwd", t0));
}

TEST_F(FileUpload, PutBlobStoresUnderTheDataDirectory) {
    upload("dev1", "dir/a.txt", "hello");
    std::ifstream in(root_ / default_container / "dev1" / "dir" / "a.txt");
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    EXPECT_EQ(text, "hello");
    auto data = service_->read("dev1", "dir/a.txt");
    ASSERT_TRUE(data);
    EXPECT_EQ(*data, "hello");
    EXPECT_FALSE(service_->read("dev2", "dir/a.txt"));
    EXPECT_FALSE(service_->read("dev1", "../dev1/dir/a.txt"));
    auto all = service_->list(std::nullopt);
    ASSERT_TRUE(all);
    ASSERT_EQ(all->size(), 1u);
    EXPECT_EQ((*all)[0].device_id, "dev1");
    EXPECT_EQ((*all)[0].blob_name, "dir/a.txt");
    EXPECT_EQ((*all)[0].size, 5u);
    EXPECT_TRUE(service_->list(std::string("dev2"))->empty());
}

TEST_F(FileUpload, BlocksAssembleInListOrder) {
    auto g = service_->start_upload("dev1", "big.bin", t0);
    ASSERT_TRUE(g);
    auto p = path(*g);
    ASSERT_TRUE(service_->put_block(p, "AAA=", "first-"));
    ASSERT_TRUE(service_->put_block(p, "BBB=", "second-"));
    ASSERT_TRUE(service_->put_block(p, "CC/C", "third"));  // '/' in a block id stays harmless
    // Nothing is visible until the list commits.
    EXPECT_FALSE(service_->read("dev1", "big.bin"));
    auto unknown = service_->put_block_list(p, {"AAA=", "ZZZ="}, t0);
    ASSERT_FALSE(unknown);
    EXPECT_EQ(unknown.error().code(), errc::argument_invalid);
    auto info = service_->put_block_list(p, {"CC/C", "AAA=", "BBB="}, t0);
    ASSERT_TRUE(info) << info.error().message();
    EXPECT_EQ(info->size, 18u);
    EXPECT_EQ(info->content_md5, md5_base64("thirdfirst-second-"));
    EXPECT_EQ(*service_->read("dev1", "big.bin"), "thirdfirst-second-");
    // The staging area is cleared: the blocks cannot be committed twice.
    EXPECT_FALSE(service_->put_block_list(p, {"AAA="}, t0));
}

TEST_F(FileUpload, SizeLimit) {
    auto g = service_->start_upload("dev1", "x", t0);
    auto p = path(*g);
    auto big = service_->put_blob(p, std::string(1001, 'x'), t0);
    ASSERT_FALSE(big);
    EXPECT_EQ(big.error().code(), errc::request_too_large);
    ASSERT_TRUE(service_->put_block(p, "a", std::string(600, 'x')));
    auto over = service_->put_block(p, "b", std::string(600, 'x'));
    ASSERT_FALSE(over);
    EXPECT_EQ(over.error().code(), errc::request_too_large);
    // Restaging the same block replaces it rather than adding to it.
    EXPECT_TRUE(service_->put_block(p, "a", std::string(700, 'x')));
}

TEST_F(FileUpload, NotifyNeedsTheDevicesOpenSession) {
    auto g = service_->start_upload("dev1", "a.txt", t0);
    ASSERT_TRUE(g);
    // Another device cannot end it, an unknown id is not found.
    auto other = service_->notify("dev2", g->correlation_id, true, t0);
    ASSERT_FALSE(other);
    EXPECT_EQ(other.error().code(), errc::not_found);
    EXPECT_EQ(service_->notify("dev1", "nope", true, t0).error().code(), errc::not_found);
    // Success without a blob is refused.
    auto no_blob = service_->notify("dev1", g->correlation_id, true, t0);
    ASSERT_FALSE(no_blob);
    EXPECT_EQ(no_blob.error().code(), errc::argument_invalid);
    // A failure ends the session without a notification.
    ASSERT_TRUE(service_->notify("dev1", g->correlation_id, false, t0));
    EXPECT_FALSE(service_->notify("dev1", g->correlation_id, false, t0));
    EXPECT_EQ(service_->pending_notifications(), 0u);
}

TEST_F(FileUpload, NotificationLockCompleteAbandon) {
    int told = 0;
    auto w = service_->watch_notifications([&] { ++told; });
    upload("dev1", "a.txt", "hello");
    EXPECT_EQ(told, 1);
    auto n = service_->receive_notification(t0);
    ASSERT_TRUE(n);
    EXPECT_EQ(n->notification.device_id, "dev1");
    EXPECT_EQ(n->notification.blob_name, "dev1/a.txt");
    EXPECT_EQ(n->notification.size, 5u);
    EXPECT_EQ(n->notification.blob_uri,
              "https://hub.example/" + std::string(default_container) + "/dev1/a.txt");
    auto j = json::parse(notification_json(n->notification)).as_object();
    for (auto k : {"deviceId", "blobUri", "blobName", "lastUpdatedTime", "blobSizeInBytes",
                   "enqueuedTimeUtc"})
        EXPECT_TRUE(j.contains(k)) << k;
    // Locked: not handed out twice.
    EXPECT_FALSE(service_->receive_notification(t0));
    ASSERT_TRUE(service_->abandon_notification(n->lock_token, t0));
    EXPECT_EQ(told, 2);
    EXPECT_FALSE(service_->complete_notification(n->lock_token, t0));  // the lock is gone
    auto again = service_->receive_notification(t0);
    ASSERT_TRUE(again);
    EXPECT_NE(again->lock_token, n->lock_token);
    ASSERT_TRUE(service_->complete_notification(again->lock_token, t0));
    EXPECT_EQ(service_->pending_notifications(), 0u);
    restart();
    EXPECT_FALSE(service_->receive_notification(t0));
    service_->unwatch_notifications(w);
}

TEST_F(FileUpload, NotificationsSurviveRestartAndLocksTimeOut) {
    upload("dev1", "a.txt", "hello");
    upload("dev1", "b.txt", "hi");
    auto first = service_->receive_notification(t0);
    ASSERT_TRUE(first);
    restart();  // locks live in memory: both are available again
    EXPECT_EQ(service_->pending_notifications(), 2u);
    auto a = service_->receive_notification(t0);
    ASSERT_TRUE(a);
    EXPECT_EQ(a->notification.blob_name, "dev1/a.txt");
    auto b = service_->receive_notification(t0);
    ASSERT_TRUE(b);
    EXPECT_EQ(b->notification.blob_name, "dev1/b.txt");
    ASSERT_TRUE(service_->reject_notification(b->lock_token, t0));
    // The lock on a times out and it comes back.
    service_->sweep(t0 + 61s);
    auto a2 = service_->receive_notification(t0 + 61s);
    ASSERT_TRUE(a2);
    EXPECT_EQ(a2->notification.blob_name, "dev1/a.txt");
    EXPECT_FALSE(service_->complete_notification(a->lock_token, t0 + 61s));
    ASSERT_TRUE(service_->abandon_notification(a2->lock_token, t0 + 61s));
    // After the TTL it is gone, also after a restart.
    service_->sweep(t0 + 2h);
    EXPECT_EQ(service_->pending_notifications(), 0u);
    restart();
    EXPECT_EQ(service_->pending_notifications(), 0u);
}

TEST_F(FileUpload, SigningSecretSurvivesRestart) {
    auto g = service_->start_upload("dev1", "a.txt", t0);
    ASSERT_TRUE(g);
    restart();
    EXPECT_TRUE(service_->authorize(path(*g), query_of(g->sas_token), t0));
    EXPECT_TRUE(service_->put_blob(path(*g), "x", t0));
    EXPECT_TRUE(service_->notify("dev1", g->correlation_id, true, t0));
}

}  // namespace
}  // namespace iothub::file_upload
