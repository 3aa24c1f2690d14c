#include "service_api/telemetry_api.hpp"

#include "common/encoding.hpp"
#include "common/time.hpp"

#include <boost/json.hpp>

#include <atomic>
#include <charconv>
#include <mutex>

namespace iothub::service_api {
namespace json = boost::json;
using http::request;
using http::responder;
using http::response;

namespace {

using cursor_t = std::vector<std::pair<int, std::uint64_t>>;

json::object event_json(int partition, const storage::stored_event& e) {
    json::object props, sys;
    for (const auto& [k, v] : e.record.application_properties) props[k] = v;
    for (const auto& [k, v] : e.record.system_properties) sys[k] = v;
    sys["iothub-enqueuedtime"] = format_iso8601(e.enqueued_time);
    json::object o{{"partition", std::to_string(partition)},
                   {"sequenceNumber", e.sequence_number},
                   {"offset", std::to_string(e.sequence_number)},
                   {"enqueuedTimeUtc", format_iso8601(e.enqueued_time)}};
    if (valid_utf8(e.record.body)) {
        o["body"] = e.record.body;
        o["bodyEncoding"] = "utf-8";
    } else {
        o["body"] = base64_encode(e.record.body);
        o["bodyEncoding"] = "base64";
    }
    o["properties"] = std::move(props);
    o["systemProperties"] = std::move(sys);
    return o;
}

result<std::uint64_t> number(std::string_view text, std::string_view what) {
    std::uint64_t n = 0;
    auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
    if (ec != std::errc{} || p != text.data() + text.size() || text.empty())
        return error(errc::argument_invalid,
                     std::string(what) + " must be a non-negative integer.");
    return n;
}

struct shared_ctx {
    telemetry_context c;
};

class reader {
  public:
    explicit reader(telemetry_context& c) : c_(c) {}

    result<cursor_t> start(const request& req) {
        if (auto cur = req.query_value("cursor"))
            return parse_cursor(*cur, c_.events.partition_count());
        std::vector<int> parts;
        if (auto p = req.query_value("partitions"); p && !p->empty() && *p != "all") {
            std::string_view rest = *p;
            while (!rest.empty()) {
                auto comma = rest.find(',');
                auto n = number(rest.substr(0, comma), "partitions");
                if (!n) return n.error();
                if (*n >= static_cast<std::uint64_t>(c_.events.partition_count()))
                    return error(errc::argument_invalid,
                                 "There is no partition " + std::to_string(*n) + "; the hub has " +
                                     std::to_string(c_.events.partition_count()) + ".");
                parts.push_back(static_cast<int>(*n));
                rest =
                    comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
            }
        } else {
            for (int i = 0; i < c_.events.partition_count(); ++i) parts.push_back(i);
        }
        std::string_view spec = req.query_value("from").value_or("latest");
        if (spec == "checkpoint") {
            auto stored =
                c_.groups.checkpoint(req.query_value("consumerGroup").value_or("$Default"));
            if (!stored) return stored.error();
            if (*stored) {
                auto saved = parse_cursor(**stored, c_.events.partition_count());
                if (!saved) return saved.error();
                cursor_t picked;
                for (int p : parts) {
                    std::uint64_t next = c_.events.resolve(p, storage::read_position::earliest());
                    for (auto [sp, seq] : *saved)
                        if (sp == p) next = seq;
                    picked.emplace_back(p, next);
                }
                return picked;
            }
            spec = "earliest";
        }
        storage::read_position pos;
        if (spec == "earliest") {
            pos = storage::read_position::earliest();
        } else if (spec == "latest") {
            pos = storage::read_position::latest();
        } else if (spec.substr(0, 9) == "sequence:") {
            auto n = number(spec.substr(9), "The sequence number");
            if (!n) return n.error();
            pos = storage::read_position::at_sequence(*n);
        } else if (spec.substr(0, 5) == "time:") {
            auto t = parse_iso8601(spec.substr(5));
            if (!t) return error(errc::argument_invalid, "time: needs an ISO-8601 UTC time.");
            pos = storage::read_position::after_time(*t);
        } else {
            return error(errc::argument_invalid,
                         "from must be earliest, latest, sequence:N, time:ISO-8601 or checkpoint.");
        }
        cursor_t cursor;
        for (int p : parts) cursor.emplace_back(p, c_.events.resolve(p, pos));
        return cursor;
    }

