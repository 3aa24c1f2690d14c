#include "c2d/c2d.hpp"

#include "c2d/detail/records.hpp"
#include "common/crypto.hpp"
#include "common/encoding.hpp"
#include "queue/peek_lock_queue.hpp"

#include <boost/json.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <deque>
#include <map>
#include <mutex>
#include <set>

namespace iothub::c2d {
namespace json = boost::json;

namespace {

bool wants_feedback(ack_mode a, outcome o) {
    switch (a) {
        case ack_mode::none:
            return false;
        case ack_mode::positive:
            return o == outcome::success;
        case ack_mode::negative:
            return o != outcome::success;
        case ack_mode::full:
            return true;
    }
    return false;
}

error lock_lost(std::string_view device_id) {
    return error(errc::message_lock_lost,
                 "The lock token does not name a message device '" + std::string(device_id) +
                     "' holds locked; it was settled or its lock expired.");
}

error feedback_lock_lost() {
    return error(errc::message_lock_lost,
                 "The lock token does not name a locked feedback message; it was settled or its "
                 "lock expired.");
}

}  // namespace

// Messages and feedback are two queue::peek_lock_queue: one lane per device for messages, one lane
// for the feedback stream. A message that ends stages its feedback record into the feedback
// queue within the same commit, so a crash can never keep one without the other.
struct queued {
    std::string generation;  // the device's generation id when it was sent
    message content;
};

struct c2d_service::impl {
    registry::device_registry& registry;
    connections::connection_table& connections;
    const c2d_limits& limits;
    queue::peek_lock_queue<feedback_record> feedback;
    queue::peek_lock_queue<queued> messages;
    std::mutex watch_mutex;
    std::map<std::uint64_t, std::function<void()>> watchers;
    std::uint64_t next_watch = 1;

    impl(storage::kv_store& kv, registry::device_registry& r, connections::connection_table& c,
         const c2d_limits& l)
        : registry(r),
          connections(c),
          limits(l),
          feedback(kv, feedback_traits(l), feedback_settings(l),
                   {{}, [this](const std::vector<std::string>&) { tell_watchers(); }}),
          messages(kv, message_traits(), message_settings(l),
                   {[this](queue::change& c, const queue::peek_lock_queue<queued>::view& v,
                           queue::ending why, sys_time now) { ended(c, v, why, now); },
                    [this](const std::vector<std::string>& devices) {
                        for (const auto& d : devices)
                            if (auto ch = connections.channel(d, "")) ch->c2d_available();
                    }}) {}

    static queue::peek_lock_queue<queued>::traits message_traits() {
        return {
            std::string(detail::message_prefix),
            [](std::string_view lane, std::uint64_t seq) { return detail::message_key(lane, seq); },
            [](std::string_view key) -> std::optional<std::pair<std::string, std::uint64_t>> {
                auto k = detail::parse_message_key(key);
                if (!k) return std::nullopt;
                return std::pair{std::move(k->device_id), k->sequence};
            },
            [](const queued& q, const queue::meta& m) {
                return detail::encode_message(m.enqueued, m.expiry, m.deliveries, q.generation,
                                              q.content);
            },
            [](std::string_view value) -> std::optional<std::pair<queued, queue::meta>> {
                auto r = detail::decode_message(value);
                if (!r) return std::nullopt;
                return std::pair{queued{std::move(r->device_generation_id), *r->content},
                                 queue::meta{r->enqueued_time, r->expiry_time, r->delivery_count}};
            },
            [](std::string_view device) {
                return std::string(detail::message_prefix) + std::string(device) + "/";
            }};
    }
    static queue::peek_lock_queue<queued>::settings message_settings(const c2d_limits& l) {
        return {l.lock_timeout,
                l.max_delivery_count,
                1,
                l.max_depth,
                lock_lost,
                [](std::string_view device, std::size_t depth) {
                    return error(errc::queue_depth_exceeded,
                                 "The queue of device '" + std::string(device) +
                                     "' holds the maximum of " + std::to_string(depth) +
                                     " messages.");
                }};
    }
    static queue::peek_lock_queue<feedback_record>::traits feedback_traits(const c2d_limits& l) {
        return {
            std::string(detail::feedback_prefix),
            [](std::string_view, std::uint64_t seq) { return detail::feedback_key(seq); },
            [](std::string_view key) -> std::optional<std::pair<std::string, std::uint64_t>> {
                auto seq = detail::parse_feedback_key(key);
                if (!seq) return std::nullopt;
                return std::pair{std::string(), *seq};
            },
            [](const feedback_record& r, const queue::meta& m) {
                return detail::encode(r, m.deliveries);
            },
            [ttl = l.feedback_ttl](
                std::string_view value) -> std::optional<std::pair<feedback_record, queue::meta>> {
                auto f = detail::decode_feedback(value);
                if (!f) return std::nullopt;
                const auto at = f->record.enqueued_time;
                return std::pair{std::move(f->record), queue::meta{at, at + ttl, f->deliveries}};
            }};
    }
    static queue::peek_lock_queue<feedback_record>::settings feedback_settings(
        const c2d_limits& l) {
        return {l.lock_timeout,
                l.feedback_max_delivery_count,
                l.feedback_batch_records,
                0,
                [](std::string_view) { return feedback_lock_lost(); },
                {}};
    }

