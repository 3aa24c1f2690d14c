// The webhook endpoint (a hub extension to Azure's endpoint types): every routed message is POSTed
// to `endpointUri`, the body as the request body, application properties as headers of the same
// name, system properties as `iothub-*` headers, plus the endpoint's own `headers` (for the
// receiver's authentication). A 2xx answer delivers it; anything else, a timeout or a broken
// connection fails the batch, which the worker retries with backoff. At least once, in order per
// device: a message is sent only after the one before it was accepted.
#pragma once

#include "endpoints/properties.hpp"
#include "http/client.hpp"
#include "routing/config.hpp"
#include "routing/sink.hpp"

#include <memory>

namespace iothub::endpoints {

result<std::unique_ptr<routing::sink>> make_webhook_sink(const routing::endpoint& e,
                                                         storage::kv_store& kv,
                                                         http::client_options options = {});

}  // namespace iothub::endpoints