    // Reads up to `max` events across the cursor's partitions, sharing the budget fairly, and
    // advances the cursor past them (and past anything retention removed).
    result<json::array> read(cursor_t& cursor, std::size_t max) {
        json::array out;
        const std::size_t share =
            std::max<std::size_t>(1, max / std::max<std::size_t>(1, cursor.size()));
        for (int pass = 0; pass < 2 && out.size() < max; ++pass) {
            for (auto& [p, next] : cursor) {
                if (out.size() >= max) break;
                auto limit = pass == 0 ? std::min(share, max - out.size()) : max - out.size();
                auto events = c_.events.read(p, next, limit);
                if (!events) return events.error();
                next = std::max(next, c_.events.info(p).begin_sequence_number);
                for (const auto& e : *events) {
                    out.push_back(event_json(p, e));
                    next = e.sequence_number + 1;
                }
            }
        }
        return out;
    }

  private:
    telemetry_context& c_;
};

}  // namespace

std::string format_cursor(const cursor_t& cursor) {
    std::string out;
    for (auto [p, seq] : cursor) {
        if (!out.empty()) out += ',';
        out += std::to_string(p) + ":" + std::to_string(seq);
    }
    return out;
}

result<cursor_t> parse_cursor(std::string_view text, int partitions) {
    cursor_t out;
    while (!text.empty()) {
        auto comma = text.find(',');
        auto item = text.substr(0, comma);
        text = comma == std::string_view::npos ? std::string_view{} : text.substr(comma + 1);
        auto colon = item.find(':');
        if (colon == std::string_view::npos)
            return error(errc::argument_invalid,
                         "A cursor is partition:sequence pairs separated by commas.");
        auto p = number(item.substr(0, colon), "A cursor's partition");
        auto s = number(item.substr(colon + 1), "A cursor's sequence number");
        if (!p) return p.error();
        if (!s) return s.error();
        if (*p >= static_cast<std::uint64_t>(partitions))
            return error(
                errc::argument_invalid,
                "The cursor names partition " + std::to_string(*p) + ", which does not exist.");
        out.emplace_back(static_cast<int>(*p), *s);
    }
    if (out.empty()) return error(errc::argument_invalid, "The cursor is empty.");
    return out;
}

void add_telemetry_routes(http::router& routes, telemetry_context ctx) {
    auto shared = std::make_shared<telemetry_context>(std::move(ctx));
    auto authorized = [shared](request& req) {
        return shared->policies.authenticate(req.header("authorization"), shared->hosts,
                                             req.decoded_path(), auth::right::service_connect,
                                             now());
    };
    constexpr http::route_options blocking{true};

    routes.add("GET", "/telemetry/partitions", [shared, authorized](request& req, responder done) {
        if (auto who = authorized(req); !who) return done(http::error_response(who.error()));
        json::array parts;
        for (int p = 0; p < shared->events.partition_count(); ++p) {
            auto info = shared->events.info(p);
            json::object o{
                {"partitionId", std::to_string(p)},
                {"beginSequenceNumber", info.begin_sequence_number},
                {"lastEnqueuedSequenceNumber", info.next_sequence_number == 0
                                                   ? json::value(-1)
                                                   : json::value(info.next_sequence_number - 1)},
                {"lastEnqueuedTimeUtc", info.next_sequence_number == 0
                                            ? json::value(nullptr)
                                            : json::value(format_iso8601(info.last_enqueued_time))},
                {"isEmpty", info.empty()}};
            parts.push_back(std::move(o));
        }
        done(response::json(200, json::object{{"partitionCount", shared->events.partition_count()},
                                              {"partitions", std::move(parts)}}));
    });

    routes.add(
        "GET", "/telemetry/events",
        [shared, authorized](request& req, responder done) {
            if (auto who = authorized(req); !who) return done(http::error_response(who.error()));
            std::size_t max = 100;
            std::uint64_t wait = 0;
            if (auto m = req.query_value("max")) {
                auto n = number(*m, "max");
                if (!n || *n == 0 || *n > 1000)
                    return done(
                        http::error_response(error(errc::argument_invalid, "max is 1 to 1000.")));
                max = *n;
            }
            if (auto w = req.query_value("wait")) {
                auto n = number(*w, "wait");
                if (!n || *n > 60)
                    return done(http::error_response(
                        error(errc::argument_invalid, "wait is 0 to 60 seconds.")));
                wait = *n;
            }
            reader r(*shared);
            auto cursor = r.start(req);
            if (!cursor) return done(http::error_response(cursor.error()));
            auto events = r.read(*cursor, max);
            if (!events) return done(http::error_response(events.error()));
            if (!events->empty() || wait == 0)
                return done(response::json(200, json::object{{"events", std::move(*events)},
                                                             {"cursor", format_cursor(*cursor)}}));

            // Long poll: the first new event in any of the partitions, or the deadline, answers.
            struct poll {
                poll(cursor_t c, std::size_t m, responder d)
                    : cursor(std::move(c)), max(m), done(std::move(d)) {}
                std::atomic<bool> answered{false};
                std::mutex mutex;
                std::vector<std::uint64_t> tokens;
                cursor_t cursor;
                std::size_t max;
                responder done;
            };
            auto state = std::make_shared<poll>(*cursor, max, done);
            auto answer = [shared, state](bool timed_out) {
                if (state->answered.exchange(true)) return;
                shared->offload([shared, state, timed_out] {
                    std::vector<std::uint64_t> tokens;
                    {
                        std::lock_guard lock(state->mutex);
                        tokens = state->tokens;
                    }
                    for (auto t : tokens) shared->events.unwatch(t);
                    json::array found;
                    if (!timed_out) {
                        reader again(*shared);
                        auto more = again.read(state->cursor, state->max);
                        if (!more) return state->done(http::error_response(more.error()));
                        found = std::move(*more);
                    }
                    state->done(response::json(
                        200, json::object{{"events", std::move(found)},
                                          {"cursor", format_cursor(state->cursor)}}));
                });
            };
            {
                std::lock_guard lock(state->mutex);
                for (auto [p, next] : state->cursor)
                    state->tokens.push_back(
                        shared->events.watch(p, next, [answer] { answer(false); }));
            }
            shared->after(std::chrono::seconds(wait), [answer] { answer(true); });
        },
        blocking);

    // Consumer groups: the rules are telemetry::consumer_groups'; these routes only translate.
    routes.add(
        "GET", "/telemetry/consumergroups",
        [shared, authorized](request& req, responder done) {
            if (auto who = authorized(req); !who) return done(http::error_response(who.error()));
            auto names = shared->groups.list();
            if (!names) return done(http::error_response(names.error()));
            json::array out;
            for (auto& n : *names) out.emplace_back(n);
            done(response::json(200, out));
        },
        blocking);

    routes.add(
        "PUT", "/telemetry/consumergroups/{name}",
        [shared, authorized](request& req, responder done) {
            if (auto who = authorized(req); !who) return done(http::error_response(who.error()));
            const auto& name = req.param("name");
            auto created = shared->groups.create(name);
            if (!created) return done(http::error_response(created.error()));
            auto found = shared->groups.find(name);
            if (!found) return done(http::error_response(found.error()));
            done(response::json(*created ? 201 : 200, json::object{{"name", *found}}));
        },
        blocking);

    routes.add(
        "GET", "/telemetry/consumergroups/{name}",
        [shared, authorized](request& req, responder done) {
            if (auto who = authorized(req); !who) return done(http::error_response(who.error()));
            auto found = shared->groups.find(req.param("name"));
            if (!found) return done(http::error_response(found.error()));
            done(response::json(200, json::object{{"name", *found}}));
        },
        blocking);

    routes.add(
        "DELETE", "/telemetry/consumergroups/{name}",
        [shared, authorized](request& req, responder done) {
            if (auto who = authorized(req); !who) return done(http::error_response(who.error()));
            auto r = shared->groups.remove(req.param("name"));
            done(r ? response::no_content() : http::error_response(r.error()));
        },
        blocking);

    routes.add(
        "GET", "/telemetry/consumergroups/{name}/checkpoint",
        [shared, authorized](request& req, responder done) {
            if (auto who = authorized(req); !who) return done(http::error_response(who.error()));
            auto got = shared->groups.checkpoint(req.param("name"));
            if (!got) return done(http::error_response(got.error()));
            if (!*got)
                return done(
                    http::error_response(error(errc::not_found, "No checkpoint stored yet.")));
            done(response::json(200, json::object{{"cursor", **got}}));
        },
        blocking);

    routes.add(
        "PUT", "/telemetry/consumergroups/{name}/checkpoint",
        [shared, authorized](request& req, responder done) {
            if (auto who = authorized(req); !who) return done(http::error_response(who.error()));
            if (auto found = shared->groups.find(req.param("name")); !found)
                return done(http::error_response(found.error()));
            boost::system::error_code ec;
            auto body = json::parse(req.body, ec);
            const json::value* cur =
                !ec && body.is_object() ? body.get_object().if_contains("cursor") : nullptr;
            if (!cur || !cur->is_string())
                return done(http::error_response(
                    error(errc::argument_invalid, "The body must be {\"cursor\":\"p:seq,...\"}.")));
            auto parsed = parse_cursor(cur->get_string(), shared->events.partition_count());
            if (!parsed) return done(http::error_response(parsed.error()));
            if (auto r = shared->groups.set_checkpoint(req.param("name"), format_cursor(*parsed));
                !r)
                return done(http::error_response(r.error()));
            done(response::no_content());
        },
        blocking);
}

}  // namespace iothub::service_api
