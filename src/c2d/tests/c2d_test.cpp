#include "c2d/c2d.hpp"

#include "c2d/detail/records.hpp"
#include "storage/engine.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <map>
#include <thread>
#include <unistd.h>

namespace iothub::c2d {
namespace {
namespace json = boost::json;
using namespace std::chrono_literals;

const sys_time t0 = sys_time(std::chrono::seconds(1700000000));

message text(std::string body, ack_mode ack = ack_mode::none, std::string id = {}) {
    message m;
    m.body = std::move(body);
    m.ack = ack;
    m.message_id = id.empty() ? "id-" + m.body : std::move(id);
    return m;
}

class recording_channel : public connections::device_channel {
  public:
    bool wants_desired_updates() const override { return false; }
    void send_desired_update(std::string, std::uint64_t) override {}
    bool accepts_methods() const override { return false; }
    void send_method_request(std::string, std::string, std::string) override {}
    void c2d_available() override { ++available; }
    int available = 0;
};

class C2d : public ::testing::Test {
  protected:
    void SetUp() override { open(storage::open_memory()); }

    void open(std::unique_ptr<storage::engine> e) {
        engine_ = std::move(e);
        registry_ = std::make_unique<registry::device_registry>(engine_->kv());
        restart();
        create("dev1");
        create("dev2");
    }
    // A new service over the same storage, as after a hub restart.
    void restart() {
        service_.reset();
        service_ = std::make_unique<c2d_service>(engine_->kv(), *registry_, connections_, limits_);
        auto r = service_->load();
        ASSERT_TRUE(r) << r.error().message();
    }
    void create(const std::string& id) {
        auto spec = registry::parse_device(json::object{}, id);
        ASSERT_TRUE(spec);
        ASSERT_TRUE(registry_->put_device(*spec, {}));
    }
    void send(const std::string& device, message m, sys_time at = t0) {
        auto r = service_->send(device, std::move(m), at);
        ASSERT_TRUE(r) << r.error().message();
    }
    std::vector<std::string> drain(const std::string& device, sys_time at = t0) {
        std::vector<std::string> bodies;
        while (auto d = service_->receive(device, at)) {
            bodies.push_back(d->content->body);
            EXPECT_TRUE(service_->complete(device, d->lock_token, at));
        }
        return bodies;
    }
    // Every pending feedback record, completing the batches that carried them.
    std::vector<feedback_record> feedback(sys_time at = t0) {
        std::vector<feedback_record> all;
        while (auto b = service_->receive_feedback(at)) {
            all.insert(all.end(), b->records.begin(), b->records.end());
            EXPECT_TRUE(service_->complete_feedback(b->lock_token, at));
        }
        return all;
    }
    std::vector<outcome> outcomes(sys_time at = t0) {
        std::vector<outcome> o;
        for (const auto& r : feedback(at)) o.push_back(r.what);
        return o;
    }

