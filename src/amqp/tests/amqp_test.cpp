#include "amqp/addresses.hpp"
#include "amqp/message_codec.hpp"

#include <gtest/gtest.h>

namespace iothub::amqp {
namespace {

using k = node_address::kind;

TEST(Addresses, EverySpellingOfADeviceAddressIsRecognised) {
    for (auto a :
         {"/devices/d1/messages/devicebound", "amqps://hub.local/devices/d1/messages/deviceBound",
          "amqps://hub.local:5671/devices/d1/messages/devicebound",
          "devices/d1/messages/DeviceBound"}) {
        auto n = classify_address(a);
        EXPECT_EQ(n.what, k::device_c2d) << a;
        EXPECT_EQ(n.device_id, "d1") << a;
    }
    auto events = classify_address("/devices/d1/modules/m1/messages/events");
    EXPECT_EQ(events.what, k::device_events);
    EXPECT_EQ(events.module_id, "m1");
    EXPECT_EQ(classify_address("/devices/d1/methods/devicebound").what, k::device_methods);
    EXPECT_EQ(classify_address("/devices/d1/modules/m/methods/deviceBound").what,
              k::device_methods);
    EXPECT_EQ(classify_address("/devices/d1/twin").what, k::device_twin);
    EXPECT_EQ(classify_address("$cbs").what, k::cbs);
    EXPECT_EQ(classify_address("/messages/devicebound").what, k::service_c2d);
    EXPECT_EQ(classify_address("/messages/serviceBound/feedback").what, k::service_feedback);
    EXPECT_EQ(classify_address("/messages/servicebound/filenotifications").what,
              k::service_file_notifications);
}

TEST(Addresses, IdsKeepTheirCharactersAndEncodedIdsAreDecoded) {
    EXPECT_EQ(classify_address("/devices/dev 1:x/messages/events").device_id, "dev 1:x");
    EXPECT_EQ(classify_address("/devices/dev%201%2Fx/messages/events").device_id, "dev 1/x");
    // A '%' that does not decode is part of the id.
    EXPECT_EQ(classify_address("/devices/50%zz/messages/events").device_id, "50%zz");
    EXPECT_EQ(c2d_target_device("/devices/dev%201/messages/devicebound"), "dev 1");
}

TEST(Addresses, AnythingElseIsUnknown) {
    for (auto a : {"", "/", "/devices//messages/events", "/devices/d/messages",
                   "/devices/d/messages/events/extra", "/devices/d/modules/m/messages/devicebound",
                   "/messages/serviceBound/other", "amqps://host", "myhub/Partitions",
                   "myhub/Partitions/0/x", "myhub/other/0"}) {
        auto n = classify_address(a);
        EXPECT_EQ(n.what, k::unknown) << a;
        EXPECT_TRUE(n.device_id.empty()) << a;
    }
    EXPECT_FALSE(c2d_target_device("/devices/d/messages/events"));
}

TEST(MessageCodec, TelemetryKeepsSystemAndApplicationProperties) {
    auto m = make_message();
    pn_uuid_t u;
    auto id = uuid_atom("0f8fad5b-d9cb-469f-a165-70867728950e", u);
    ASSERT_TRUE(id);
    pn_message_set_id(m.get(), *id);
    pn_message_set_content_type(m.get(), "application/json");
    pn_message_set_expiry_time(m.get(), 1700000000000);
    put_string_property(pn_message_properties(m.get()), "alert", "true");
    put_int_property(pn_message_properties(m.get()), "level", 3);
    put_string_property(pn_message_annotations(m.get()), "iothub-interface-id", "dtmi:x;1", true);
    set_data_body(m.get(), "{\"t\":1}");

    // Round trip through the wire form, as a device would send it.
    pn_rwbytes_t buf{0, nullptr};
    auto n = pn_message_encode2(m.get(), &buf);
    ASSERT_GT(n, 0);
    auto back = make_message();
    ASSERT_EQ(pn_message_decode(back.get(), buf.start, static_cast<std::size_t>(n)), 0);
    std::free(buf.start);

    auto e = to_event(back.get());
    ASSERT_TRUE(e);
    EXPECT_EQ(e->body, "{\"t\":1}");
    auto sys = [&](std::string_view name) -> std::string {
        for (auto& [k2, v] : e->system_properties)
            if (k2 == name) return v;
        return "<none>";
    };
    EXPECT_EQ(sys("message-id"), "0f8fad5b-d9cb-469f-a165-70867728950e");
    EXPECT_EQ(sys("content-type"), "application/json");
    EXPECT_EQ(sys("absolute-expiry-time"), "2023-11-14T22:13:20.0000000Z");
    EXPECT_EQ(sys("iothub-interface-id"), "dtmi:x;1");
    ASSERT_EQ(e->application_properties.size(), 2u);
    EXPECT_EQ(e->application_properties[0], (std::pair<std::string, std::string>{"alert", "true"}));
    EXPECT_EQ(e->application_properties[1], (std::pair<std::string, std::string>{"level", "3"}));
}

TEST(MessageCodec, ServiceMessagesParseTheirAckAndRefuseBadOnes) {
    auto m = make_message();
    put_string_property(pn_message_properties(m.get()), "iothub-ack", "full");
    put_string_property(pn_message_properties(m.get()), "k", "v");
    set_data_body(m.get(), "x");
    auto c = to_c2d_message(m.get());
    ASSERT_TRUE(c);
    EXPECT_EQ(c->ack, c2d::ack_mode::full);
    ASSERT_EQ(c->properties.size(), 1u);  // iothub-ack is not a user property
    EXPECT_EQ(c->properties[0].first, "k");

    auto bad = make_message();
    put_string_property(pn_message_properties(bad.get()), "iothub-ack", "sometimes");
    set_data_body(bad.get(), "x");
    EXPECT_FALSE(to_c2d_message(bad.get()));

    auto list_body = make_message();
    pn_data_put_list(pn_message_body(list_body.get()));
    EXPECT_FALSE(to_c2d_message(list_body.get()));
}

TEST(MessageCodec, DeliveriesCarryWhatTheDeviceSdksRead) {
    auto content = std::make_shared<c2d::message>();
    content->message_id = "m1";
    content->body = "hello";
    content->properties = {{"k", "v"}};
    content->ack = c2d::ack_mode::positive;
    c2d::delivery d;
    d.lock_token = "0f8fad5b-d9cb-469f-a165-70867728950e";
    d.sequence_number = 7;
    d.delivery_count = 2;
    d.enqueued_time = sys_time(std::chrono::seconds(1700000000));
    d.expiry_time = d.enqueued_time + std::chrono::hours(1);
    d.content = content;
    auto m = make_message();
    fill_delivery(m.get(), d, "dev 1");
    EXPECT_STREQ(pn_message_get_address(m.get()), "/devices/dev%201/messages/devicebound");
    EXPECT_EQ(id_text(pn_message_get_id(m.get())), "m1");
    EXPECT_EQ(body_bytes(m.get()), "hello");
    EXPECT_EQ(application_property(m.get(), "k"), "v");
    EXPECT_EQ(application_property(m.get(), "iothub-ack"), "positive");
    EXPECT_EQ(annotation(m.get(), "x-opt-sequence-number"), "7");
    EXPECT_EQ(annotation(m.get(), "iothub-deliverycount"), "2");
    EXPECT_EQ(annotation(m.get(), "x-opt-lock-token"), d.lock_token);
    EXPECT_EQ(pn_message_get_expiry_time(m.get()), 1700003600000);
}

TEST(MessageCodec, FeedbackIsAJsonArrayWithTheContentTypeCSharpChecks) {
    c2d::feedback_batch b;
    b.lock_token = "0f8fad5b-d9cb-469f-a165-70867728950e";
    b.enqueued_time = sys_time(std::chrono::seconds(1700000000));
    b.records.push_back({"m1", "d1", "123", b.enqueued_time, c2d::outcome::rejected});
    auto m = make_message();
    fill_feedback(m.get(), b, "hub.local");
    EXPECT_STREQ(pn_message_get_content_type(m.get()),
                 "application/vnd.microsoft.iothub.feedback.json");
    auto user = pn_message_get_user_id(m.get());
    EXPECT_EQ(std::string(user.start, user.size), "hub.local");
    auto body = body_bytes(m.get());
    ASSERT_TRUE(body);
    EXPECT_EQ(body->front(), '[');
    EXPECT_NE(body->find("\"statusCode\":\"Rejected\""), std::string::npos);
    EXPECT_TRUE(annotation(m.get(), "iothub-enqueuedtime"));
}

TEST(MessageCodec, GuidBytesNeedAGuid) {
    auto b = guid_bytes("0f8fad5b-d9cb-469f-a165-70867728950e");
    ASSERT_TRUE(b);
    EXPECT_EQ(b->size(), 16u);
    EXPECT_EQ(static_cast<unsigned char>((*b)[0]), 0x0f);
    EXPECT_FALSE(guid_bytes("not-a-guid"));
    EXPECT_FALSE(guid_bytes("0f8fad5b-d9cb-469f-a165-70867728950g"));
}

}  // namespace
}  // namespace iothub::amqp