    // A message ended: its feedback, when its ack mode asks for it, in the same commit.
    void ended(queue::change& c, const queue::peek_lock_queue<queued>::view& v, queue::ending why,
               sys_time now) {
        std::optional<outcome> o;
        switch (why) {
            case queue::ending::completed:
                o = outcome::success;
                break;
            case queue::ending::rejected:
                o = outcome::rejected;
                break;
            case queue::ending::expired:
                o = outcome::expired;
                break;
            case queue::ending::exhausted:
                o = outcome::delivery_count_exceeded;
                break;
            case queue::ending::purged:
                o = outcome::purged;
                break;
            case queue::ending::dropped:  // the device is gone: nobody to tell
                break;
        }
        if (!o || !wants_feedback(v.item.content.ack, *o)) return;
        feedback.stage(
            c, "", feedback_record{v.item.content.message_id, v.lane, v.item.generation, now, *o},
            queue::meta{now, now + limits.feedback_ttl, 0});
    }

    void tell_watchers() {
        std::vector<std::function<void()>> tell;
        {
            std::lock_guard lock(watch_mutex);
            for (const auto& [token, fn] : watchers) tell.push_back(fn);
        }
        for (const auto& fn : tell) fn();
    }
};

c2d_service::c2d_service(storage::kv_store& kv, registry::device_registry& registry,
                         connections::connection_table& connections, c2d_limits limits)
    : limits_(limits) {
    impl_ = std::make_unique<impl>(kv, registry, connections, limits_);
}

c2d_service::~c2d_service() = default;

result<void> c2d_service::load() {
    auto& im = *impl_;
    // Messages left by a deleted device (or an earlier incarnation of this one) whose queue could
    // not be dropped at the time go now.
    std::map<std::string, std::optional<std::string>, std::less<>> generations;
    std::optional<error> failed;
    auto keep = [&](const std::string& device, const queued& q) {
        auto it = generations.find(device);
        if (it == generations.end()) {
            auto dev = im.registry.get_device(device);
            std::optional<std::string> g;
            if (dev)
                g = dev->generation_id;
            else if (dev.error().code() != errc::device_not_found && !failed)
                failed = dev.error();
            it = generations.emplace(device, std::move(g)).first;
        }
        return failed || it->second == q.generation;
    };
    if (auto r = im.messages.load(keep); !r) return r.error();
    if (failed) return *failed;
    return im.feedback.load();
}

result<void> c2d_service::send(const std::string& device_id, message m, sys_time now) {
    std::vector<outgoing> one;
    one.push_back({device_id, std::move(m)});
    return std::move(send_many(std::move(one), now).front());
}

std::vector<result<void>> c2d_service::send_many(std::vector<outgoing> batch, sys_time now) {
    auto& im = *impl_;
    std::vector<result<void>> out(batch.size());
    // Checks that need no lock: size, and the device (one registry read per device).
    std::map<std::string, std::string, std::less<>> generations;
    std::vector<queue::peek_lock_queue<queued>::incoming> incoming;
    std::vector<std::size_t> where;
    for (std::size_t i = 0; i < batch.size(); ++i) {
        auto& [device_id, m] = batch[i];
        if (auto size = message_size(m); size > limits_.max_message_bytes) {
            out[i] = error(errc::message_too_large,
                           "The message is " + std::to_string(size) + " bytes; the limit is " +
                               std::to_string(limits_.max_message_bytes) + ".");
            continue;
        }
        auto g = generations.find(device_id);
        if (g == generations.end()) {
            auto device = im.registry.get_device(device_id);
            if (!device) {
                out[i] = device.error();
                continue;
            }
            g = generations.emplace(device_id, device->generation_id).first;
        }
        const auto expiry =
            m.expiry ? std::min(*m.expiry, now + limits_.max_ttl) : now + limits_.default_ttl;
        incoming.push_back(
            {device_id, std::make_shared<const queued>(queued{g->second, std::move(m)}), expiry});
        where.push_back(i);
    }
    if (incoming.empty()) return out;
    // Before a device's queue takes new messages, what an earlier incarnation left goes, and
    // what expired ends (with its feedback); the depth limit counts what stays.
    auto results = im.messages.enqueue(
        std::move(incoming), now,
        [&](const queue::peek_lock_queue<queued>::view& v) -> std::optional<queue::ending> {
            auto g = generations.find(v.lane);
            if (g != generations.end() && v.item.generation != g->second)
                return queue::ending::dropped;
            if (v.m.expiry <= now) return queue::ending::expired;
            return std::nullopt;
        });
    for (std::size_t j = 0; j < results.size(); ++j) out[where[j]] = std::move(results[j]);
    return out;
}

std::optional<delivery> c2d_service::receive(const std::string& device_id, sys_time now) {
    auto l = impl_->messages.receive(device_id, now);
    if (!l) return std::nullopt;
    auto& d = l->items.front();
    // The message shares its queued record's lifetime.
    std::shared_ptr<const message> content(d.item, &d.item->content);
    return delivery{l->lock_token, d.sequence,     d.m.enqueued,
                    d.m.expiry,    d.m.deliveries, std::move(content)};
}

result<void> c2d_service::complete(const std::string& device_id, std::string_view lock_token,
                                   sys_time now) {
    return impl_->messages.settle(device_id, lock_token, queue::settlement::complete, now);
}

result<void> c2d_service::reject(const std::string& device_id, std::string_view lock_token,
                                 sys_time now) {
    return impl_->messages.settle(device_id, lock_token, queue::settlement::reject, now);
}

result<void> c2d_service::abandon(const std::string& device_id, std::string_view lock_token,
                                  sys_time now) {
    return impl_->messages.settle(device_id, lock_token, queue::settlement::abandon, now);
}

void c2d_service::release_all(const std::string& device_id, sys_time now) {
    impl_->messages.release(device_id, now);
}

result<std::size_t> c2d_service::purge(const std::string& device_id, sys_time now) {
    if (auto device = impl_->registry.get_device(device_id); !device) return device.error();
    return impl_->messages.clear(device_id, queue::ending::purged, now);
}

void c2d_service::forget(const std::string& device_id) {
    auto& im = *impl_;
    // Runs after the deletion, on the blocking pool: the id may already name a new device, whose
    // messages stay.
    std::string current;
    if (auto device = im.registry.get_device(device_id)) current = device->generation_id;
    auto r = im.messages.clear(device_id, queue::ending::dropped, now(),
                               [&](const queued& q) { return q.generation != current; });
    if (!r)
        spdlog::warn("C2D: cannot drop the queue of deleted device {}: {}", device_id,
                     r.error().message());
}

key_owner owner_of_key(std::string_view key) {
    if (key.starts_with(detail::feedback_prefix)) return {std::nullopt, true};
    if (auto k = detail::parse_message_key(key)) return {std::move(k->device_id), false};
    return {};
}

void c2d_service::refresh(const std::string& device_id) {
    if (auto r = impl_->messages.refresh(device_id); !r)
        spdlog::warn("C2D: cannot reread the queue of {}: {}", device_id, r.error().message());
}

void c2d_service::refresh_feedback() {
    if (auto r = impl_->feedback.refresh(""); !r)
        spdlog::warn("C2D: cannot reread the feedback: {}", r.error().message());
}

std::size_t c2d_service::depth(const std::string& device_id) const {
    return impl_->messages.depth(device_id);
}

void c2d_service::sweep(sys_time now, bool expire) {
    impl_->messages.sweep(now, expire);
    impl_->feedback.sweep(now, expire);
}

std::optional<feedback_batch> c2d_service::receive_feedback(sys_time now) {
    auto l = impl_->feedback.receive("", now);
    if (!l) return std::nullopt;
    feedback_batch batch;
    batch.lock_token = l->lock_token;
    batch.enqueued_time = l->items.front().item->enqueued_time;
    for (const auto& d : l->items) {
        batch.records.push_back(*d.item);
        batch.enqueued_time = std::min(batch.enqueued_time, d.item->enqueued_time);
    }
    return batch;
}

// Complete and reject both remove the records (a rejected batch is one the service refused and
// will never want); abandon returns them unless they have been delivered too often.
result<void> c2d_service::complete_feedback(std::string_view lock_token, sys_time now) {
    return impl_->feedback.settle("", lock_token, queue::settlement::complete, now);
}
result<void> c2d_service::abandon_feedback(std::string_view lock_token, sys_time now) {
    return impl_->feedback.settle("", lock_token, queue::settlement::abandon, now);
}
result<void> c2d_service::reject_feedback(std::string_view lock_token, sys_time now) {
    return impl_->feedback.settle("", lock_token, queue::settlement::reject, now);
}

std::size_t c2d_service::pending_feedback() const {
    return impl_->feedback.size();
}

std::uint64_t c2d_service::watch_feedback(std::function<void()> notify) {
    std::lock_guard lock(impl_->watch_mutex);
    auto token = impl_->next_watch++;
    impl_->watchers.emplace(token, std::move(notify));
    return token;
}

void c2d_service::unwatch_feedback(std::uint64_t token) {
    std::lock_guard lock(impl_->watch_mutex);
    impl_->watchers.erase(token);
}

}  // namespace iothub::c2d
