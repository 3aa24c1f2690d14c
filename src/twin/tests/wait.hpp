// Twin writes complete asynchronously; the tests wait for them.
#pragma once

#include "twin/twin.hpp"

#include <future>

namespace iothub::twin::waiting {

template <class T, class Call>
result<T> wait_for(Call call) {
    std::promise<result<T>> done;
    call([&done](result<T> r) { done.set_value(std::move(r)); });
    return done.get_future().get();
}

inline result<boost::json::object> update(twin_service& t, std::string_view device,
                                          std::string_view module, const boost::json::value& body,
                                          const registry::if_match& condition) {
    return wait_for<boost::json::object>(
        [&](auto done) { t.update(device, module, body, condition, done); });
}

inline result<boost::json::object> replace(twin_service& t, std::string_view device,
                                           std::string_view module, const boost::json::value& body,
                                           const registry::if_match& condition) {
    return wait_for<boost::json::object>(
        [&](auto done) { t.replace(device, module, body, condition, done); });
}

inline result<std::uint64_t> update_reported(twin_service& t, std::string_view device,
                                             std::string_view module,
                                             const boost::json::value& patch,
                                             std::optional<std::uint64_t> if_version = {}) {
    return wait_for<std::uint64_t>(
        [&](auto done) { t.update_reported(device, module, patch, if_version, done); });
}

}  // namespace iothub::twin::waiting