#include "amqp/event_hubs.hpp"

namespace iothub::amqp {
namespace {

using storage::read_position;

TEST(EventHubs, SelectorsMapToReadPositions) {
    auto earliest = parse_selector("amqp.annotation.x-opt-offset > '-1'");
    ASSERT_TRUE(earliest);
    EXPECT_EQ(earliest->what, read_position::kind::earliest);
    auto latest = parse_selector("amqp.annotation.x-opt-offset > '@latest'");
    ASSERT_TRUE(latest);
    EXPECT_EQ(latest->what, read_position::kind::latest);
    auto after = parse_selector("amqp.annotation.x-opt-offset > '41'");
    ASSERT_TRUE(after);
    EXPECT_EQ(after->what, read_position::kind::sequence);
    EXPECT_EQ(after->sequence, 41u);
    EXPECT_FALSE(after->inclusive);
    auto at = parse_selector("  amqp.annotation.x-opt-sequence-number >= '7' ");
    ASSERT_TRUE(at);
    EXPECT_TRUE(at->inclusive);
    EXPECT_EQ(at->sequence, 7u);
    auto time = parse_selector("amqp.annotation.x-opt-enqueued-time > '1700000000000'");
    ASSERT_TRUE(time);
    EXPECT_EQ(time->what, read_position::kind::enqueued_time);
    EXPECT_EQ(unix_millis(time->time), 1700000000000);
}

TEST(EventHubs, MalformedSelectorsAreArgumentErrors) {
    for (auto f : {"", "amqp.annotation.x-opt-offset", "amqp.annotation.x-opt-offset > 5",
                   "amqp.annotation.x-opt-offset < '5'", "amqp.annotation.x-opt-foo > '5'",
                   "x-opt-offset > '5'", "amqp.annotation.x-opt-sequence-number > 'abc'",
                   "amqp.annotation.x-opt-offset > '5"}) {
        auto p = parse_selector(f);
        ASSERT_FALSE(p) << f;
        EXPECT_EQ(p.error().code(), errc::argument_invalid) << f;
    }
}

TEST(EventHubs, EventsCarryOffsetsSequenceNumbersAndIotHubAnnotations) {
    storage::stored_event e;
    e.sequence_number = 12;
    e.enqueued_time = sys_time(std::chrono::seconds(1700000000));
    e.record.body = "{\"t\":1}";
    e.record.system_properties = {{"message-id", "m1"}, {"content-type", "application/json"}};
    e.record.stamp = std::make_shared<storage::property_list>(storage::property_list{
        {"iothub-connection-device-id", "d1"}, {"iothub-message-source", "Telemetry"}});
    e.record.application_properties = {{"alert", "true"}};
    auto m = make_message();
    fill_event(m.get(), e);
    EXPECT_EQ(annotation(m.get(), "x-opt-offset"), "12");
    EXPECT_EQ(annotation(m.get(), "x-opt-sequence-number"), "12");
    EXPECT_EQ(annotation(m.get(), "iothub-connection-device-id"), "d1");
    EXPECT_EQ(annotation(m.get(), "iothub-message-source"), "Telemetry");
    EXPECT_FALSE(annotation(m.get(), "message-id"));  // a property, not an annotation
    EXPECT_EQ(id_text(pn_message_get_id(m.get())), "m1");
    EXPECT_STREQ(pn_message_get_content_type(m.get()), "application/json");
    EXPECT_EQ(application_property(m.get(), "alert"), "true");
    EXPECT_EQ(body_bytes(m.get()), "{\"t\":1}");
}

TEST(EventHubs, AddressesOfPartitionsAndManagement) {
    auto p = classify_address("amqps://localhost/myhub/ConsumerGroups/$Default/Partitions/3");
    EXPECT_EQ(p.what, node_address::kind::eh_partition);
    EXPECT_EQ(p.entity, "myhub");
    EXPECT_EQ(p.consumer_group, "$Default");
    EXPECT_EQ(p.partition, "3");
    EXPECT_EQ(classify_address("myhub/consumergroups/cg/partitions/0").what,
              node_address::kind::eh_partition);
    EXPECT_EQ(classify_address("$management").what, node_address::kind::eh_management);
    EXPECT_EQ(classify_address("myhub/ConsumerGroups/cg/Partitions").what,
              node_address::kind::unknown);
}

TEST(EventHubs, AddressesProducersSendTo) {
    for (auto a : {"inbox", "/inbox", "amqps://localhost/inbox", "sb://localhost:5671/inbox"}) {
        auto n = classify_address(a);
        EXPECT_EQ(n.what, node_address::kind::eh_entity) << a;
        EXPECT_EQ(n.entity, "inbox") << a;
        EXPECT_TRUE(n.partition.empty()) << a;
    }
    auto p = classify_address("amqps://localhost/Inbox/partitions/2");
    EXPECT_EQ(p.what, node_address::kind::eh_entity);
    EXPECT_EQ(p.entity, "Inbox") << "names are kept as written";
    EXPECT_EQ(p.partition, "2");
    // Fixed names win over entities that would look the same.
    EXPECT_EQ(classify_address("$cbs").what, node_address::kind::cbs);
    EXPECT_EQ(classify_address("/messages/devicebound").what, node_address::kind::service_c2d);
}

}  // namespace
}  // namespace iothub::amqp