    c2d_limits limits_;
    std::unique_ptr<storage::engine> engine_;
    std::unique_ptr<registry::device_registry> registry_;
    connections::connection_table connections_;
    std::unique_ptr<c2d_service> service_;
};

TEST(C2dText, AckModesParseAndPrint) {
    EXPECT_EQ(*parse_ack(""), ack_mode::none);
    EXPECT_EQ(*parse_ack("full"), ack_mode::full);
    EXPECT_EQ(*parse_ack("positive"), ack_mode::positive);
    EXPECT_EQ(*parse_ack("negative"), ack_mode::negative);
    auto bad = parse_ack("sometimes");
    ASSERT_FALSE(bad);
    EXPECT_EQ(bad.error().code(), errc::argument_invalid);
    EXPECT_EQ(to_string(ack_mode::negative), "negative");
    EXPECT_EQ(to_string(outcome::delivery_count_exceeded), "DeliveryCountExceeded");
}

TEST(C2dText, FeedbackJsonHasAzureFields) {
    feedback_record r{"m1", "dev1", "gen1", t0, outcome::expired};
    auto v = json::parse(feedback_json({r}));
    ASSERT_TRUE(v.is_array());
    ASSERT_EQ(v.as_array().size(), 1u);
    const auto& o = v.as_array()[0].as_object();
    EXPECT_EQ(o.at("originalMessageId"), "m1");
    EXPECT_EQ(o.at("deviceGenerationId"), "gen1");
    EXPECT_EQ(o.at("deviceId"), "dev1");
    EXPECT_EQ(o.at("enqueuedTimeUtc"), "2023-11-14T22:13:20.0000000Z");
    EXPECT_EQ(o.at("statusCode"), "Expired");
    EXPECT_EQ(o.at("description"), "Message expired");
}

TEST(C2dText, RecordsRoundTrip) {
    detail::stored_message s;
    s.enqueued_time = t0;
    s.expiry_time = t0 + 1h;
    s.delivery_count = 3;
    s.device_generation_id = "g";
    auto m = std::make_shared<message>(text(std::string("body\0with nul", 13), ack_mode::full));
    m->expiry = t0 + 2h;
    m->properties = {{"a", "1"}, {"b", ""}};
    m->content_type = "application/json";
    s.content = m;
    auto back = detail::decode_message(detail::encode(s));
    ASSERT_TRUE(back);
    EXPECT_EQ(back->delivery_count, 3u);
    EXPECT_EQ(back->expiry_time, t0 + 1h);
    EXPECT_EQ(back->content->body, m->body);
    EXPECT_EQ(back->content->properties, m->properties);
    EXPECT_EQ(back->content->expiry, t0 + 2h);
    EXPECT_EQ(back->content->ack, ack_mode::full);
    auto bytes = detail::encode(s);
    EXPECT_FALSE(detail::decode_message(bytes.substr(0, bytes.size() - 1)));

    auto key = detail::parse_message_key(detail::message_key("a/b$#", 42));
    ASSERT_TRUE(key);  // the last '/' separates, so even odd ids survive
    EXPECT_EQ(key->device_id, "a/b$#");
    EXPECT_EQ(key->sequence, 42u);
}

TEST_F(C2d, DeliversInOrderAndCompleteRemoves) {
    send("dev1", text("a"));
    send("dev1", text("b"));
    send("dev2", text("other"));
    send("dev1", text("c"));
    EXPECT_EQ(service_->depth("dev1"), 3u);
    EXPECT_EQ(drain("dev1"), (std::vector<std::string>{"a", "b", "c"}));
    EXPECT_EQ(service_->depth("dev1"), 0u);
    EXPECT_EQ(service_->depth("dev2"), 1u);
}

TEST_F(C2d, LockedMessagesAreSkipped) {
    send("dev1", text("a"));
    send("dev1", text("b"));
    auto first = service_->receive("dev1", t0);
    auto second = service_->receive("dev1", t0);
    ASSERT_TRUE(first && second);
    EXPECT_EQ(first->content->body, "a");
    EXPECT_EQ(second->content->body, "b");
    EXPECT_NE(first->lock_token, second->lock_token);
    EXPECT_LT(first->sequence_number, second->sequence_number);
    EXPECT_FALSE(service_->receive("dev1", t0));
    EXPECT_EQ(first->delivery_count, 1u);
    EXPECT_EQ(first->expiry_time, t0 + limits_.default_ttl);
}

TEST_F(C2d, UnknownDeviceIsRejected) {
    auto r = service_->send("nobody", text("a"), t0);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code(), errc::device_not_found);
    auto p = service_->purge("nobody", t0);
    ASSERT_FALSE(p);
    EXPECT_EQ(p.error().code(), errc::device_not_found);
}

TEST_F(C2d, DepthLimitCountsLockedMessages) {
    limits_.max_depth = 3;
    restart();
    send("dev1", text("a"));
    send("dev1", text("b"));
    send("dev1", text("c"));
    ASSERT_TRUE(service_->receive("dev1", t0));  // locked, still in the queue
    auto r = service_->send("dev1", text("d"), t0);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code(), errc::queue_depth_exceeded);
    EXPECT_EQ(service_->depth("dev1"), 3u);
    send("dev2", text("x"));  // queues are per device
}

