// Maps a method and decoded path segments to a handler. Patterns are literal segments and
// `{name}` captures ("/devices/{id}/modules/{mid}"); a capture matches exactly one segment.
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

  private:
    std::vector<route> routes_;
};

}  // namespace iothub::http