#include "amqp/detail/frame_padding.hpp"

namespace iothub::amqp::detail {
namespace {

std::string bytes(std::initializer_list<int> b) {
    std::string s;
    for (int c : b) s.push_back(static_cast<char>(c));
    return s;
}

TEST(FramePadding, BeginGetsAllEightFieldsAndANumericHandleMax) {
    // begin(remote-channel null, next-outgoing-id 0, incoming-window 0, outgoing-window 0)
    auto body = bytes({0x00, 0x53, 0x11, 0xc0, 0x05, 0x04, 0x40, 0x43, 0x43, 0x43});
    auto padded = pad_performative(body);
    ASSERT_EQ(static_cast<unsigned char>(padded[3]), 0xd0);
    EXPECT_EQ(padded[11], 8);  // count: the low byte of the big-endian u32
    // handle-max (the fifth field) is uint 0xffffffff.
    EXPECT_NE(padded.find(bytes({0x70, 0xff, 0xff, 0xff, 0xff})), std::string::npos);
    EXPECT_EQ(pad_performative(padded), padded);  // already full: unchanged
}

TEST(FramePadding, TransferPayloadSurvivesAndFramesStayWhole) {
    // transfer(handle 0, delivery-id 0, delivery-tag "t") followed by a payload.
    auto perf = bytes({0x00, 0x53, 0x14, 0xc0, 0x06, 0x03, 0x43, 0x43, 0xa0, 0x01, 't'});
    std::string payload = "PAYLOAD";
    std::string body = perf + payload;
    std::string frame;
    auto size = static_cast<std::uint32_t>(8 + body.size());
    frame += bytes({int(size >> 24), int((size >> 16) & 0xff), int((size >> 8) & 0xff),
                    int(size & 0xff), 0x02, 0x00, 0x00, 0x01});
    frame += body;
    std::string header = "AMQP" + bytes({0, 1, 0, 0});
    performative_padder p;
    std::string out;
    // Fed in two pieces that split the frame: nothing is written until it is whole.
    p.feed(header + frame.substr(0, 10), out);
    EXPECT_EQ(out, header);
    EXPECT_EQ(p.pending(), 10u);
    p.feed(frame.substr(10), out);
    EXPECT_EQ(p.pending(), 0u);
    auto written = out.substr(8);
    std::uint32_t new_size = (std::uint8_t(written[0]) << 24) | (std::uint8_t(written[1]) << 16) |
                             (std::uint8_t(written[2]) << 8) | std::uint8_t(written[3]);
    EXPECT_EQ(new_size, written.size());
    EXPECT_EQ(written.substr(written.size() - payload.size()), payload);
    EXPECT_EQ(written[8 + 11], 11);  // eleven transfer fields
}

TEST(FramePadding, AnythingUnparseablePassesThrough) {
    for (auto b : {std::string(), bytes({0x00}), bytes({0x00, 0x53, 0x30, 0x45}),
                   bytes({0x00, 0x53, 0x11, 0xc0, 0x09, 0x04, 0x40})}) {
        EXPECT_EQ(pad_performative(b), b);
    }
}

}  // namespace
}  // namespace iothub::amqp::detail

