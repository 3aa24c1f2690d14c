// HTTP requests and responses as the hub's API handlers see them: plain values with no Beast
// types, so handlers compile quickly and are tested without sockets.
#pragma once

#include "auth/client_certificate.hpp"
#include "common/error.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/json/fwd.hpp>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace iothub::http {

struct request {
    std::string method;                 // upper case, e.g. "GET"
    std::string target;                 // as received, e.g. "/devices/a%23b?api-version=2021-04-12"
    std::string path;                   // target without the query, still encoded
    std::vector<std::string> segments;  // path segments, percent-decoded
    std::vector<std::pair<std::string, std::string>> query;    // decoded
    std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
    std::map<std::string, std::string, std::less<>> params;    // from the route pattern
    std::string body;
    std::string remote_address;
    // The certificate the client presented in the TLS handshake, shared by every request of the
    // connection; null when it sent none. X.509 devices authenticate with it.
    std::shared_ptr<const auth::client_certificate> client_certificate;
    // The network thread the request is served on, for handlers that wait on asynchronous work
    // without holding a thread (set by the server before the handler runs).
    boost::asio::any_io_executor executor;

    std::string_view header(std::string_view lower_name) const;
    std::optional<std::string_view> query_value(std::string_view name) const;
    const std::string& param(std::string_view name) const;
    // The path rebuilt from decoded segments ("/devices/a#b"), for authorization scopes.
    std::string decoded_path() const;
};

struct response {
    int status = 200;
    std::vector<std::pair<std::string, std::string>> headers;
    std::string body;

    static response json(int status, const boost::json::value& body);
    static response no_content() { return response{204, {}, {}}; }
    response& with_header(std::string name, std::string value) {
        headers.emplace_back(std::move(name), std::move(value));
        return *this;
    }
};

// Azure's error format: status from the code's catalogue entry, `iothub-errorcode: <Name>`, and a
// body both the Node and the C# service SDKs parse:
// {"Message":"ErrorCode:<Name>;<text>","ExceptionMessage":"Tracking ID:<id>-TimeStamp:<utc>"}
response error_response(const error& e);

// The one-shot completion a handler calls with its response, from any thread. If every copy is
// dropped without a call, the request still completes, with a 500, so a handler bug cannot hang
// a connection.
class responder {
  public:
    using sink = std::function<void(response)>;
    explicit responder(sink s);
    void operator()(response r) const;

  private:
    struct state;
    std::shared_ptr<state> state_;
};

// Splits a request target into path, decoded segments and query. A trailing '/' is ignored
// ("/devices/" lists devices). Fails on malformed percent-escapes.
struct parsed_target {
    std::string path;
    std::vector<std::string> segments;
    std::vector<std::pair<std::string, std::string>> query;
};
result<parsed_target> parse_target(std::string_view target);

}  // namespace iothub::http
