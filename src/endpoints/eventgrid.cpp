#include "endpoints/eventgrid.hpp"

#include "common/crypto.hpp"
#include "common/encoding.hpp"
#include "hub_events/hub_events.hpp"
#include "routing/evaluation.hpp"

#include <boost/json.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>

namespace iothub::endpoints {
namespace json = boost::json;
namespace {

constexpr std::string_view key_prefix = "eventgrid/sub/";
constexpr std::array<std::string_view, 5> event_types{
    "Microsoft.Devices.DeviceCreated", "Microsoft.Devices.DeviceDeleted",
    "Microsoft.Devices.DeviceConnected", "Microsoft.Devices.DeviceDisconnected",
    "Microsoft.Devices.DeviceTelemetry"};

std::string property(const storage::property_list& l, std::string_view name) {
    const auto* v = storage::find_property(l, name);
    return v ? *v : std::string();
}

// Keys of ARM documents match ignoring case.
const json::value* member(const json::object& o, std::string_view key) {
    for (const auto& kv : o)
        if (iequals(kv.key(), key) && !kv.value().is_null()) return &kv.value();
    return nullptr;
}

bool starts_with_ci(std::string_view s, std::string_view prefix) {
    return s.size() >= prefix.size() && iequals(s.substr(0, prefix.size()), prefix);
}
bool ends_with_ci(std::string_view s, std::string_view suffix) {
    return s.size() >= suffix.size() && iequals(s.substr(s.size() - suffix.size()), suffix);
}

result<std::uint32_t> bounded(const json::object& o, std::string_view key, std::uint32_t fallback,
                              std::uint32_t min, std::uint32_t max) {
    const auto* v = member(o, key);
    if (!v) return fallback;
    if (!v->is_int64() || v->get_int64() < min || v->get_int64() > max)
        return error(errc::argument_invalid, std::string(key) + " must be an integer from " +
                                                 std::to_string(min) + " to " +
                                                 std::to_string(max) + ".");
    return static_cast<std::uint32_t>(v->get_int64());
}

std::string to_upper(std::string s) {
    for (auto& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    return s;
}

}  // namespace

result<event_subscription> parse_subscription(std::string_view name, std::string_view body) {
    if (name.empty() || name.size() > 64 || !std::all_of(name.begin(), name.end(), [](char c) {
            return std::isalnum(static_cast<unsigned char>(c)) || c == '-';
        }))
        return error(errc::argument_invalid,
                     "An event subscription name has 1 to 64 letters, digits and hyphens.");
    boost::system::error_code ec;
    auto doc = json::parse(body, ec);
    if (ec || !doc.is_object()) return error(errc::format_error, "The body must be a JSON object.");
    const json::object* props = &doc.get_object();
    if (const auto* p = member(*props, "properties"); p && p->is_object()) props = &p->get_object();
    event_subscription s;
    s.name = std::string(name);

    const auto* dest = member(*props, "destination");
    if (!dest || !dest->is_object())
        return error(errc::argument_invalid, "properties.destination is required.");
    const auto* type = member(dest->get_object(), "endpointType");
    if (!type || !type->is_string() || !iequals(type->get_string(), "WebHook"))
        return error(errc::argument_invalid,
                     "destination.endpointType must be WebHook: the hub delivers to webhooks.");
    const json::object* dprops = &dest->get_object();
    if (const auto* p = member(*dprops, "properties"); p && p->is_object())
        dprops = &p->get_object();
    const auto* url = member(*dprops, "endpointUrl");
    if (!url || !url->is_string())
        return error(errc::argument_invalid, "destination.properties.endpointUrl is required.");
    s.endpoint_url = std::string(url->get_string());
    if (auto u = http::parse_url(s.endpoint_url); !u) return u.error();
    auto batch = bounded(*dprops, "maxEventsPerBatch", 1, 1, 5000);
    if (!batch) return batch.error();
    s.max_events_per_batch = *batch;

    if (const auto* f = member(*props, "filter")) {
        if (!f->is_object()) return error(errc::argument_invalid, "filter must be an object.");
        const auto& fo = f->get_object();
        if (const auto* types = member(fo, "includedEventTypes")) {
            if (!types->is_array())
                return error(errc::argument_invalid, "filter.includedEventTypes must be an array.");
            for (const auto& t : types->get_array()) {
                auto known = std::find_if(event_types.begin(), event_types.end(), [&](auto k) {
                    return t.is_string() && iequals(k, t.get_string());
                });
                if (known == event_types.end())
                    return error(errc::argument_invalid,
                                 "Unknown event type " + json::serialize(t) +
                                     "; the hub raises Microsoft.Devices.DeviceCreated, "
                                     "DeviceDeleted, DeviceConnected, DeviceDisconnected and "
                                     "DeviceTelemetry.");
                s.included_event_types.emplace_back(*known);
            }
        }
        for (auto [key, field] : {std::pair{"subjectBeginsWith", &s.subject_begins_with},
                                  std::pair{"subjectEndsWith", &s.subject_ends_with}}) {
            if (const auto* v = member(fo, key)) {
                if (!v->is_string())
                    return error(errc::argument_invalid,
                                 "filter." + std::string(key) + " must be a string.");
                *field = std::string(v->get_string());
            }
        }
    }
    if (const auto* schema = member(*props, "eventDeliverySchema")) {
        if (schema->is_string() && iequals(schema->get_string(), "CloudEventSchemaV1_0"))
            s.cloud_events = true;
        else if (!schema->is_string() || !iequals(schema->get_string(), "EventGridSchema"))
            return error(errc::argument_invalid,
                         "eventDeliverySchema must be EventGridSchema or CloudEventSchemaV1_0.");
    }
    if (const auto* retry = member(*props, "retryPolicy")) {
        if (!retry->is_object())
            return error(errc::argument_invalid, "retryPolicy must be an object.");
        auto attempts = bounded(retry->get_object(), "maxDeliveryAttempts", 30, 1, 30);
        if (!attempts) return attempts.error();
        auto ttl = bounded(retry->get_object(), "eventTimeToLiveInMinutes", 1440, 1, 1440);
        if (!ttl) return ttl.error();
        s.max_delivery_attempts = *attempts;
        s.event_ttl_minutes = *ttl;
    }
    return s;
}

json::object to_json(const event_subscription& s) {
    json::array types;
    for (const auto& t : s.included_event_types) types.emplace_back(t);
    json::object filter{{"includedEventTypes", types}};
    if (!s.subject_begins_with.empty()) filter["subjectBeginsWith"] = s.subject_begins_with;
    if (!s.subject_ends_with.empty()) filter["subjectEndsWith"] = s.subject_ends_with;
    return json::object{
        {"name", s.name},
        {"type", "Microsoft.EventGrid/eventSubscriptions"},
        {"properties",
         {{"destination",
           {{"endpointType", "WebHook"},
            {"properties",
             {{"endpointUrl", s.endpoint_url}, {"maxEventsPerBatch", s.max_events_per_batch}}}}},
          {"filter", filter},
          {"eventDeliverySchema", s.cloud_events ? "CloudEventSchemaV1_0" : "EventGridSchema"},
          {"retryPolicy",
           {{"maxDeliveryAttempts", s.max_delivery_attempts},
            {"eventTimeToLiveInMinutes", s.event_ttl_minutes}}},
          {"provisioningState", s.validated ? "Succeeded" : "AwaitingManualAction"},
          {"deliveredEvents", s.delivered},
          {"droppedEvents", s.dropped}}}};
}

std::string event_type_of(const storage::event_record& r) {
    const auto source = property(r.system_properties, "iothub-message-source");
    const auto op = property(r.application_properties, "opType");
    if (source == "Telemetry") return "Microsoft.Devices.DeviceTelemetry";
    if (source == hub_events::lifecycle_source) {
        if (op == hub_events::created_op) return "Microsoft.Devices.DeviceCreated";
        if (op == hub_events::deleted_op) return "Microsoft.Devices.DeviceDeleted";
    }
    if (source == hub_events::connection_state_source) {
        if (op == hub_events::connected_op) return "Microsoft.Devices.DeviceConnected";
        if (op == hub_events::disconnected_op) return "Microsoft.Devices.DeviceDisconnected";
    }
    return {};
}

std::string subject_of(const storage::event_record& r) {
    auto s = "devices/" + property(r.system_properties, "iothub-connection-device-id");
    if (auto m = property(r.system_properties, "iothub-connection-module-id"); !m.empty())
        s += "/modules/" + m;
    return s;
}

// --- delivery to one subscription ----------------------------------------------------------------

class event_grid::sink final : public routing::sink {
  public:
    sink(event_grid& eg, event_subscription s)
        : eg_(eg), sub_(std::move(s)), client_(*http::parse_url(sub_.endpoint_url), eg.client_) {}