#include "amqp/detail/transfer_formats.hpp"
#include "amqp/detail/wire.hpp"

namespace iothub::amqp {
namespace {

// One message in its wire form, as a device encodes it.
std::string encoded(pn_message_t* m) {
    pn_rwbytes_t buf{0, nullptr};
    auto n = pn_message_encode2(m, &buf);
    EXPECT_GT(n, 0);
    std::string out(buf.start, static_cast<std::size_t>(n > 0 ? n : 0));
    std::free(buf.start);
    return out;
}

std::string data_section(std::string_view content) {
    std::string s("\x00\x53\x75\xb0", 4);
    detail::put_u32(s, static_cast<std::uint32_t>(content.size()));
    s.append(content);
    return s;
}

std::string telemetry(int i) {
    auto m = make_message();
    pn_atom_t id;
    const auto text = "batch-" + std::to_string(i);
    id.type = PN_STRING;
    id.u.as_bytes = pn_bytes(text.size(), text.data());
    pn_message_set_id(m.get(), id);
    pn_message_set_content_type(m.get(), "application/json");
    put_string_property(pn_message_properties(m.get()), "n", std::to_string(i));
    put_string_property(pn_message_annotations(m.get()), "iothub-creation-time-utc",
                        "2026-01-01T00:00:00Z", true);
    set_data_body(m.get(), "{\"i\":" + std::to_string(i) + "}");
    return encoded(m.get());
}

TEST(BatchedMessages, EachDataSectionIsAWholeMessageWithItsOwnProperties) {
    std::string batch;
    for (int i = 0; i < 3; ++i) batch += data_section(telemetry(i));
    auto sections = data_sections(batch);
    ASSERT_TRUE(sections);
    ASSERT_EQ(sections->size(), 3u);
    auto m = make_message();
    for (int i = 0; i < 3; ++i) {
        const auto inner = (*sections)[static_cast<std::size_t>(i)];
        EXPECT_EQ(inner, telemetry(i));
        pn_message_clear(m.get());
        ASSERT_EQ(pn_message_decode(m.get(), inner.data(), inner.size()), 0);
        auto e = to_event(m.get());
        ASSERT_TRUE(e);
        EXPECT_EQ(e->body, "{\"i\":" + std::to_string(i) + "}");
        EXPECT_EQ(e->application_properties, (storage::property_list{{"n", std::to_string(i)}}));
        storage::property_list want{{"message-id", "batch-" + std::to_string(i)},
                                    {"content-type", "application/json"},
                                    {"iothub-creation-time-utc", "2026-01-01T00:00:00Z"}};
        EXPECT_EQ(e->system_properties, want);
    }
}

TEST(BatchedMessages, OtherSectionsOfTheOuterMessageAreSkipped) {
    // A header and message annotations before the data sections, a footer after.
    std::string outer("\x00\x53\x70\x45", 4);
    outer += std::string("\x00\x53\x72\xc1\x01\x00", 6);
    outer += data_section(telemetry(7));
    outer += std::string("\x00\x53\x78\xc1\x01\x00", 6);
    auto sections = data_sections(outer);
    ASSERT_TRUE(sections);
    ASSERT_EQ(sections->size(), 1u);
    EXPECT_EQ((*sections)[0], telemetry(7));
}

TEST(BatchedMessages, WhatIsNotABatchOfDataSectionsIsAFormatError) {
    const std::string value_body("\x00\x53\x77\xa1\x02hi", 6);
    const std::string good = data_section(telemetry(1));
    for (const auto& bad :
         {std::string(), std::string("\x00\x53\x70\x45", 4), value_body, good + value_body,
          good.substr(0, good.size() - 1), good + std::string("\x00\x53\x99\x45", 4),
          std::string("garbage"), std::string("\x00\x53\x75\xa1\x01x", 6)}) {
        auto s = data_sections(bad);
        ASSERT_FALSE(s) << bad.size();
        EXPECT_EQ(s.error().code(), errc::format_error);
    }
}

}  // namespace
}  // namespace iothub::amqp