TEST_F(C2d, ExpiredMessagesMakeRoomOnSend) {
    limits_.max_depth = 1;
    restart();
    auto m = text("short", ack_mode::negative);
    m.expiry = t0 + 10s;
    send("dev1", m);
    send("dev1", text("next"), t0 + 11s);
    EXPECT_EQ(outcomes(t0 + 11s), std::vector<outcome>{outcome::expired});
    EXPECT_EQ(drain("dev1", t0 + 11s), std::vector<std::string>{"next"});
}

TEST_F(C2d, SizeLimitCountsBodyAndProperties) {
    limits_.max_message_bytes = 11;
    restart();
    send("dev1", text("0123456789", ack_mode::none, "x"));
    auto big = text("01234", ack_mode::none, "x");
    big.properties = {{"key", "val"}};
    auto r = service_->send("dev1", big, t0);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code(), errc::message_too_large);
    EXPECT_EQ(message_size(big), 5u + 1 + 6);  // body, message id, property
}

TEST_F(C2d, TtlDefaultsAndIsCapped) {
    auto explicit_ttl = text("explicit");
    explicit_ttl.expiry = t0 + 5min;
    auto too_long = text("capped");
    too_long.expiry = t0 + limits_.max_ttl + 24h;
    send("dev1", text("default"));
    send("dev1", explicit_ttl);
    send("dev1", too_long);
    auto a = service_->receive("dev1", t0);
    auto b = service_->receive("dev1", t0);
    auto c = service_->receive("dev1", t0);
    ASSERT_TRUE(a && b && c);
    EXPECT_EQ(a->expiry_time, t0 + 1h);
    EXPECT_EQ(b->expiry_time, t0 + 5min);
    EXPECT_EQ(c->expiry_time, t0 + limits_.max_ttl);
    EXPECT_EQ(c->content->expiry, too_long.expiry) << "the sender's value is kept as sent";
}

TEST_F(C2d, ExpiredMessagesAreNotDeliveredAndSweepGivesFeedback) {
    auto m = text("old", ack_mode::full, "m-old");
    m.expiry = t0 + 30s;
    send("dev1", m);
    send("dev1", text("quiet"));  // ack none: no feedback when it expires
    EXPECT_FALSE(service_->receive("dev1", t0 + 2h));
    service_->sweep(t0 + 2h);
    EXPECT_EQ(service_->depth("dev1"), 0u);
    auto f = feedback(t0 + 2h);
    ASSERT_EQ(f.size(), 1u);
    EXPECT_EQ(f[0].what, outcome::expired);
    EXPECT_EQ(f[0].original_message_id, "m-old");
    EXPECT_EQ(f[0].device_id, "dev1");
    EXPECT_EQ(f[0].device_generation_id, registry_->get_device("dev1")->generation_id);
}

TEST_F(C2d, FeedbackFollowsTheAckMode) {
    struct row {
        ack_mode ack;
        bool on_success, on_reject;
    };
    for (auto [ack, on_success, on_reject] :
         {row{ack_mode::none, false, false}, row{ack_mode::positive, true, false},
          row{ack_mode::negative, false, true}, row{ack_mode::full, true, true}}) {
        SCOPED_TRACE(std::string(to_string(ack)));
        send("dev1", text("ok", ack));
        send("dev1", text("no", ack));
        auto ok = service_->receive("dev1", t0);
        auto no = service_->receive("dev1", t0);
        ASSERT_TRUE(ok && no);
        ASSERT_TRUE(service_->complete("dev1", ok->lock_token, t0));
        ASSERT_TRUE(service_->reject("dev1", no->lock_token, t0));
        std::vector<outcome> expected;
        if (on_success) expected.push_back(outcome::success);
        if (on_reject) expected.push_back(outcome::rejected);
        EXPECT_EQ(outcomes(), expected);
        EXPECT_EQ(service_->depth("dev1"), 0u);
    }
}

