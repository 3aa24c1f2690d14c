#include "routing/evaluation.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

namespace iothub::routing {
namespace {

storage::stored_event reading() {
    storage::stored_event e;
    e.sequence_number = 7;
    e.enqueued_time = sys_time(std::chrono::seconds(1'700'000'000));
    e.record.body = R"({"temperature": 31, "site": {"name": "north"}})";
    e.record.application_properties = {{"Level", "critical"}, {"kind", "reading"}};
    e.record.system_properties = {{"content-type", "application/json"},
                                  {"content-encoding", "utf-8"},
                                  {"iothub-connection-device-id", "d1"}};
    return e;
}

query::truth run(const storage::stored_event& e, std::string_view text,
                 const std::vector<std::string>* roots) {
    auto c = query::parse_condition(text);
    EXPECT_TRUE(c) << text;
    if (!c) return query::truth::undefined;
    message_view view(e, nullptr, roots);
    return view.evaluate(*c);
}

// A row cut down to what the conditions read answers as the whole row does, for names in any
// case, system properties, the enqueued time made when no property carries it, and the body.
TEST(message_view, a_row_of_only_what_conditions_read_answers_as_the_whole_row) {
    const auto e = reading();
    const std::vector<std::string> conditions{
        "level = 'critical'",
        "LEVEL = 'critical' AND kind = 'reading'",
        "$connectionDeviceId = 'd1' AND $contentType = 'application/json'",
        "$body.temperature > 30 AND $body.site.name = 'north'",
        "$enqueuedTime = '2023-11-14T22:13:20.0000000Z'",
        "IS_DEFINED(missing)",
        "kind = 'other' OR level = 'low'",
        "$body.nothing.here = 1",
    };
    for (const auto& text : conditions) {
        auto c = query::parse_condition(text);
        ASSERT_TRUE(c) << text;
        const auto whole = run(e, text, nullptr);
        const auto cut = run(e, text, &c->roots());
        EXPECT_EQ(cut, whole) << text;
    }
    EXPECT_EQ(run(e, conditions[0], nullptr), query::truth::true_);
    EXPECT_EQ(run(e, conditions[3], nullptr), query::truth::true_);
    EXPECT_EQ(run(e, conditions[4], nullptr), query::truth::true_);
    EXPECT_EQ(run(e, conditions[5], nullptr), query::truth::false_);
    EXPECT_EQ(run(e, conditions[7], nullptr), query::truth::undefined);
}

TEST(message_view, a_row_without_the_names_a_condition_reads_does_not_match_it) {
    const auto e = reading();
    const std::vector<std::string> none;
    EXPECT_NE(run(e, "level = 'critical'", &none), query::truth::true_)
        << "the cut is real: what is left out is not there";
}

}  // namespace
}  // namespace iothub::routing
