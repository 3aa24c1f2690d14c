#include "c2d/c2d.hpp"

#include "c2d/detail/records.hpp"
#include "common/crypto.hpp"
#include "common/encoding.hpp"

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

// Memory mirrors storage exactly, except for the deliveries of locked messages (written back
// only when the lock ends without a settlement) and feedback delivery counts (never written:
// after a restart a record gets its full allowance again, which errs towards delivering it).
//
// One mutex covers the queues, the feedback stream and the sequence counter, and is held across
// each commit so memory changes in the order storage does. C2D is low-rate by design (Azure
// allows 1.67 sends/s per unit), so serialising its writes costs nothing that matters.
struct c2d_service::impl {
    struct queued {
        std::uint64_t sequence = 0;
        sys_time enqueued_time;
        sys_time expiry_time;
        std::uint32_t delivery_count = 0;  // including a current delivery
        std::string generation;
        std::shared_ptr<const message> content;
        std::string lock_token;  // empty while Enqueued
        sys_time lock_until;
        // A write about this message is being committed without the mutex held (a new message
        // not yet durable, or a settlement under way): nothing else may touch it meanwhile.
        bool in_flight = false;

        bool locked() const { return !lock_token.empty(); }
    };
    struct pending {
        feedback_record record;
        std::string lock_token;
        std::uint32_t deliveries = 0;
    };
    struct feedback_lock {
        std::vector<std::uint64_t> sequences;
        sys_time until;
    };

    // What one operation changes, gathered under the mutex, committed as one `apply`, then
    // mirrored in memory; the notifications go out after the mutex is released.
    struct change {
        std::vector<storage::kv_write> writes;
        std::vector<std::pair<std::string, std::uint64_t>> removed;   // device, sequence
        std::vector<std::pair<std::string, std::uint64_t>> unlocked;  // delivery count written
        std::vector<std::pair<std::uint64_t, feedback_record>> new_feedback;
        std::set<std::string> available;  // devices that have a message to take now
        std::vector<std::function<void()>> feedback_watchers;  // to tell, filled on commit
    };

    storage::kv_store& kv;
    registry::device_registry& registry;
    connections::connection_table& connections;
    const c2d_limits& limits;

    mutable std::mutex mutex;
    std::map<std::string, std::deque<queued>, std::less<>> queues;
    std::map<std::uint64_t, pending> feedback;
    std::map<std::string, feedback_lock, std::less<>> feedback_locks;
    std::uint64_t next_sequence = 1;
    std::map<std::uint64_t, std::function<void()>> watchers;
    std::uint64_t next_watch = 1;

    impl(storage::kv_store& k, registry::device_registry& r, connections::connection_table& c,
         const c2d_limits& l)
        : kv(k), registry(r), connections(c), limits(l) {}

    static std::string encode(const queued& q) {
        return detail::encode(detail::stored_message{q.enqueued_time, q.expiry_time,
                                                     q.delivery_count, q.generation, q.content});
    }

    queued* find(std::string_view device_id, std::uint64_t sequence) {
        auto it = queues.find(device_id);
        if (it == queues.end()) return nullptr;
        auto& d = it->second;
        auto at = std::lower_bound(d.begin(), d.end(), sequence,
                                   [](const queued& q, std::uint64_t s) { return q.sequence < s; });
        return at != d.end() && at->sequence == sequence ? &*at : nullptr;
    }

    queued* find_locked(std::string_view device_id, std::string_view token, sys_time now) {
        auto it = queues.find(device_id);
        if (it == queues.end() || token.empty()) return nullptr;
        for (auto& q : it->second)
            if (q.lock_token == token) return q.lock_until > now && !q.in_flight ? &q : nullptr;
        return nullptr;
    }

    // Removes `q` with outcome `o`, writing feedback when its ack mode asks for it.
    void settle(change& c, const std::string& device_id, const queued& q, outcome o, sys_time now) {
        c.writes.push_back({storage::kv_write::op::remove,
                            detail::message_key(device_id, q.sequence),
                            {},
                            storage::precondition::none()});
        c.removed.emplace_back(device_id, q.sequence);
        if (!wants_feedback(q.content->ack, o)) return;
        feedback_record r{q.content->message_id, device_id, q.generation, now, o};
        auto seq = next_sequence++;
        c.writes.push_back({storage::kv_write::op::put, detail::feedback_key(seq),
                            detail::encode(r), storage::precondition::none()});
        c.new_feedback.emplace_back(seq, std::move(r));
    }