TEST_F(C2d, AbandonRequeuesInPlaceAndCountsDeliveries) {
    send("dev1", text("a"));
    send("dev1", text("b"));
    auto d = service_->receive("dev1", t0);
    ASSERT_TRUE(d);
    ASSERT_TRUE(service_->abandon("dev1", d->lock_token, t0));
    auto again = service_->receive("dev1", t0);
    ASSERT_TRUE(again);
    EXPECT_EQ(again->content->body, "a") << "an abandoned message keeps its place";
    EXPECT_EQ(again->delivery_count, 2u);
    EXPECT_EQ(outcomes(), std::vector<outcome>{});
}

TEST_F(C2d, MaxDeliveryCountDeadLetters) {
    limits_.max_delivery_count = 3;
    restart();
    send("dev1", text("poison", ack_mode::negative));
    for (int i = 1; i <= 3; ++i) {
        auto d = service_->receive("dev1", t0);
        ASSERT_TRUE(d) << i;
        EXPECT_EQ(d->delivery_count, static_cast<std::uint32_t>(i));
        ASSERT_TRUE(service_->abandon("dev1", d->lock_token, t0));
    }
    EXPECT_EQ(service_->depth("dev1"), 0u);
    EXPECT_EQ(outcomes(), std::vector<outcome>{outcome::delivery_count_exceeded});
}

TEST_F(C2d, LockTimeoutThroughSweepRequeues) {
    send("dev1", text("a"));
    auto d = service_->receive("dev1", t0);
    ASSERT_TRUE(d);
    service_->sweep(t0 + 30s);
    EXPECT_FALSE(service_->receive("dev1", t0 + 30s)) << "still locked";
    service_->sweep(t0 + 61s);
    auto r = service_->complete("dev1", d->lock_token, t0 + 61s);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code(), errc::message_lock_lost);
    auto again = service_->receive("dev1", t0 + 61s);
    ASSERT_TRUE(again);
    EXPECT_EQ(again->delivery_count, 2u);
}

TEST_F(C2d, LockTimeoutCountsTowardsMaxDeliveries) {
    limits_.max_delivery_count = 1;
    restart();
    send("dev1", text("a", ack_mode::full));
    ASSERT_TRUE(service_->receive("dev1", t0));
    service_->sweep(t0 + 61s);
    EXPECT_EQ(service_->depth("dev1"), 0u);
    EXPECT_EQ(outcomes(t0 + 61s), std::vector<outcome>{outcome::delivery_count_exceeded});
}

TEST_F(C2d, StaleAndForeignTokensLoseTheLock) {
    send("dev1", text("a"));
    send("dev2", text("b"));
    auto d1 = service_->receive("dev1", t0);
    auto d2 = service_->receive("dev2", t0);
    ASSERT_TRUE(d1 && d2);
    auto foreign = service_->complete("dev1", d2->lock_token, t0);
    ASSERT_FALSE(foreign);
    EXPECT_EQ(foreign.error().code(), errc::message_lock_lost);
    ASSERT_TRUE(service_->complete("dev1", d1->lock_token, t0));
    for (auto op : {&c2d_service::complete, &c2d_service::abandon, &c2d_service::reject}) {
        auto stale = (service_.get()->*op)("dev1", d1->lock_token, t0);
        ASSERT_FALSE(stale);
        EXPECT_EQ(stale.error().code(), errc::message_lock_lost);
    }
    EXPECT_FALSE(service_->complete("dev1", "not-a-token", t0));
    EXPECT_TRUE(service_->complete("dev2", d2->lock_token, t0));
}