namespace iothub::amqp::detail {
namespace {

// Performatives written by hand, as a peer would send them.
std::string uint_field(std::uint32_t v) {
    std::string s("\x70", 1);
    put_u32(s, v);
    return s;
}
std::string str8(std::string_view v) {
    std::string s{char(0xa1), char(v.size())};
    return s.append(v);
}
std::string bin8(std::string_view v) {
    std::string s{char(0xa0), char(v.size())};
    return s.append(v);
}
std::string described_list(int code, const std::vector<std::string>& fields) {
    std::string items;
    for (const auto& f : fields) items += f;
    std::string s{char(0x00), char(0x53), char(code), char(0xd0)};
    put_u32(s, static_cast<std::uint32_t>(4 + items.size()));
    put_u32(s, static_cast<std::uint32_t>(fields.size()));
    return s + items;
}
std::string frame(std::uint16_t channel, std::string_view body, int type = 0) {
    std::string s;
    put_u32(s, static_cast<std::uint32_t>(8 + body.size()));
    s += {char(2), char(type), char(channel >> 8), char(channel & 0xff)};
    return s.append(body);
}
const std::string null_field("\x40", 1);
const std::string sender_role("\x42", 1);
const std::string receiver_role("\x41", 1);

std::string attach(std::uint16_t ch, std::string_view name, std::uint32_t handle,
                   const std::string& role) {
    return frame(ch, described_list(0x12, {str8(name), uint_field(handle), role}));
}
std::string transfer(std::uint16_t ch, std::uint32_t handle, std::string_view tag,
                     std::optional<std::uint32_t> format, std::string_view payload) {
    std::vector<std::string> f{uint_field(handle), uint_field(1), bin8(tag)};
    if (format) f.push_back(uint_field(*format));
    return frame(ch, described_list(0x14, f) + std::string(payload));
}

TEST(TransferFormats, ABatchedTransferIsRememberedByLinkAndTagUntilTaken) {
    std::string stream = "AMQP" + std::string("\x03\x01\x00\x00", 4);
    stream += frame(0, std::string("\x00\x53\x44\x45", 4), 1);  // a SASL frame is passed over
    stream += "AMQP" + std::string("\x00\x01\x00\x00", 4);
    stream += attach(0, "telemetry-link", 0, sender_role);
    stream += attach(0, "c2d-link", 1, receiver_role);  // the hub sends on this one
    stream += transfer(0, 0, "t1", batched_message_format, std::string(5000, 'p'));
    stream += transfer(0, 0, "t2", 0, "plain");
    stream += transfer(0, 0, "t3", std::nullopt, "no format field");
    stream += frame(0, "");  // a heartbeat

    transfer_formats f;
    // Byte by byte: frames cut anywhere are still read.
    for (char c : stream) f.feed(std::string_view(&c, 1));
    EXPECT_EQ(f.links(), 1u);
    EXPECT_EQ(f.remembered(), 1u);
    EXPECT_EQ(f.take("telemetry-link", "t1"), batched_message_format);
    EXPECT_EQ(f.take("telemetry-link", "t1"), 0u);  // taken once
    EXPECT_EQ(f.take("telemetry-link", "t2"), 0u);
    EXPECT_EQ(f.take("telemetry-link", "t3"), 0u);
    EXPECT_EQ(f.take("c2d-link", "t1"), 0u);
    EXPECT_EQ(f.remembered(), 0u);
}

TEST(TransferFormats, LinksAreToldApartByChannelAndAReusedTagForgetsAnOldFormat) {
    transfer_formats f;
    f.feed(attach(0, "a", 0, sender_role) + attach(1, "b", 0, sender_role));
    f.feed(transfer(1, 0, "x", 42, "") + transfer(0, 0, "x", batched_message_format, ""));
    EXPECT_EQ(f.take("b", "x"), 42u);
    // An unsettled delivery whose record was never taken, then the tag comes again with 0.
    f.feed(transfer(0, 0, "x", 0, ""));
    EXPECT_EQ(f.take("a", "x"), 0u);
    // A handle attached again under a new name.
    f.feed(attach(0, "c", 0, sender_role) + transfer(0, 0, "y", 7, ""));
    EXPECT_EQ(f.take("c", "y"), 7u);
    EXPECT_EQ(f.take("a", "y"), 0u);
}

TEST(TransferFormats, AStreamThatIsNotAmqpFramesIsLeftAlone) {
    transfer_formats f;
    f.feed(std::string("\x00\x00\x00\x03xxxxxxxxxxxx", 16));
    f.feed(attach(0, "a", 0, sender_role) + transfer(0, 0, "x", 5, ""));
    EXPECT_EQ(f.links(), 0u);
    EXPECT_EQ(f.take("a", "x"), 0u);
}

TEST(Wire, ReadersStopAtTheEndOfTheirInput) {
    EXPECT_FALSE(skip_value(std::string("\xb0\xff\xff\xff\xff", 5), 0));
    EXPECT_FALSE(skip_value(std::string("\xa1\x05hi", 4), 0));
    EXPECT_EQ(skip_value(std::string("\xa1\x02hi", 4), 0), 4u);
    EXPECT_EQ(read_uint(std::string("\x52\x07", 2)), 7u);
    EXPECT_EQ(read_uint(std::string("\x43", 1)), 0u);
    EXPECT_FALSE(read_uint(std::string("\x70\x01", 2)));
    EXPECT_EQ(read_bool(std::string("\x56\x01", 2)), true);
    EXPECT_EQ(read_string(str8("name")), "name");
    EXPECT_FALSE(read_binary(str8("name")));
    // A performative cut short is read as far as its fields go.
    auto t = described_list(0x14, {uint_field(3), uint_field(9), bin8("tag"), uint_field(5)});
    const auto cut = t.substr(0, t.size() - 2);
    auto f = read_described_list(cut, 3);
    ASSERT_TRUE(f);
    EXPECT_EQ(read_binary(f->at[2]), "tag");
    EXPECT_FALSE(read_described_list(t.substr(0, t.size() - 2), 4));
}

}  // namespace
}  // namespace iothub::amqp::detail

