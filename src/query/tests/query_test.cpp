// Declarative query cases, plus direct tests of limits and accessors.
//
// Every *.txt file in IOTHUB_QUERY_CASES becomes one test, `query.<file name>`. A file is a
// sequence of directives, each a line starting with '@'; a directive's payload is the rest of its
// line plus the following lines up to the next directive. Lines starting with '#' are comments
// and blank lines are ignored.
//
//   @rows                   each payload line is one JSON object (a twin); replaces the rows
//   @query <text>           a query, possibly over several lines; needs exactly one expectation:
//   @expect <json>          the result rows as a JSON array, exactly and in order
//   @expect-unordered <json>  the same in any order (for GROUP BY)
//   @expect-ids <id> ...    the ids of the result rows, in order: deviceId, or deviceId/moduleId
//                           for module twins; nothing after the directive means no rows
//   @error <text>           parse() fails with argument_invalid and a message containing <text>
//
// A query runs as the HTTP layer will run it: rows are filtered with matches() in file order;
// an aggregate statement feeds an aggregation and takes finish(), any other projects each row;
// TOP truncates the result. A failing case is reported at its file and line.
#include "query/query.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

namespace iothub::query {
namespace {
namespace json = boost::json;
namespace fs = std::filesystem;

struct directive {
    std::string name;
    std::string payload;  // lines joined with '\n', trimmed
    std::vector<std::string> lines;
    int line = 0;
};

std::string trim(std::string_view s) {
    auto first = s.find_first_not_of(" \t\r\n");
    if (first == std::string_view::npos) return {};
    auto last = s.find_last_not_of(" \t\r\n");
    return std::string(s.substr(first, last - first + 1));
}

std::vector<directive> read_directives(const fs::path& file, std::string& problem) {
    std::ifstream in(file);
    if (!in) {
        problem = "cannot read " + file.string();
        return {};
    }
    std::vector<directive> out;
    std::string line;
    int number = 0;
    while (std::getline(in, line)) {
        ++number;
        if (line.starts_with("#")) continue;
        if (line.starts_with("@")) {
            directive d;
            auto space = line.find_first_of(" \t");
            d.name = line.substr(0, space);
            d.line = number;
            if (space != std::string::npos) {
                std::string rest = trim(std::string_view(line).substr(space));
                if (!rest.empty()) d.lines.push_back(rest);
            }
            out.push_back(std::move(d));
            continue;
        }
        if (trim(line).empty()) continue;
        if (out.empty()) {
            problem = file.string() + ":" + std::to_string(number) + ": text before a directive";
            return {};
        }
        out.back().lines.push_back(line);
    }
    for (auto& d : out) {
        std::string joined;
        for (const auto& l : d.lines) joined += (joined.empty() ? "" : "\n") + l;
        d.payload = trim(joined);
    }
    return out;
}

std::string row_id(const json::value& row) {
    if (!row.is_object()) return "<not an object>";
    const auto& o = row.get_object();
    auto text = [&](std::string_view key) -> std::string {
        auto it = o.find(key);
        if (it == o.end()) return "";
        return it->value().is_string() ? std::string(it->value().get_string())
                                       : json::serialize(it->value());
    };
    std::string id = text("deviceId");
    if (o.contains("moduleId")) id += "/" + text("moduleId");
    return id.empty() ? "<no deviceId>" : id;
}

json::array run(const statement& s, const std::vector<json::object>& rows) {
    json::array out;
    if (s.aggregates()) {
        aggregation agg(s);
        for (const auto& r : rows)
            if (s.matches(r)) agg.add(r);
        out = agg.finish();
        if (s.top() && out.size() > *s.top()) out.resize(static_cast<std::size_t>(*s.top()));
        return out;
    }
    for (const auto& r : rows) {
        if (s.top() && out.size() >= *s.top()) break;
        if (s.matches(r)) out.push_back(s.project(r));
    }
    return out;
}

bool same_multiset(const json::array& a, const json::array& b) {
    if (a.size() != b.size()) return false;
    std::vector<bool> used(b.size());
    for (const auto& x : a) {
        bool found = false;
        for (std::size_t i = 0; i < b.size() && !found; ++i)
            if (!used[i] && b[i] == x) used[i] = found = true;
        if (!found) return false;
    }
    return true;
}

void run_file(const fs::path& file) {
    std::string problem;
    auto directives = read_directives(file, problem);
    if (!problem.empty()) {
        ADD_FAILURE() << problem;
        return;
    }
    const std::string name = file.string();
    std::vector<json::object> rows;
    for (std::size_t i = 0; i < directives.size(); ++i) {
        const directive& d = directives[i];
        auto where = [&](const directive& at) {
            return ::testing::Message() << name << ":" << at.line;
        };
        if (d.name == "@rows") {
            rows.clear();
            for (const auto& l : d.lines) {
                boost::system::error_code ec;
                auto v = json::parse(l, ec);
                if (ec || !v.is_object()) {
                    ADD_FAILURE_AT(name.c_str(), d.line) << "bad row: " << l;
                    return;
                }
                rows.push_back(v.get_object());
            }
            continue;
        }
        if (d.name != "@query") {
            ADD_FAILURE_AT(name.c_str(), d.line) << d.name << " without a preceding @query";
            continue;
        }
        if (i + 1 == directives.size() || directives[i + 1].name == "@query" ||
            directives[i + 1].name == "@rows") {
            ADD_FAILURE_AT(name.c_str(), d.line) << "@query without an expectation";
            continue;
        }
        const directive& e = directives[++i];
        SCOPED_TRACE(where(d) << ": " << d.payload);
        auto parsed = parse(d.payload);
        if (e.name == "@error") {
            if (parsed) {
                ADD_FAILURE_AT(name.c_str(), e.line) << "parsed, expected an error: " << d.payload;
            } else {
                EXPECT_EQ(parsed.error().code(), errc::argument_invalid);
                if (parsed.error().message().find(e.payload) == std::string::npos)
                    ADD_FAILURE_AT(name.c_str(), e.line)
                        << "error \"" << parsed.error().message() << "\" does not contain \""
                        << e.payload << "\"";
            }
            continue;
        }
        if (!parsed) {
            ADD_FAILURE_AT(name.c_str(), d.line) << "parse failed: " << parsed.error().message();
            continue;
        }
        json::array got = run(*parsed, rows);
        if (e.name == "@expect-ids") {
            std::istringstream words(e.payload);
            std::vector<std::string> want{std::istream_iterator<std::string>(words), {}};
            std::vector<std::string> have;
            for (const auto& r : got) have.push_back(row_id(r));
            if (have != want) {
                auto join = [](const std::vector<std::string>& v) {
                    std::string s;
                    for (const auto& x : v) s += (s.empty() ? "" : " ") + x;
                    return "[" + s + "]";
                };
                ADD_FAILURE_AT(name.c_str(), e.line)
                    << "ids " << join(have) << ", expected " << join(want);
            }
            continue;
        }
        if (e.name != "@expect" && e.name != "@expect-unordered") {
            ADD_FAILURE_AT(name.c_str(), e.line) << "unknown directive " << e.name;
            continue;
        }
        boost::system::error_code ec;
        auto want = json::parse(e.payload, ec);
        if (ec || !want.is_array()) {
            ADD_FAILURE_AT(name.c_str(), e.line) << "expectation is not a JSON array";
            continue;
        }
        bool ok =
            e.name == "@expect" ? json::value(got) == want : same_multiset(got, want.get_array());
        if (!ok)
            ADD_FAILURE_AT(name.c_str(), e.line)
                << "got " << json::serialize(got) << "\n  expected " << json::serialize(want);
    }
}

std::vector<fs::path> case_files() {
    std::vector<fs::path> files;
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(IOTHUB_QUERY_CASES, ec))
        if (entry.path().extension() == ".txt") files.push_back(entry.path());
    std::sort(files.begin(), files.end());
    return files;
}

class case_file : public ::testing::Test {
  public:
    explicit case_file(fs::path file) : file_(std::move(file)) {}
    void TestBody() override { run_file(file_); }