TEST_F(C2d, ReleaseAllAbandonsEveryLock) {
    send("dev1", text("a"));
    send("dev1", text("b"));
    send("dev1", text("c"));
    ASSERT_TRUE(service_->receive("dev1", t0));
    ASSERT_TRUE(service_->receive("dev1", t0));
    service_->release_all("dev1", t0);
    auto a = service_->receive("dev1", t0);
    ASSERT_TRUE(a);
    EXPECT_EQ(a->content->body, "a");
    EXPECT_EQ(a->delivery_count, 2u);
    EXPECT_EQ(drain("dev1"), (std::vector<std::string>{"b", "c"}));
}

TEST_F(C2d, PurgeRemovesAllWithFeedback) {
    send("dev1", text("a", ack_mode::negative));
    send("dev1", text("b", ack_mode::positive));  // positive: no feedback for a purge
    send("dev1", text("c", ack_mode::full));
    ASSERT_TRUE(service_->receive("dev1", t0));  // locked ones go too
    auto n = service_->purge("dev1", t0);
    ASSERT_TRUE(n);
    EXPECT_EQ(*n, 3u);
    EXPECT_EQ(service_->depth("dev1"), 0u);
    EXPECT_EQ(outcomes(), (std::vector<outcome>{outcome::purged, outcome::purged}));
    EXPECT_EQ(*service_->purge("dev1", t0), 0u);
    EXPECT_EQ(*service_->purge("dev2", t0), 0u);
}

TEST_F(C2d, ForgetDropsWithoutFeedbackAndSurvivesRestart) {
    send("dev1", text("a", ack_mode::full));
    send("dev2", text("b", ack_mode::full));
    ASSERT_TRUE(registry_->delete_device("dev1", {}));
    service_->forget("dev1");
    EXPECT_EQ(service_->depth("dev1"), 0u);
    EXPECT_EQ(outcomes(), std::vector<outcome>{});
    restart();
    EXPECT_EQ(service_->depth("dev1"), 0u);
    EXPECT_EQ(service_->depth("dev2"), 1u);
}

TEST_F(C2d, ALateForgetSparesARecreatedDevicesMessages) {
    send("dev1", text("old"));
    ASSERT_TRUE(registry_->delete_device("dev1", {}));
    create("dev1");
    send("dev1", text("new"));  // also drops "old": another incarnation's
    send("dev1", text("newer"));
    service_->forget("dev1");  // the deletion's clean-up, arriving late
    EXPECT_EQ(drain("dev1"), (std::vector<std::string>{"new", "newer"}));
}

TEST_F(C2d, ARecreatedDeviceDoesNotInheritTheOldQueue) {
    send("dev1", text("old"));
    ASSERT_TRUE(registry_->delete_device("dev1", {}));  // nobody calls forget here
    create("dev1");
    restart();
    EXPECT_EQ(service_->depth("dev1"), 0u);
    send("dev1", text("new"));
    EXPECT_EQ(drain("dev1"), std::vector<std::string>{"new"});
}

TEST_F(C2d, FeedbackComesInBatches) {
    limits_.feedback_batch_records = 3;
    restart();
    for (int i = 0; i < 7; ++i) {
        send("dev1", text(std::to_string(i), ack_mode::positive));
        drain("dev1");
    }
    EXPECT_EQ(service_->pending_feedback(), 7u);
    std::vector<std::size_t> sizes;
    std::vector<std::string> ids;
    std::vector<std::string> tokens;
    while (auto b = service_->receive_feedback(t0)) {
        sizes.push_back(b->records.size());
        for (const auto& r : b->records) ids.push_back(r.original_message_id);
        tokens.push_back(b->lock_token);
    }
    EXPECT_EQ(sizes, (std::vector<std::size_t>{3, 3, 1}));
    EXPECT_EQ(ids,
              (std::vector<std::string>{"id-0", "id-1", "id-2", "id-3", "id-4", "id-5", "id-6"}));
    for (const auto& t : tokens) EXPECT_TRUE(service_->complete_feedback(t, t0));
    EXPECT_EQ(service_->pending_feedback(), 0u);
}