    result<void> deliver(int, std::vector<storage::event_record> events,
                         std::span<const std::uint64_t>, storage::kv_write cursor) override {
        if (!sub_.validated) {
            if (auto v = validate(); !v) {
                // Not active yet: what happens meanwhile is not sent.
                if (!events.empty()) count(0, events.size());
                held_.hold(std::move(cursor));
                return {};
            }
        }
        // A retry of the same batch resumes after what was accepted already.
        std::size_t from = 0;
        if (cursor.key == progress_key_ && cursor.value == progress_value_) from = progress_done_;
        progress_key_ = cursor.key;
        progress_value_ = cursor.value;
        const auto ttl = std::chrono::minutes(sub_.event_ttl_minutes);
        for (std::size_t i = from; i < events.size(); i += sub_.max_events_per_batch) {
            progress_done_ = i;
            const auto end = std::min(events.size(), i + sub_.max_events_per_batch);
            json::array body;
            for (auto j = i; j < end; ++j)
                body.push_back(eg_.event_for(events[j], sub_.cloud_events));
            auto sent = post(body, "Notification", attempts_ + 1);
            if (!sent) {
                ++attempts_;
                const auto first = first_seen_.value_or(std::chrono::steady_clock::now());
                first_seen_ = first;
                const bool expired = std::chrono::steady_clock::now() - first > ttl;
                if (attempts_ < sub_.max_delivery_attempts && !expired) return sent.error();
                spdlog::warn("event grid: '{}' dropped {} event(s) after {} attempts: {}",
                             sub_.name, end - i, attempts_, sent.error().message());
                count(0, end - i);
            } else {
                count(end - i, 0);
            }
            attempts_ = 0;
            first_seen_.reset();
        }
        progress_key_.clear();
        held_.hold(std::move(cursor));
        return {};
    }