  private:
    fs::path file_;
};

// Registered before main() so that --gtest_list_tests (and so ctest) sees one test per file.
const bool registered = [] {
    for (const auto& f : case_files()) {
        ::testing::RegisterTest("query", f.stem().string().c_str(), nullptr, nullptr, __FILE__,
                                __LINE__, [f]() -> ::testing::Test* { return new case_file(f); });
    }
    return true;
}();

TEST(query, CaseFilesHoldAtLeastAHundredCases) {
    auto files = case_files();
    ASSERT_FALSE(files.empty()) << "no case files in " << IOTHUB_QUERY_CASES;
    std::size_t total = 0;
    for (const auto& f : files) {
        std::string problem;
        for (const auto& d : read_directives(f, problem)) total += d.name == "@query" ? 1 : 0;
        EXPECT_EQ(problem, "");
    }
    EXPECT_GE(total, 100u);
}

// --- Direct tests ---

json::object twin(std::string_view text) {
    return json::parse(text).as_object();
}

std::string parse_error(std::string_view text) {
    auto s = parse(text);
    if (s) return "<parsed>";
    EXPECT_EQ(s.error().code(), errc::argument_invalid);
    return s.error().message();
}

TEST(query, AccessorsDescribeTheStatement) {
    auto s = parse("select top 5 * from devices.modules where true");
    ASSERT_TRUE(s) << s.error().message();
    EXPECT_EQ(s->from(), collection::modules);
    EXPECT_EQ(s->top(), 5u);
    EXPECT_TRUE(s->selects_whole_rows());
    EXPECT_FALSE(s->aggregates());
    EXPECT_TRUE(s->column_names().empty());

    auto a = parse("SELECT tags.x, COUNT() AS n, SUM(version) FROM devices GROUP BY tags.x");
    ASSERT_TRUE(a) << a.error().message();
    EXPECT_EQ(a->from(), collection::devices);
    EXPECT_FALSE(a->top());
    EXPECT_FALSE(a->selects_whole_rows());
    EXPECT_TRUE(a->aggregates());
    EXPECT_EQ(a->column_names(), (std::vector<std::string>{"x", "n", "$1"}));

    auto g = parse("SELECT tags.x FROM devices GROUP BY tags.x");
    ASSERT_TRUE(g);
    EXPECT_TRUE(g->aggregates());

    auto j = parse("SELECT * FROM devices.jobs WHERE devices.jobs.status = 'completed'");
    ASSERT_TRUE(j);
    EXPECT_EQ(j->from(), collection::jobs);
    EXPECT_TRUE(j->matches(twin(R"({"jobId":"j1","status":"completed"})")));
    EXPECT_FALSE(j->matches(twin(R"({"jobId":"j2","status":"running"})")));
}

TEST(query, SelectStarProjectsTheRowItself) {
    auto s = parse("SELECT * FROM devices");
    ASSERT_TRUE(s);
    auto row = twin(R"({"deviceId":"d1","tags":{"a":[1,2]},"properties":{"reported":{}}})");
    EXPECT_TRUE(s->matches(row));
    EXPECT_EQ(s->project(row), row);
}

TEST(query, NestingUpToTheLimitParsesAndBeyondIsRefused) {
    auto parens = [](std::size_t n) {
        return "SELECT * FROM devices WHERE " + std::string(n, '(') + "version = 1" +
               std::string(n, ')');
    };
    auto ok = parse(parens(max_nesting - 2));
    ASSERT_TRUE(ok) << ok.error().message();
    EXPECT_TRUE(ok->matches(twin(R"({"version":1})")));
    EXPECT_NE(parse_error(parens(max_nesting + 1)).find("nested deeper than 64"),
              std::string::npos);

    auto repeated = [](std::string_view piece, std::size_t n) {
        std::string s;
        for (std::size_t i = 0; i < n; ++i) s += piece;
        return s;
    };
    EXPECT_NE(parse_error("SELECT * FROM devices WHERE " + repeated("NOT ", 100) + "true")
                  .find("nested deeper"),
              std::string::npos);
    EXPECT_NE(
        parse_error("SELECT " + repeated("- ", 100) + "1 AS x FROM devices").find("nested deeper"),
        std::string::npos);
    EXPECT_NE(
        parse_error("SELECT * FROM devices WHERE x IN " + repeated("[", 100) + repeated("]", 100))
            .find("nested deeper"),
        std::string::npos);
    EXPECT_NE(parse_error("SELECT LOWER(" + repeated("UPPER(", 80) + "'a'" + repeated(")", 81) +
                          " AS x FROM devices")
                  .find("nested deeper"),
              std::string::npos);
    // Operator chains deepen the tree without recursion in the parser.
    EXPECT_NE(parse_error("SELECT 1" + repeated(" + 1", 100) + " AS x FROM devices")
                  .find("nested deeper"),
              std::string::npos);
}

TEST(query, HostileNestingFailsWithoutExhaustingTheStack) {
    std::string q = "SELECT * FROM devices WHERE " + std::string(6000, '(');
    EXPECT_NE(parse_error(q).find("nested deeper"), std::string::npos);
    std::string minus = "SELECT " + std::string(6000, '-') + "1 AS x FROM devices";
    EXPECT_NE(parse_error(minus).find("nested deeper"), std::string::npos);
}

TEST(query, LongConditionChainsStayFlat) {
    std::string q = "SELECT * FROM devices WHERE deviceId = 'd0'";
    for (int i = 1; i < 300; ++i) q += " OR deviceId = 'd" + std::to_string(i) + "'";
    auto s = parse(q);
    ASSERT_TRUE(s) << s.error().message();
    EXPECT_TRUE(s->matches(twin(R"({"deviceId":"d299"})")));
    EXPECT_FALSE(s->matches(twin(R"({"deviceId":"d300"})")));
}

TEST(query, QueriesLongerThan8192CharactersAreRefused) {
    std::string head = "SELECT * FROM devices WHERE deviceId = '";
    std::string at_limit = head + std::string(max_query_length - head.size() - 1, 'a') + "'";
    ASSERT_EQ(at_limit.size(), max_query_length);
    auto ok = parse(at_limit);
    EXPECT_TRUE(ok) << ok.error().message();
    std::string over = head + std::string(max_query_length - head.size(), 'a') + "'";
    EXPECT_NE(parse_error(over).find("longer than 8192"), std::string::npos);
    EXPECT_NE(parse_error(std::string(1 << 20, ' ')).find("longer than 8192"), std::string::npos);
    // Characters, not bytes: 3000 two-byte characters are within the limit.
    std::string wide = head;
    for (int i = 0; i < 3000; ++i) wide += "\xC3\xA9";
    EXPECT_TRUE(parse(wide + "'"));
}

TEST(query, InvalidUtf8IsRefused) {
    EXPECT_NE(parse_error("SELECT * FROM devices WHERE deviceId = '\xC3('").find("UTF-8"),
              std::string::npos);
}

TEST(query, PositionsCountCharactersFromOne) {
    EXPECT_EQ(parse_error("FOO"), "Syntax error at position 1: expected SELECT but found 'FOO'");
    EXPECT_EQ(parse_error("SELECT * FROM devices WHER x = 1"),
              "Syntax error at position 23: expected WHERE, GROUP BY or end of query but found "
              "'WHER'");
    // The two-byte 'é' counts as one character.
    EXPECT_EQ(parse_error("SELECT * FROM devices WHERE tags.x = 'é' #"),
              "Unexpected character '#' at position 42");
}

TEST(query, StatementsAreSharedSafelyAcrossThreads) {
    auto s = parse(
        "SELECT deviceId, properties.reported.temp * 2 AS t FROM devices "
        "WHERE properties.reported.temp > 20 AND STARTSWITH(deviceId, 'd')");
    ASSERT_TRUE(s);
    auto hot = twin(R"({"deviceId":"d1","properties":{"reported":{"temp":21}}})");
    auto cold = twin(R"({"deviceId":"d2","properties":{"reported":{"temp":19}}})");
    std::atomic<int> wrong{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&, copy = *s] {
            for (int i = 0; i < 2000; ++i) {
                if (!copy.matches(hot) || copy.matches(cold)) ++wrong;
                if (copy.project(hot) != twin(R"({"deviceId":"d1","t":42})")) ++wrong;
            }
        });
    }
    for (auto& t : threads) t.join();
    EXPECT_EQ(wrong, 0);
}