    // A lock ended without a settlement (abandon, timeout, connection gone): the message is
    // Enqueued again unless it has expired or used up its deliveries meanwhile.
    void unlock(change& c, const std::string& device_id, const queued& q, sys_time now) {
        if (q.expiry_time <= now) return settle(c, device_id, q, outcome::expired, now);
        if (q.delivery_count >= limits.max_delivery_count)
            return settle(c, device_id, q, outcome::delivery_count_exceeded, now);
        c.writes.push_back({storage::kv_write::op::put, detail::message_key(device_id, q.sequence),
                            encode(q), storage::precondition::none()});
        c.unlocked.emplace_back(device_id, q.sequence);
        c.available.insert(device_id);
    }

    result<void> commit(const std::vector<storage::kv_write>& writes) {
        if (writes.empty()) return {};
        for (auto& r : kv.apply(writes))
            if (!r) return r.error();
        return {};
    }

    // Mirrors a committed change in memory. Called with the mutex held.
    void mirror(change& c) {
        for (const auto& [device_id, seq] : c.unlocked)
            if (auto* q = find(device_id, seq)) q->lock_token.clear();
        for (const auto& [device_id, seq] : c.removed) {
            auto it = queues.find(device_id);
            if (it == queues.end()) continue;
            std::erase_if(it->second, [seq = seq](const queued& q) { return q.sequence == seq; });
            if (it->second.empty()) queues.erase(it);
        }
        for (auto& [seq, r] : c.new_feedback) feedback.emplace(seq, pending{std::move(r), {}, 0});
        if (!c.new_feedback.empty()) feedback_ready(c);
    }

    void feedback_ready(change& c) {
        for (const auto& [token, fn] : watchers) c.feedback_watchers.push_back(fn);
    }

    // Called without the mutex: channels and watchers may call back in.
    result<void> settle_locked(const std::string& device_id, std::string_view lock_token,
                               sys_time now, std::optional<outcome> o);

    void announce(const change& c) {
        for (const auto& device_id : c.available)
            if (auto channel = connections.channel(device_id, "")) channel->c2d_available();
        for (const auto& fn : c.feedback_watchers) fn();
    }

    // Commits and mirrors `c`, or logs why not; for paths with nobody to return an error to.
    void commit_or_log(change& c, std::string_view what) {
        if (auto r = commit(c.writes); !r) {
            spdlog::error("C2D {}: {}", what, r.error().message());
            c = change{};
            return;
        }
        mirror(c);
    }

    // Commits `c` without holding the mutex (which the caller holds through `lock`), so one
    // fsync does not stall every other queue's operations: the messages `c` is about are marked
    // in flight meanwhile. On success the change is mirrored; on failure the marks are cleared and
    // nothing else changes.
    result<void> commit_unlocked(
        change& c, std::unique_lock<std::mutex>& lock,
        const std::vector<std::pair<std::string, std::uint64_t>>& touched) {
        for (const auto& [device_id, seq] : touched)
            if (auto* q = find(device_id, seq)) q->in_flight = true;
        lock.unlock();
        auto r = commit(c.writes);
        lock.lock();
        for (const auto& [device_id, seq] : touched)
            if (auto* q = find(device_id, seq)) q->in_flight = false;
        if (!r) return r.error();
        mirror(c);
        return {};
    }

    // Drops feedback records, e.g. when they have been delivered too often or are too old.
    void drop_feedback(change& c, std::uint64_t seq, std::vector<std::uint64_t>& dropped) {
        c.writes.push_back({storage::kv_write::op::remove,
                            detail::feedback_key(seq),
                            {},
                            storage::precondition::none()});
        dropped.push_back(seq);
    }
    enum class feedback_settlement { complete, abandon, reject };