    result<void> flush(sys_time, bool final) override {
        if (!sub_.validated && !final) (void)validate();
        return held_.write(eg_.kv_);
    }

  private:
    result<void> post(const json::array& body, std::string_view kind, std::uint32_t attempt) {
        std::vector<std::pair<std::string, std::string>> headers{
            {"aeg-event-type", std::string(kind)},
            {"aeg-subscription-name", to_upper(sub_.name)},
            {"aeg-delivery-count", std::to_string(attempt > 0 ? attempt - 1 : 0)},
            {"aeg-data-version", "1"},
            {"aeg-metadata-version", "1"},
            {"Content-Type", sub_.cloud_events && kind == "Notification"
                                 ? "application/cloudevents-batch+json; charset=utf-8"
                                 : "application/json; charset=utf-8"}};
        auto r = client_.post(json::serialize(body), headers);
        if (!r) return r.error();
        if (r->status < 200 || r->status > 299)
            return error(errc::server_error,
                         sub_.endpoint_url + " answered HTTP " + std::to_string(r->status) + ".");
        last_answer_ = std::move(r->body);
        return {};
    }

    result<void> validate() {
        const auto now = std::chrono::steady_clock::now();
        if (now < next_validation_)
            return error(errc::server_error, "The subscription awaits its validation.");
        const auto code = random_uuid();
        json::array body{
            json::object{{"id", random_uuid()},
                         {"topic", eg_.topic_},
                         {"subject", ""},
                         {"data", {{"validationCode", code}, {"validationUrl", nullptr}}},
                         {"eventType", "Microsoft.EventGrid.SubscriptionValidationEvent"},
                         {"eventTime", format_iso8601(iothub::now())},
                         {"metadataVersion", "1"},
                         {"dataVersion", "2"}}};
        auto sent = post(body, "SubscriptionValidation", 1);
        std::string why;
        if (sent) {
            boost::system::error_code ec;
            auto answer = json::parse(last_answer_, ec);
            const json::value* response = nullptr;
            if (!ec && answer.is_object())
                response = member(answer.get_object(), "validationResponse");
            if (response && response->is_string() && response->get_string() == code) {
                sub_.validated = true;
                validation_backoff_ = std::chrono::seconds(1);
                eg_.counted(sub_.name, true, 0, 0);
                spdlog::info("event grid: subscription '{}' validated", sub_.name);
                return {};
            }
            why = "the answer did not echo the validation code";
        } else {
            why = sent.error().message();
        }
        next_validation_ = now + validation_backoff_;
        validation_backoff_ =
            std::min<std::chrono::milliseconds>(validation_backoff_ * 2, std::chrono::minutes(1));
        return error(errc::server_error,
                     "The validation handshake with " + sub_.endpoint_url + " failed: " + why);
    }