TEST_F(C2d, FeedbackLocksSettle) {
    limits_.feedback_batch_records = 1;
    limits_.feedback_max_delivery_count = 2;
    restart();
    for (const auto* id : {"x", "y", "z"}) {
        send("dev1", text(id, ack_mode::positive, id));
        drain("dev1");
    }
    auto x = service_->receive_feedback(t0);
    ASSERT_TRUE(x);
    EXPECT_EQ(x->records.at(0).original_message_id, "x");
    ASSERT_TRUE(service_->abandon_feedback(x->lock_token, t0));
    auto lost = service_->abandon_feedback(x->lock_token, t0);
    ASSERT_FALSE(lost);
    EXPECT_EQ(lost.error().code(), errc::message_lock_lost);

    auto x2 = service_->receive_feedback(t0);
    ASSERT_TRUE(x2);
    EXPECT_EQ(x2->records.at(0).original_message_id, "x") << "abandoned: delivered again";
    ASSERT_TRUE(service_->abandon_feedback(x2->lock_token, t0));  // second delivery: the last
    EXPECT_EQ(service_->pending_feedback(), 2u);

    auto y = service_->receive_feedback(t0);
    ASSERT_TRUE(y);
    EXPECT_EQ(y->records.at(0).original_message_id, "y");
    ASSERT_TRUE(service_->reject_feedback(y->lock_token, t0));
    EXPECT_EQ(service_->pending_feedback(), 1u);

    auto z = service_->receive_feedback(t0);
    ASSERT_TRUE(z);
    EXPECT_FALSE(service_->receive_feedback(t0)) << "z is locked";
    service_->sweep(t0 + 61s);  // lock timeout
    auto z2 = service_->receive_feedback(t0 + 61s);
    ASSERT_TRUE(z2);
    EXPECT_EQ(z2->records.at(0).original_message_id, "z");
    EXPECT_FALSE(service_->complete_feedback(z->lock_token, t0 + 61s))
        << "the timed-out lock is gone";
    ASSERT_TRUE(service_->complete_feedback(z2->lock_token, t0 + 61s));
    EXPECT_EQ(service_->pending_feedback(), 0u);
}

TEST_F(C2d, OldFeedbackIsDropped) {
    send("dev1", text("a", ack_mode::positive));
    drain("dev1");
    service_->sweep(t0 + 59min);
    EXPECT_EQ(service_->pending_feedback(), 1u);
    service_->sweep(t0 + 61min);
    EXPECT_EQ(service_->pending_feedback(), 0u);
}

TEST_F(C2d, WatchersHearOfFeedback) {
    int heard = 0;
    auto token = service_->watch_feedback([&] { ++heard; });
    send("dev1", text("a", ack_mode::positive));
    EXPECT_EQ(heard, 0);
    drain("dev1");
    EXPECT_EQ(heard, 1);
    auto b = service_->receive_feedback(t0);
    ASSERT_TRUE(b);
    ASSERT_TRUE(service_->abandon_feedback(b->lock_token, t0));
    EXPECT_EQ(heard, 2) << "abandoned records are available again";
    b = service_->receive_feedback(t0);
    ASSERT_TRUE(b);
    service_->sweep(t0 + 61s);
    EXPECT_EQ(heard, 3) << "so are ones whose lock timed out";
    service_->unwatch_feedback(token);
    send("dev1", text("b", ack_mode::positive));
    drain("dev1");
    EXPECT_EQ(heard, 3);
}