    // Complete and reject both remove the records (a rejected batch is one the service refused
    // and will never want); abandon returns them unless they have been delivered too often.
    result<void> settle_feedback(std::string_view token, feedback_settlement how) {
        change c;
        {
            std::lock_guard lock(mutex);
            auto l = feedback_locks.find(token);
            if (l == feedback_locks.end()) return feedback_lock_lost();
            std::vector<std::uint64_t> dropped, freed;
            for (auto seq : l->second.sequences) {
                auto f = feedback.find(seq);
                if (f == feedback.end()) continue;
                if (how != feedback_settlement::abandon ||
                    f->second.deliveries >= limits.feedback_max_delivery_count)
                    drop_feedback(c, seq, dropped);
                else
                    freed.push_back(seq);
            }
            if (auto r = commit(c.writes); !r) return r.error();
            feedback_locks.erase(l);
            for (auto seq : dropped) feedback.erase(seq);
            for (auto seq : freed) feedback.at(seq).lock_token.clear();
            if (!freed.empty()) feedback_ready(c);
        }
        announce(c);
        return {};
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
    std::lock_guard lock(im.mutex);
    std::uint64_t max_seq = 0;
    std::vector<storage::kv_write> stale;
    std::string after;
    std::string current_device;
    std::optional<std::string> current_generation;  // nullopt: the device no longer exists

    for (;;) {
        auto page = im.kv.scan(detail::message_prefix, after, 1000);
        if (!page) return page.error();
        for (auto& e : *page) {
            auto key = detail::parse_message_key(e.key);
            auto rec = key ? detail::decode_message(e.data.value) : std::nullopt;
            if (!rec) {
                spdlog::warn("C2D: skipping unreadable record {}", e.key);
                continue;
            }
            max_seq = std::max(max_seq, key->sequence);
            if (key->device_id != current_device) {
                current_device = key->device_id;
                auto dev = im.registry.get_device(current_device);
                if (dev)
                    current_generation = dev->generation_id;
                else if (dev.error().code() == errc::device_not_found)
                    current_generation.reset();
                else
                    return dev.error();
            }
            // Left by a deleted device (or an earlier incarnation of this one) whose queue could
            // not be dropped at the time.
            if (current_generation != rec->device_generation_id) {
                stale.push_back(
                    {storage::kv_write::op::remove, e.key, {}, storage::precondition::none()});
                continue;
            }
            im.queues[key->device_id].push_back(impl::queued{key->sequence,
                                                             rec->enqueued_time,
                                                             rec->expiry_time,
                                                             rec->delivery_count,
                                                             std::move(rec->device_generation_id),
                                                             std::move(rec->content),
                                                             {},
                                                             {}});
        }
        if (page->size() < 1000) break;
        after = page->back().key;
    }

    after.clear();
    for (;;) {
        auto page = im.kv.scan(detail::feedback_prefix, after, 1000);
        if (!page) return page.error();
        for (auto& e : *page) {
            auto seq = detail::parse_feedback_key(e.key);
            auto rec = seq ? detail::decode_feedback(e.data.value) : std::nullopt;
            if (!rec) {
                spdlog::warn("C2D: skipping unreadable feedback record {}", e.key);
                continue;
            }
            max_seq = std::max(max_seq, *seq);
            im.feedback.emplace(*seq, impl::pending{std::move(*rec), {}, 0});
        }
        if (page->size() < 1000) break;
        after = page->back().key;
    }
    im.next_sequence = max_seq + 1;
    if (!stale.empty()) {
        spdlog::info("C2D: dropping {} messages of deleted devices", stale.size());
        if (auto r = im.commit(stale); !r) return r.error();
    }
    return {};
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
    std::map<std::string, registry::identity, std::less<>> devices;
    for (std::size_t i = 0; i < batch.size(); ++i) {
        const auto& [device_id, m] = batch[i];
        if (auto size = message_size(m); size > limits_.max_message_bytes) {
            out[i] = error(errc::message_too_large,
                           "The message is " + std::to_string(size) + " bytes; the limit is " +
                               std::to_string(limits_.max_message_bytes) + ".");
            continue;
        }
        if (devices.contains(device_id)) continue;
        auto device = im.registry.get_device(device_id);
        if (!device)
            out[i] = device.error();
        else
            devices.emplace(device_id, std::move(*device));
    }

    impl::change c;
    std::vector<std::pair<std::string, std::uint64_t>> touched;
    std::vector<std::size_t> enqueued;  // indices of the messages this commit adds
    std::vector<std::pair<std::string, std::uint64_t>> added;  // and their places
    {
        std::unique_lock lock(im.mutex);
        std::set<std::string, std::less<>> cleaned;
        for (std::size_t i = 0; i < batch.size(); ++i) {
            auto& [device_id, m] = batch[i];
            auto device = devices.find(device_id);
            if (!out[i] || device == devices.end()) {
                if (out[i]) out[i] = error(errc::device_not_found, "Unknown device.");
                continue;
            }
            const auto& generation = device->second.generation_id;
            auto& queue = im.queues[device_id];
            // Once per device and batch: what an earlier incarnation left, and what expired.
            if (cleaned.insert(device_id).second) {
                for (const auto& q : queue) {
                    if (q.in_flight) continue;
                    if (q.generation != generation) {
                        c.writes.push_back({storage::kv_write::op::remove,
                                            detail::message_key(device_id, q.sequence),
                                            {},
                                            storage::precondition::none()});
                        c.removed.emplace_back(device_id, q.sequence);
                        touched.emplace_back(device_id, q.sequence);
                    } else if (!q.locked() && q.expiry_time <= now) {
                        im.settle(c, device_id, q, outcome::expired, now);
                        touched.emplace_back(device_id, q.sequence);
                    }
                }
            }
            std::size_t kept = 0;
            for (const auto& q : queue)
                if (std::find(c.removed.begin(), c.removed.end(),
                              std::pair{device_id, q.sequence}) == c.removed.end())
                    ++kept;
            if (kept >= limits_.max_depth) {
                out[i] = error(errc::queue_depth_exceeded,
                               "The queue of device '" + device_id + "' holds the maximum of " +
                                   std::to_string(limits_.max_depth) + " messages.");
                continue;
            }
            impl::queued q;
            q.sequence = im.next_sequence++;
            q.enqueued_time = now;
            q.expiry_time =
                m.expiry ? std::min(*m.expiry, now + limits_.max_ttl) : now + limits_.default_ttl;
            q.generation = generation;
            q.content = std::make_shared<const message>(std::move(m));
            c.writes.push_back({storage::kv_write::op::put,
                                detail::message_key(device_id, q.sequence), im.encode(q),
                                storage::precondition::absent()});
            touched.emplace_back(device_id, q.sequence);
            added.emplace_back(device_id, q.sequence);
            enqueued.push_back(i);
            // In the queue at once, so the depth limit counts it, but not deliverable (and
            // holding back later ones) until it is durable: commit_unlocked marks it in flight.
            queue.push_back(std::move(q));
        }
        for (auto it = im.queues.begin(); it != im.queues.end();)
            it = it->second.empty() ? im.queues.erase(it) : std::next(it);
        if (!c.writes.empty()) {
            // One commit for the whole batch: one sync however many messages it carries.
            if (auto r = im.commit_unlocked(c, lock, touched); !r) {
                for (const auto& [device_id, seq] : added) {
                    auto it = im.queues.find(device_id);
                    if (it == im.queues.end()) continue;
                    std::erase_if(it->second,
                                  [seq = seq](const impl::queued& x) { return x.sequence == seq; });
                    if (it->second.empty()) im.queues.erase(it);
                }
                for (auto i : enqueued) out[i] = r.error();
                return out;
            }
            for (auto i : enqueued) c.available.insert(batch[i].device_id);
        }
    }
    im.announce(c);
    return out;
}

std::optional<delivery> c2d_service::receive(const std::string& device_id, sys_time now) {
    auto& im = *impl_;
    std::lock_guard lock(im.mutex);
    auto it = im.queues.find(device_id);
    if (it == im.queues.end()) return std::nullopt;
    for (auto& q : it->second) {
        // A message not yet durable holds back the ones after it, which keeps their order.
        if (q.in_flight && !q.locked()) break;
        // Expired messages stay until sweep() removes them with their feedback (a write).
        if (q.locked() || q.expiry_time <= now) continue;
        q.lock_token = random_uuid();
        q.lock_until = now + limits_.lock_timeout;
        ++q.delivery_count;
        return delivery{q.lock_token,  q.sequence,       q.enqueued_time,
                        q.expiry_time, q.delivery_count, q.content};
    }
    return std::nullopt;
}

// Complete, reject and abandon: the settlement commits outside the mutex (see commit_unlocked).
result<void> c2d_service::impl::settle_locked(const std::string& device_id,
                                              std::string_view lock_token, sys_time now,
                                              std::optional<outcome> o) {
    change c;
    {
        std::unique_lock lock(mutex);
        const auto* q = find_locked(device_id, lock_token, now);
        if (!q) return lock_lost(device_id);
        const auto seq = q->sequence;
        if (o)
            settle(c, device_id, *q, *o, now);
        else
            unlock(c, device_id, *q, now);
        if (auto r = commit_unlocked(c, lock, {{device_id, seq}}); !r) return r.error();
    }
    announce(c);
    return {};
}

result<void> c2d_service::complete(const std::string& device_id, std::string_view lock_token,
                                   sys_time now) {
    return impl_->settle_locked(device_id, lock_token, now, outcome::success);
}

result<void> c2d_service::reject(const std::string& device_id, std::string_view lock_token,
                                 sys_time now) {
    return impl_->settle_locked(device_id, lock_token, now, outcome::rejected);
}

result<void> c2d_service::abandon(const std::string& device_id, std::string_view lock_token,
                                  sys_time now) {
    return impl_->settle_locked(device_id, lock_token, now, std::nullopt);
}

void c2d_service::release_all(const std::string& device_id, sys_time now) {
    auto& im = *impl_;
    impl::change c;
    {
        std::lock_guard lock(im.mutex);
        auto it = im.queues.find(device_id);
        if (it == im.queues.end()) return;
        for (const auto& q : it->second)
            if (q.locked() && !q.in_flight) im.unlock(c, device_id, q, now);
        im.commit_or_log(c, "releasing locks");
    }
    im.announce(c);
}

result<std::size_t> c2d_service::purge(const std::string& device_id, sys_time now) {
    auto& im = *impl_;
    if (auto device = im.registry.get_device(device_id); !device) return device.error();
    impl::change c;
    std::size_t count = 0;
    {
        std::lock_guard lock(im.mutex);
        auto it = im.queues.find(device_id);
        if (it == im.queues.end()) return std::size_t{0};
        for (const auto& q : it->second) {
            if (q.in_flight) continue;  // being enqueued or settled right now: not purged
            im.settle(c, device_id, q, outcome::purged, now);
            ++count;
        }
        if (auto r = im.commit(c.writes); !r) return r.error();
        im.mirror(c);
    }
    im.announce(c);
    return count;
}

void c2d_service::forget(const std::string& device_id) {
    auto& im = *impl_;
    // Runs after the deletion, on the blocking pool: the id may already name a new device, whose
    // messages stay.
    std::string current;
    if (auto device = im.registry.get_device(device_id)) current = device->generation_id;
    std::lock_guard lock(im.mutex);
    auto it = im.queues.find(device_id);
    if (it == im.queues.end()) return;
    impl::change c;
    for (const auto& q : it->second) {
        if (q.generation == current || q.in_flight) continue;
        c.writes.push_back({storage::kv_write::op::remove,
                            detail::message_key(device_id, q.sequence),
                            {},
                            storage::precondition::none()});
        c.removed.emplace_back(device_id, q.sequence);
    }
    // Gone from memory either way: load() and send() drop records of an earlier incarnation.
    if (auto r = im.commit(c.writes); !r)
        spdlog::warn("C2D: cannot drop the queue of deleted device {}: {}", device_id,
                     r.error().message());
    im.mirror(c);
}

std::size_t c2d_service::depth(const std::string& device_id) const {
    auto& im = *impl_;
    std::lock_guard lock(im.mutex);
    auto it = im.queues.find(device_id);
    return it == im.queues.end() ? 0 : it->second.size();
}

void c2d_service::sweep(sys_time now) {
    auto& im = *impl_;
    impl::change c;
    std::vector<std::uint64_t> dropped;
    std::vector<std::uint64_t> freed;  // feedback records whose lock timed out
    std::vector<std::string> expired_locks;
    {
        std::lock_guard lock(im.mutex);
        for (const auto& [device_id, queue] : im.queues)
            for (const auto& q : queue) {
                if (q.in_flight) continue;
                if (q.locked()) {
                    if (q.lock_until <= now) im.unlock(c, device_id, q, now);
                } else if (q.expiry_time <= now) {
                    im.settle(c, device_id, q, outcome::expired, now);
                }
            }
        for (const auto& [token, l] : im.feedback_locks) {
            if (l.until > now) continue;
            expired_locks.push_back(token);
            for (auto seq : l.sequences) {
                auto f = im.feedback.find(seq);
                if (f == im.feedback.end()) continue;
                if (f->second.deliveries >= limits_.feedback_max_delivery_count)
                    im.drop_feedback(c, seq, dropped);
                else
                    freed.push_back(seq);
            }
        }
        for (const auto& [seq, p] : im.feedback)
            if (p.lock_token.empty() && p.record.enqueued_time + limits_.feedback_ttl <= now)
                im.drop_feedback(c, seq, dropped);
        if (auto r = im.commit(c.writes); !r) {
            spdlog::error("C2D sweep: {}", r.error().message());
            return;
        }
        im.mirror(c);
        for (const auto& token : expired_locks) im.feedback_locks.erase(token);
        for (auto seq : dropped) im.feedback.erase(seq);
        for (auto seq : freed)
            if (auto f = im.feedback.find(seq); f != im.feedback.end())
                f->second.lock_token.clear();
        if (!freed.empty() && c.new_feedback.empty()) im.feedback_ready(c);
    }
    im.announce(c);
}

std::optional<feedback_batch> c2d_service::receive_feedback(sys_time now) {
    auto& im = *impl_;
    std::lock_guard lock(im.mutex);
    feedback_batch batch;
    impl::feedback_lock l{{}, now + limits_.lock_timeout};
    for (auto& [seq, p] : im.feedback) {
        if (batch.records.size() >= limits_.feedback_batch_records) break;
        if (!p.lock_token.empty()) continue;
        if (batch.records.empty()) batch.lock_token = random_uuid();
        p.lock_token = batch.lock_token;
        ++p.deliveries;
        l.sequences.push_back(seq);
        batch.records.push_back(p.record);
    }
    if (batch.records.empty()) return std::nullopt;
    batch.enqueued_time = batch.records.front().enqueued_time;
    for (const auto& r : batch.records)
        batch.enqueued_time = std::min(batch.enqueued_time, r.enqueued_time);
    im.feedback_locks.emplace(batch.lock_token, std::move(l));
    return batch;
}

result<void> c2d_service::complete_feedback(std::string_view lock_token) {
    return impl_->settle_feedback(lock_token, impl::feedback_settlement::complete);
}
result<void> c2d_service::abandon_feedback(std::string_view lock_token) {
    return impl_->settle_feedback(lock_token, impl::feedback_settlement::abandon);
}
result<void> c2d_service::reject_feedback(std::string_view lock_token) {
    return impl_->settle_feedback(lock_token, impl::feedback_settlement::reject);
}

std::size_t c2d_service::pending_feedback() const {
    std::lock_guard lock(impl_->mutex);
    return impl_->feedback.size();
}

std::uint64_t c2d_service::watch_feedback(std::function<void()> notify) {
    std::lock_guard lock(impl_->mutex);
    auto token = impl_->next_watch++;
    impl_->watchers.emplace(token, std::move(notify));
    return token;
}

void c2d_service::unwatch_feedback(std::uint64_t token) {
    std::lock_guard lock(impl_->mutex);
    impl_->watchers.erase(token);
}

}  // namespace iothub::c2d
