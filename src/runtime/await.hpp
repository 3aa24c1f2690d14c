// The blocking pool from a coroutine: `co_await async_run(pool, work)` runs `work` on the pool
// and resumes on the awaiting coroutine's executor with what it returned (an exception it threw
// becomes an error result, see blocking_pool). Kept out of shards.hpp so that code without
// coroutines does not pay for their headers.
#pragma once

#include "runtime/shards.hpp"

#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <type_traits>

namespace iothub::runtime {

template <class Work>
boost::asio::awaitable<std::invoke_result_t<Work&>> async_run(blocking_pool& pool, Work work) {
    using R = std::invoke_result_t<Work&>;
    static_assert(!std::is_void_v<R>, "async_run wants work that returns its outcome");
    auto ex = co_await boost::asio::this_coro::executor;
    co_return co_await boost::asio::async_initiate<decltype(boost::asio::use_awaitable), void(R)>(
        [&pool, ex](auto handler, Work w) {
            pool.run(std::move(w), ex,
                     [h = std::move(handler)](R r) mutable { std::move(h)(std::move(r)); });
        },
        boost::asio::use_awaitable, std::move(work));
}

}  // namespace iothub::runtime
