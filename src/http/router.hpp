// Maps a method and decoded path segments to a handler. Patterns are literal segments and
// `{name}` captures ("/devices/{id}/modules/{mid}"); a capture matches exactly one segment, except
// a last `{name...}`, which takes one or more (blob names have slashes) and leaves them in
// request::segments for the handler to read one by one.
#pragma once

#include "common/error.hpp"
#include "http/message.hpp"

#include <functional>
#include <string>
#include <vector>

namespace iothub::http {

struct route_options {
    bool blocking = false;  // run on the blocking pool: the handler touches storage
    // Literal segments match in any letter case: the device SDKs disagree on spellings such as
    // "devicebound" (Node, C) and "deviceBound" (C#).
    bool fold_case = false;
    // A body limit for this route other than the server's (blob uploads need more); 0 = the
    // server's. `too_large` answers a body beyond it, for APIs with their own error format.
    std::size_t max_body = 0;
    response (*too_large)(std::size_t limit) = nullptr;
};

class router {
  public:
    // Called with the request (params filled in) and a responder to complete it.
    using handler = std::function<void(request&, responder)>;

    using options = route_options;
    struct route {
        std::string method;
        std::vector<std::string> pattern;
        handler fn;
        options opts;
    };

    void add(std::string method, std::string_view pattern, handler fn, options opts = {});

    // The matching route, with captures written into req.params. A path that matches under
    // another method is GenericMethodNotAllowed (405); no match at all is GenericNotFound (404).
    result<const route*> match(request& req) const;

    // The largest body any route accepts (at least `fallback`).
    std::size_t largest_body(std::size_t fallback) const;

  private:
    std::vector<route> routes_;
};

}  // namespace iothub::http