TEST(query, AggregationCanBeFinishedAgainAfterMoreRows) {
    auto s = parse("SELECT COUNT() AS n, MAX(version) AS v FROM devices");
    ASSERT_TRUE(s);
    aggregation agg(*s);
    EXPECT_EQ(json::value(agg.finish()), json::parse(R"([{"n":0}])"));
    agg.add(twin(R"({"version":3})"));
    EXPECT_EQ(json::value(agg.finish()), json::parse(R"([{"n":1,"v":3}])"));
    agg.add(twin(R"({"version":7})"));
    aggregation moved = std::move(agg);
    EXPECT_EQ(json::value(moved.finish()), json::parse(R"([{"n":2,"v":7}])"));
}

TEST(query, LargeIntegersStayExact) {
    auto s = parse("SELECT SUM(n) AS s FROM devices WHERE n = 9007199254740993");
    ASSERT_TRUE(s) << s.error().message();
    auto row = twin(R"({"n":9007199254740993})");
    EXPECT_TRUE(s->matches(row));
    EXPECT_FALSE(s->matches(twin(R"({"n":9007199254740992})")));
    aggregation agg(*s);
    agg.add(row);
    agg.add(row);
    EXPECT_EQ(json::value(agg.finish()), json::parse(R"([{"s":18014398509481986}])"));
}

}  // namespace
}  // namespace iothub::query
