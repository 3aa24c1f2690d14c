// How routing sees one message: the row a route condition is evaluated against (system properties
// under `$keyword`, application properties by name, `$body` for JSON bodies in a UTF encoding,
// `$twin` of the sender), built once per message and shared by every route evaluated on it, and
// the values enrichments stamp. The costly parts (parsing the body, fetching the twin) are done
// only for a condition or enrichment that reads them.
#pragma once

#include "query/query.hpp"
#include "storage/event_log.hpp"

#include <boost/json/monotonic_resource.hpp>
#include <boost/json/object.hpp>

#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace iothub::routing {

// The sender's twin as GET /twins shows it (tags, properties.desired, properties.reported), or
// nullopt when it has none. Called off the network threads.
using twin_lookup = std::function<std::optional<boost::json::object>(std::string_view device_id,
                                                                     std::string_view module_id)>;

// The routing keyword of a system property's wire name: content-type -> contentType, ...;
// other names are their own keyword.
std::string_view keyword_of(std::string_view wire_name);

// Whether routing may read the body as JSON: content type application/json and a UTF-8, -16
// or -32 content encoding, both ignoring case.
bool body_is_json(std::string_view content_type, std::string_view content_encoding);

class message_view {
  public:
    // `twins` may be empty (no twin is ever found). With `roots`, the row holds only the members
    // those names reach (query::condition::roots() of every condition evaluated on it, matched
    // ignoring case); without, all of them. The event, lookup and roots outlive the view.
    message_view(const storage::stored_event& e, const twin_lookup* twins,
                 const std::vector<std::string>* roots = nullptr);
    // Built from parts, for testing a route without a stored message.
    message_view(boost::json::object app_properties, boost::json::object system_properties,
                 std::string body, std::optional<boost::json::object> twin);
    message_view(const message_view&) = delete;
    message_view& operator=(const message_view&) = delete;

    query::truth evaluate(const query::condition& c);
    // What an enrichment with `value` stamps: the text itself, the hub's name for $iothubname,
    // the twin's value at a $twin path (text as is, anything else as JSON), or the value's own
    // text when the path leads nowhere.
    std::string enrichment(std::string_view value, std::string_view hub_name);

  private:
    void need_body();
    void need_twin();
    const boost::json::object* twin();

    // The row's members and the parsed body are one message's worth of small allocations, made
    // per message on the routing path: they come from this arena (spilling to the heap past it)
    // and go together with the view.
    alignas(std::max_align_t) unsigned char arena_[2048];
    boost::json::monotonic_resource resource_{arena_, sizeof arena_};
    boost::json::object row_{&resource_};
    std::string_view body_;
    std::string owned_body_;
    bool json_body_ = false;
    bool body_done_ = false;
    bool twin_done_ = false;
    std::optional<boost::json::object> twin_;
    std::string device_id_, module_id_;
    const twin_lookup* twins_ = nullptr;
};

}  // namespace iothub::routing