namespace iothub::amqp {
namespace {

TEST(MessageCodec, ABodyOfSeveralDataSectionsIsJoinedNotCutToTheLast) {
    const std::string two = data_section("first,") + data_section("second");
    EXPECT_EQ(joined_data_body(two), "first,second");
    // Proton alone would keep only the last section; the adapter replaces the body.
    auto m = make_message();
    ASSERT_EQ(pn_message_decode(m.get(), two.data(), two.size()), 0);
    EXPECT_EQ(body_bytes(m.get()), "second");
    EXPECT_FALSE(joined_data_body(data_section("one")));
    EXPECT_FALSE(joined_data_body(two.substr(0, two.size() - 1)));
    EXPECT_TRUE(well_formed_message(two));
    EXPECT_FALSE(well_formed_message(two.substr(0, two.size() - 1)));
    EXPECT_FALSE(well_formed_message(""));
}

}  // namespace
TEST(Provisioning, RegistrationAddresses) {
    for (auto a : {"0ne0001A2B3/registrations/sensor-1", "/0ne0001A2B3/Registrations/sensor-1",
                   "amqps://localhost/0ne0001A2B3/registrations/sensor-1"}) {
        auto n = classify_address(a);
        EXPECT_EQ(n.what, node_address::kind::dps_registration) << a;
        EXPECT_EQ(n.id_scope, "0ne0001A2B3") << a;
        EXPECT_EQ(n.registration_id, "sensor-1") << a;
        EXPECT_FALSE(n.is_device()) << a;
    }
    EXPECT_EQ(classify_address("0ne0001A2B3/registrations/a%3Ab").registration_id, "a:b");
    EXPECT_EQ(classify_address("0ne0001A2B3/registrations/").what, node_address::kind::unknown);
    // An event hub's partition is not a registration.
    EXPECT_EQ(classify_address("inbox/partitions/2").what, node_address::kind::eh_entity);
}

}  // namespace iothub::amqp