TEST_F(C2d, LiveConnectionsHearOfAvailableMessages) {
    auto channel = std::make_shared<recording_channel>();
    auto entry = connections_.attach(
        "dev1", "", [](const std::string&) {}, t0, channel);
    send("dev1", text("a"));
    EXPECT_EQ(channel->available, 1);
    send("dev2", text("b"));
    EXPECT_EQ(channel->available, 1) << "another device's message";
    auto d = service_->receive("dev1", t0);
    ASSERT_TRUE(d);
    ASSERT_TRUE(service_->abandon("dev1", d->lock_token, t0));
    EXPECT_EQ(channel->available, 2);
    d = service_->receive("dev1", t0);
    ASSERT_TRUE(d);
    service_->sweep(t0 + 61s);
    EXPECT_EQ(channel->available, 3);
    d = service_->receive("dev1", t0 + 61s);
    ASSERT_TRUE(d);
    service_->release_all("dev1", t0 + 61s);
    EXPECT_EQ(channel->available, 4);
    ASSERT_TRUE(
        service_->complete("dev1", service_->receive("dev1", t0 + 61s)->lock_token, t0 + 61s));
    EXPECT_EQ(channel->available, 4) << "completing makes nothing available";
    connections_.detach(entry, t0);
}

class C2dDurable : public C2d {
  protected:
    void SetUp() override {
        auto e = storage::open_rocksdb({dir_, false, 2, {2}});
        ASSERT_TRUE(e) << e.error().message();
        open(std::move(*e));
    }
    void TearDown() override {
        service_.reset();
        registry_.reset();
        engine_.reset();
        std::filesystem::remove_all(dir_);
    }
    std::filesystem::path dir_ =
        std::filesystem::temp_directory_path() / ("iothub-c2d-test-" + std::to_string(::getpid()));
};

TEST_F(C2dDurable, QueuesCountsAndFeedbackSurviveARestart) {
    send("dev1", text("a", ack_mode::full));
    send("dev1", text("b"));
    send("dev2", text("c", ack_mode::positive));
    send("dev1", text("d"));
    auto a = service_->receive("dev1", t0);
    ASSERT_TRUE(a);
    ASSERT_TRUE(service_->abandon("dev1", a->lock_token, t0));
    auto c = service_->receive("dev2", t0);
    ASSERT_TRUE(c);
    ASSERT_TRUE(service_->complete("dev2", c->lock_token, t0));  // feedback, not yet received
    auto b_locked = service_->receive("dev1", t0);               // "a" again, locked at the crash
    ASSERT_TRUE(b_locked);
    EXPECT_EQ(b_locked->content->body, "a");

    service_.reset();
    registry_.reset();
    engine_.reset();
    auto e = storage::open_rocksdb({dir_, false, 2, {2}});
    ASSERT_TRUE(e) << e.error().message();
    engine_ = std::move(*e);
    registry_ = std::make_unique<registry::device_registry>(engine_->kv());
    restart();

    EXPECT_EQ(service_->depth("dev1"), 3u);
    EXPECT_EQ(service_->depth("dev2"), 0u);
    auto first = service_->receive("dev1", t0);
    ASSERT_TRUE(first);
    EXPECT_EQ(first->content->body, "a");
    EXPECT_EQ(first->content->ack, ack_mode::full);
    EXPECT_EQ(first->delivery_count, 2u)
        << "the abandoned delivery was written; the locked one not";
    auto rest_b = service_->receive("dev1", t0);
    auto rest_d = service_->receive("dev1", t0);
    ASSERT_TRUE(rest_b && rest_d);
    EXPECT_EQ(rest_b->content->body, "b");
    EXPECT_EQ(rest_d->content->body, "d");
    EXPECT_LT(first->sequence_number, rest_b->sequence_number);
    auto f = feedback();
    ASSERT_EQ(f.size(), 1u);
    EXPECT_EQ(f[0].original_message_id, "id-c");
    EXPECT_EQ(f[0].what, outcome::success);

    // New messages continue the sequence after the restored ones.
    send("dev1", text("e"));
    ASSERT_TRUE(service_->complete("dev1", first->lock_token, t0));
    ASSERT_TRUE(service_->complete("dev1", rest_b->lock_token, t0));
    ASSERT_TRUE(service_->complete("dev1", rest_d->lock_token, t0));
    auto e_msg = service_->receive("dev1", t0);
    ASSERT_TRUE(e_msg);
    EXPECT_EQ(e_msg->content->body, "e");
    EXPECT_GT(e_msg->sequence_number, rest_d->sequence_number);
}

}  // namespace
}  // namespace iothub::c2d