    void count(std::uint64_t delivered, std::uint64_t dropped) {
        eg_.counted(sub_.name, sub_.validated, delivered, dropped);
    }

    event_grid& eg_;
    event_subscription sub_;
    http::client client_;
    routing::held_cursors held_;
    std::string last_answer_;
    std::chrono::steady_clock::time_point next_validation_{};
    std::chrono::milliseconds validation_backoff_{1000};
    std::uint32_t attempts_ = 0;
    std::optional<std::chrono::steady_clock::time_point> first_seen_;
    std::string progress_key_, progress_value_;
    std::size_t progress_done_ = 0;
};

// --- subscriptions -------------------------------------------------------------------------------

event_grid::event_grid(storage::kv_store& kv, routing::router& router, std::string hub_name,
                       http::client_options client)
    : kv_(kv), router_(router), hub_name_(std::move(hub_name)), client_(std::move(client)) {
    // Azure's topic names the hub's ARM resource; a self-hosted hub has no subscription or group.
    topic_ =
        "/SUBSCRIPTIONS/00000000-0000-0000-0000-000000000000/RESOURCEGROUPS/IOTHUB/PROVIDERS/"
        "MICROSOFT.DEVICES/IOTHUBS/" +
        to_upper(hub_name_);
}

event_grid::~event_grid() {
    if (auto r = router_.set_taps({}); !r)
        spdlog::warn("event grid: subscriptions not stopped: {}", r.error().message());
}

namespace {
json::object stored_form(const event_subscription& s) {
    auto o = to_json(s);
    o["validated"] = s.validated;
    return o;
}
}  // namespace

result<void> event_grid::start() {
    return reload();
}

result<void> event_grid::reload() {
    auto entries = kv_.scan(key_prefix, "", 10000);
    if (!entries) return entries.error();
    std::map<std::string, event_subscription> stored;
    for (const auto& e : *entries) {
        boost::system::error_code ec;
        auto v = json::parse(e.data.value, ec);
        if (ec || !v.is_object()) continue;
        auto name = v.get_object().contains("name") ? v.at("name").as_string() : "";
        auto s = parse_subscription(std::string(name), e.data.value);
        if (!s) {
            spdlog::warn("event grid: stored subscription '{}' ignored: {}", std::string(name),
                         s.error().message());
            continue;
        }
        if (auto* val = v.get_object().if_contains("validated"); val && val->is_bool())
            s->validated = val->get_bool();
        stored[to_lower(s->name)] = std::move(*s);
    }
    {
        std::lock_guard lock(mutex_);
        // Counts are this process's: they carry over to a subscription that is still there.
        for (auto& [key, s] : stored)
            if (auto it = subscriptions_.find(key); it != subscriptions_.end()) {
                s.delivered = it->second.delivered;
                s.dropped = it->second.dropped;
            }
        subscriptions_ = std::move(stored);
    }
    return publish();
}

result<void> event_grid::save(const event_subscription& s) {
    auto r = kv_.put(std::string(key_prefix) + to_lower(s.name), json::serialize(stored_form(s)));
    if (!r) return r.error();
    return {};
}

result<event_subscription> event_grid::put(event_subscription s) {
    s.validated = false;
    s.delivered = s.dropped = 0;
    if (auto r = save(s); !r) return r.error();
    {
        std::lock_guard lock(mutex_);
        subscriptions_[to_lower(s.name)] = s;
    }
    if (auto r = publish(); !r) return r.error();
    return s;
}

result<event_subscription> event_grid::get(std::string_view name) {
    std::lock_guard lock(mutex_);
    auto it = subscriptions_.find(to_lower(name));
    if (it == subscriptions_.end())
        return error(errc::not_found, "No event subscription '" + std::string(name) + "'.");
    return it->second;
}

result<std::vector<event_subscription>> event_grid::list() {
    std::lock_guard lock(mutex_);
    std::vector<event_subscription> out;
    for (const auto& [k, s] : subscriptions_) out.push_back(s);
    return out;
}

result<void> event_grid::remove(std::string_view name) {
    {
        std::lock_guard lock(mutex_);
        if (subscriptions_.erase(to_lower(name)) == 0)
            return error(errc::not_found, "No event subscription '" + std::string(name) + "'.");
    }
    if (auto r = kv_.remove(std::string(key_prefix) + to_lower(name)); !r) return r.error();
    return publish();
}

void event_grid::counted(const std::string& name, bool validated, std::uint64_t delivered,
                         std::uint64_t dropped) {
    std::optional<event_subscription> changed;
    {
        std::lock_guard lock(mutex_);
        auto it = subscriptions_.find(to_lower(name));
        if (it == subscriptions_.end()) return;
        it->second.delivered += delivered;
        it->second.dropped += dropped;
        if (validated && !it->second.validated) {
            it->second.validated = true;
            changed = it->second;
        }
    }
    if (changed)
        if (auto r = save(*changed); !r)
            spdlog::warn("event grid: the validation of '{}' was not recorded: {}", name,
                         r.error().message());
}

result<void> event_grid::publish() {
    // One publication at a time, in order; mutex_ is not held while the router starts and stops
    // taps, since their sinks take it to count.
    std::lock_guard one(publish_mutex_);
    std::map<std::string, event_subscription> current;
    {
        std::lock_guard lock(mutex_);
        current = subscriptions_;
    }
    std::vector<routing::tap> taps;
    for (const auto& [key, s] : current) {
        routing::tap t;
        t.name = key;
        // Delivery settings make the definition; validation and counts do not restart a tap.
        auto def = to_json(s);
        def["properties"].as_object().erase("provisioningState");
        def["properties"].as_object().erase("deliveredEvents");
        def["properties"].as_object().erase("droppedEvents");
        t.definition = json::serialize(def);
        t.route_target = std::string(routing::builtin_eventgrid);
        t.hub_events = [](const storage::event_record& r) {
            auto type = event_type_of(r);
            return !type.empty() && type != "Microsoft.Devices.DeviceTelemetry";
        };
        t.filter = [s](const storage::event_record& r) {
            auto type = event_type_of(r);
            if (type.empty()) return false;
            if (!s.included_event_types.empty() &&
                std::none_of(s.included_event_types.begin(), s.included_event_types.end(),
                             [&](const std::string& t) { return iequals(t, type); }))
                return false;
            auto subject = subject_of(r);
            return starts_with_ci(subject, s.subject_begins_with) &&
                   ends_with_ci(subject, s.subject_ends_with);
        };
        t.make_sink = [this, s]() -> result<std::unique_ptr<routing::sink>> {
            return std::unique_ptr<routing::sink>(std::make_unique<sink>(*this, s));
        };
        taps.push_back(std::move(t));
    }
    return router_.set_taps(std::move(taps));
}

// --- the events ----------------------------------------------------------------------------------

json::object event_grid::event_for(const storage::event_record& r, bool cloud_events) const {
    const auto type = event_type_of(r);
    const auto device = property(r.system_properties, "iothub-connection-device-id");
    const auto module = property(r.system_properties, "iothub-connection-module-id");
    auto id = property(r.system_properties, "correlation-id");
    if (id.empty()) id = property(r.system_properties, "message-id");
    if (id.empty()) id = random_uuid();
    auto time = property(r.application_properties, "operationTimestamp");
    if (time.empty()) time = property(r.system_properties, "iothub-enqueuedtime");
    if (time.empty()) time = format_iso8601(iothub::now());

    json::object data;
    std::string data_version = "1";
    if (type == "Microsoft.Devices.DeviceTelemetry") {
        data_version = "";
        boost::system::error_code ec;
        json::value body;
        if (routing::body_is_json(property(r.system_properties, "content-type"),
                                  property(r.system_properties, "content-encoding")))
            body = json::parse(r.body, ec);
        if (body.is_null() || ec)
            body = base64_encode(
                std::span(reinterpret_cast<const std::uint8_t*>(r.body.data()), r.body.size()));
        json::object props, sys;
        for (const auto& [k, v] : r.application_properties) props[k] = v;
        for (const auto& [k, v] : r.system_properties) {
            if (k == "content-type")
                sys["iothub-content-type"] = v;
            else if (k == "content-encoding")
                sys["iothub-content-encoding"] = v;
            else if (k.starts_with("iothub-"))
                sys[k] = v;
        }
        sys["iothub-message-source"] = "Telemetry";
        data = {{"properties", props}, {"systemProperties", sys}, {"body", body}};
    } else if (type == "Microsoft.Devices.DeviceConnected" ||
               type == "Microsoft.Devices.DeviceDisconnected") {
        boost::system::error_code ec;
        auto body = json::parse(r.body, ec);
        json::value sequence = "";
        if (!ec && body.is_object())
            if (auto* s = body.get_object().if_contains("sequenceNumber")) sequence = *s;
        data = {{"deviceConnectionStateEventInfo", {{"sequenceNumber", sequence}}},
                {"hubName", hub_name_},
                {"deviceId", device}};
        if (!module.empty()) data["moduleId"] = module;
    } else {
        boost::system::error_code ec;
        auto twin = json::parse(r.body, ec);
        data = {{"twin", ec ? json::value(json::object{}) : twin},
                {"hubName", hub_name_},
                {"deviceId", device}};
        if (!module.empty()) data["moduleId"] = module;
    }
    auto subject = subject_of(r);
    if (cloud_events)
        return json::object{{"id", id},
                            {"source", topic_},
                            {"specversion", "1.0"},
                            {"type", type},
                            {"subject", subject},
                            {"time", time},
                            {"datacontenttype", "application/json"},
                            {"data", data}};
    return json::object{{"id", id},
                        {"topic", topic_},
                        {"subject", subject},
                        {"eventType", type},
                        {"eventTime", time},
                        {"data", data},
                        {"dataVersion", data_version},
                        {"metadataVersion", "1"}};
}

}  // namespace iothub::endpoints