namespace iothub::c2d {
namespace {

// Commits run without the service's mutex; concurrent senders and a concurrent receiver must
// still see every message exactly once, in each sender's order, with the depth limit holding.
TEST_F(C2d, ConcurrentSendsAndSettlementsKeepOrderAndCount) {
    constexpr int per_device = 40;
    const std::vector<std::string> devices = {"dev1", "dev2"};
    std::atomic<bool> sending{true};
    std::map<std::string, std::vector<std::string>> received;
    std::thread receiver([&] {
        auto take = [&] {
            for (const auto& d : devices)
                while (auto m = service_->receive(d, t0)) {
                    received[d].push_back(m->content->body);
                    EXPECT_TRUE(service_->complete(d, m->lock_token, t0));
                }
        };
        while (sending) take();
        take();
    });
    std::vector<std::thread> senders;
    std::atomic<int> refused{0};
    for (const auto& d : devices)
        senders.emplace_back([&, d] {
            for (int i = 0; i < per_device; ++i) {
                message m;
                m.body = std::to_string(i);
                // A full queue refuses; the sender retries, as a service would.
                while (!service_->send(d, m, t0)) {
                    ++refused;
                    std::this_thread::yield();
                }
            }
        });
    for (auto& t : senders) t.join();
    sending = false;
    receiver.join();
    for (const auto& d : devices) {
        ASSERT_EQ(received[d].size(), static_cast<std::size_t>(per_device)) << d;
        for (int i = 0; i < per_device; ++i) EXPECT_EQ(received[d][i], std::to_string(i)) << d;
        EXPECT_EQ(service_->depth(d), 0u);
    }
}

}  // namespace
}  // namespace iothub::c2d

namespace iothub::c2d {
namespace {

TEST_F(C2d, ABatchCommitsTogetherWithAResultPerMessage) {
    std::vector<c2d_service::outgoing> batch;
    auto msg = [](std::string body) {
        message m;
        m.body = std::move(body);
        return m;
    };
    for (std::size_t i = 0; i + 1 < limits_.max_depth; ++i) send("dev2", msg("old"));
    batch.push_back({"dev1", msg("a")});
    batch.push_back({"nobody", msg("x")});
    batch.push_back({"dev1", msg(std::string(limits_.max_message_bytes + 1, 'x'))});
    batch.push_back({"dev2", msg("fits")});
    batch.push_back({"dev2", msg("too many")});
    batch.push_back({"dev1", msg("b")});
    auto r = service_->send_many(std::move(batch), t0);
    ASSERT_EQ(r.size(), 6u);
    EXPECT_TRUE(r[0]);
    EXPECT_EQ(r[1].error().code(), errc::device_not_found);
    EXPECT_EQ(r[2].error().code(), errc::message_too_large);
    EXPECT_TRUE(r[3]);
    EXPECT_EQ(r[4].error().code(), errc::queue_depth_exceeded);
    EXPECT_TRUE(r[5]);
    EXPECT_EQ(drain("dev1"), (std::vector<std::string>{"a", "b"}));
    EXPECT_EQ(service_->depth("dev2"), limits_.max_depth);
    restart();  // and it is all durable
    EXPECT_EQ(service_->depth("dev2"), limits_.max_depth);
}

}  // namespace
}  // namespace iothub::c2d
