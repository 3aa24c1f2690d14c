// Durable peek-lock queues over the kv_store: what cloud-to-device messages, their delivery
// feedback and file-upload notifications all are. One implementation of the rules they share:
//
//  - items are kept in lanes (a device's queue; a single lane for a hub-wide stream), in the
//    order they were enqueued, one kv key each (the owner's key and value layout);
//  - receive() locks the oldest deliverable items of a lane (up to the lease size) under one
//    lock token for the lock timeout and counts a delivery; an item whose enqueue or settlement
//    is being committed holds back the ones behind it, so order is kept;
//  - a lease is completed or rejected (the items end) or abandoned (they become deliverable
//    again); a lock that times out counts as an abandon; an item past its expiry, or delivered the
//    maximum number of times when its lock ends, ends instead; the delivery count is written back
//    when a lock ends without a settlement, so it survives a restart;
//  - every change commits as one kv `apply` (one sync), with what the owner stages alongside it
//    (C2D feedback goes into another queue in the same commit), and without the queue's mutex
//    held: the items it touches are marked in flight meanwhile, so one fsync never stalls the
//    other lanes, receive() included;
//  - the owner hears, outside every lock, which lanes have deliverable items (hooks::available)
//    and, inside the change, why each item ended (hooks::ended).
//
// Locks live in memory: after a restart every item is deliverable again (at-least-once).
//
// Thread safety: every method may be called from any thread. Methods that write block on
// storage and belong on the blocking pool; receive(), depth() and size() touch memory only.
#pragma once

#include "common/crypto.hpp"
#include "common/error.hpp"
#include "common/time.hpp"
#include "storage/kv_store.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace iothub::queue {

// What the queue keeps about an item besides the owner's payload.
struct meta {
    sys_time enqueued;
    sys_time expiry;
    std::uint32_t deliveries = 0;  // including a current delivery
};

enum class settlement : std::uint8_t { complete, abandon, reject };

// Why an item left its queue.
enum class ending : std::uint8_t {
    completed,
    rejected,
    expired,    // its expiry passed
    exhausted,  // delivered the maximum number of times
    purged,     // the owner emptied the lane
    dropped,    // the owner removed it (it no longer belongs to anyone)
};

// Writes gathered for one atomic commit, possibly across queues, and what follows it: each
// `committed` step mirrors a queue's memory (locking that queue), each `tell` step notifies, after
// every lock is released. Nothing runs if the commit fails.
struct change {
    std::vector<storage::kv_write> writes;
    std::vector<std::function<void()>> committed;
    std::vector<std::function<void()>> tell;
};

// Commits `c.writes` as one apply: an error if any write failed.
result<void> commit(storage::kv_store& kv, const change& c);

template <class Item>
class peek_lock_queue {
  public:
    // The owner's storage layout.
    struct traits {
        std::string prefix;  // every key starts with it
        std::function<std::string(std::string_view lane, std::uint64_t sequence)> key;
        std::function<std::optional<std::pair<std::string, std::uint64_t>>(std::string_view key)>
            parse_key;
        std::function<std::string(const Item&, const meta&)> encode;
        std::function<std::optional<std::pair<Item, meta>>(std::string_view value)> decode;
        // Where a lane's keys start (every key of the lane, no key of another); unset: the queue
        // has one lane, under `prefix`.
        std::function<std::string(std::string_view lane)> lane_prefix;
    };
    struct settings {
        std::chrono::seconds lock_timeout{60};
        std::uint32_t max_deliveries = 10;
        std::size_t lease_size = 1;  // items locked together by one receive()
        std::size_t max_depth = 0;   // per lane; 0: unbounded
        // The error for a lock token that names nothing this lane holds locked.
        std::function<error(std::string_view lane)> lock_lost;
        // The error for an enqueue into a full lane.
        std::function<error(std::string_view lane, std::size_t depth)> full;
    };
    struct view {
        const std::string& lane;
        std::uint64_t sequence;
        const Item& item;
        const meta& m;
    };
    struct hooks {
        // An item ends for `why`: the owner stages what goes with it (feedback) into `c`.
        std::function<void(change& c, const view& v, ending why, sys_time now)> ended;
        // These lanes have deliverable items now. Called with no lock held; it must not block.
        std::function<void(const std::vector<std::string>& lanes)> available;
    };
    struct delivered {
        std::uint64_t sequence = 0;
        std::shared_ptr<const Item> item;
        meta m;
    };
    struct lease {
        std::string lock_token;  // a GUID's text form
        std::string lane;
        std::vector<delivered> items;
    };
    struct incoming {
        std::string lane;
        std::shared_ptr<const Item> item;
        sys_time expiry;
    };

    peek_lock_queue(storage::kv_store& kv, traits t, settings s, hooks h)
        : kv_(kv), traits_(std::move(t)), settings_(std::move(s)), hooks_(std::move(h)) {}

    // Reads every item back; those `keep` refuses are removed from storage. Blocks. Call once,
    // before anything else.
    result<void> load(const std::function<bool(const std::string& lane, const Item&)>& keep = {}) {
        std::vector<storage::kv_write> stale;
        std::lock_guard lock(mutex_);
        std::string after;
        for (;;) {
            auto page = kv_.scan(traits_.prefix, after, 1000);
            if (!page) return page.error();
            for (auto& e : *page) {
                auto where = traits_.parse_key(e.key);
                auto decoded = where ? traits_.decode(e.data.value) : std::nullopt;
                if (!decoded) {
                    spdlog::warn("queue: skipping unreadable record {}", e.key);
                    continue;
                }
                next_ = std::max(next_.load(), where->second + 1);
                if (keep && !keep(where->first, decoded->first)) {
                    stale.push_back(
                        {storage::kv_write::op::remove, e.key, {}, storage::precondition::none()});
                    continue;
                }
                insert(where->first,
                       slot{where->second, std::make_shared<const Item>(std::move(decoded->first)),
                            decoded->second});
            }
            if (page->size() < 1000) break;
            after = page->back().key;
        }
        if (stale.empty()) return {};
        spdlog::info("queue {}: dropping {} records no longer wanted", traits_.prefix,
                     stale.size());
        change c;
        c.writes = std::move(stale);
        return commit(kv_, c);
    }

    // Another process (a node of the same cluster) changed the lane in storage: memory follows.
    // Locks this process holds on items still stored stay, and items it is committing are left
    // alone. Tells hooks::available when the lane has deliverable items. Blocks.
    result<void> refresh(const std::string& lane) {
        std::vector<slot> stored;
        const auto prefix = traits_.lane_prefix ? traits_.lane_prefix(lane) : traits_.prefix;
        std::string after;
        for (;;) {
            auto page = kv_.scan(prefix, after, 1000);
            if (!page) return page.error();
            for (auto& e : *page) {
                auto where = traits_.parse_key(e.key);
                auto decoded = where ? traits_.decode(e.data.value) : std::nullopt;
                if (!decoded || where->first != lane) continue;
                stored.push_back(slot{where->second,
                                      std::make_shared<const Item>(std::move(decoded->first)),
                                      decoded->second});
            }
            if (page->size() < 1000) break;
            after = page->back().key;
        }
        bool deliverable = false;
        {
            std::lock_guard lock(mutex_);
            auto& current = lanes_[lane];
            std::remove_reference_t<decltype(current)> merged;
            for (auto& s : stored) {
                next_ = std::max(next_.load(), s.sequence + 1);
                auto* mine = find(lane, s.sequence);
                merged.push_back(mine && (mine->locked() || mine->in_flight) ? std::move(*mine)
                                                                             : std::move(s));
            }
            for (auto& s : current)
                if (s.in_flight && std::none_of(merged.begin(), merged.end(), [&](const slot& m) {
                        return m.sequence == s.sequence;
                    }))
                    merged.push_back(std::move(s));
            std::sort(merged.begin(), merged.end(),
                      [](const slot& a, const slot& b) { return a.sequence < b.sequence; });
            current = std::move(merged);
            for (const auto& s : current) deliverable |= !s.locked() && !s.in_flight;
            drop_empty_lanes();
        }
        if (deliverable && hooks_.available) hooks_.available({lane});
        return {};
    }

    // Enqueues each item in its lane, one commit for all. Before a lane takes new items, `prune`
    // (if given) may end the lane's settled-by-nobody items it names (their owner's generation
    // ended, say); the depth limit counts what stays. One result per item, in order.
    std::vector<result<void>> enqueue(
        std::vector<incoming> batch, sys_time now,
        const std::function<std::optional<ending>(const view&)>& prune = {}) {
        std::vector<result<void>> out(batch.size());
        change c;
        own o;
        std::vector<std::pair<std::string, std::uint64_t>> added;
        std::vector<std::size_t> placed;
        {
            std::unique_lock lock(mutex_);
            std::set<std::string, std::less<>> pruned;
            for (std::size_t i = 0; i < batch.size(); ++i) {
                auto& in = batch[i];
                auto& lane = lanes_[in.lane];
                if (prune && pruned.insert(in.lane).second)
                    for (auto& s : lane)
                        if (!s.in_flight && !s.locked())
                            if (auto why = prune(view{in.lane, s.sequence, *s.item, s.m}))
                                end(c, o, in.lane, s, *why, now);
                std::size_t kept = 0;
                for (const auto& s : lane) kept += !o.removes(in.lane, s.sequence);
                if (settings_.max_depth && kept >= settings_.max_depth) {
                    out[i] = settings_.full
                                 ? settings_.full(in.lane, settings_.max_depth)
                                 : error(errc::queue_depth_exceeded, "The queue is full.");
                    continue;
                }
                slot s{take_sequence(now), std::move(in.item), meta{now, in.expiry, 0}};
                c.writes.push_back({storage::kv_write::op::put, traits_.key(in.lane, s.sequence),
                                    traits_.encode(*s.item, s.m), storage::precondition::absent()});
                o.touched.emplace_back(in.lane, s.sequence);
                added.emplace_back(in.lane, s.sequence);
                placed.push_back(i);
                o.available.insert(in.lane);
                // In the lane at once, so the depth limit counts it, but not deliverable (and
                // holding back later ones) until it is durable: run() marks it in flight.
                lane.push_back(std::move(s));
            }
            drop_empty_lanes();
            if (c.writes.empty()) return out;
            if (auto r = run(c, o, lock); !r) {
                for (const auto& [lane, seq] : added) erase(lane, seq);
                drop_empty_lanes();
                for (auto i : placed) out[i] = r.error();
                return out;
            }
        }
        after(c, o);
        return out;
    }

    // Stages one item for a commit another queue is making (C2D feedback): it joins this queue
    // when that commit succeeds.
    void stage(change& c, std::string lane, Item item, meta m) {
        const auto sequence = take_sequence(m.enqueued);
        auto shared = std::make_shared<const Item>(std::move(item));
        c.writes.push_back({storage::kv_write::op::put, traits_.key(lane, sequence),
                            traits_.encode(*shared, m), storage::precondition::absent()});
        c.committed.push_back([this, lane, sequence, shared, m] {
            std::lock_guard lock(mutex_);
            insert(lane, slot{sequence, shared, m});
        });
        c.tell.push_back([this, lane] {
            if (hooks_.available) hooks_.available({lane});
        });
    }

    // Locks the lane's oldest deliverable items; nullopt when there are none. Memory only.
    std::optional<lease> receive(const std::string& lane, sys_time now) {
        std::lock_guard lock(mutex_);
        auto it = lanes_.find(lane);
        if (it == lanes_.end()) return std::nullopt;
        lease l;
        l.lane = lane;
        for (auto& s : it->second) {
            if (l.items.size() >= settings_.lease_size) break;
            // An item not yet durable holds back the ones after it, which keeps their order.
            if (s.in_flight && !s.locked()) break;
            // Expired items stay until sweep() ends them (a write).
            if (s.locked() || s.m.expiry <= now) continue;
            if (l.lock_token.empty()) l.lock_token = random_uuid();
            s.lock_token = l.lock_token;
            s.lock_until = now + settings_.lock_timeout;
            ++s.m.deliveries;
            l.items.push_back({s.sequence, s.item, s.m});
        }
        if (l.items.empty()) return std::nullopt;
        auto& held = locks_[l.lock_token];
        held.lane = lane;
        for (const auto& d : l.items) held.sequences.push_back(d.sequence);
        return l;
    }

    // Settles a lease. errc from settings::lock_lost when `token` names no lease of `lane` that is
    // still locked (settled already, timed out, or never issued). Blocks.
    result<void> settle(const std::string& lane, std::string_view token, settlement how,
                        sys_time now) {
        change c;
        own o;
        {
            std::unique_lock lock(mutex_);
            auto held = locks_.find(token);
            if (held == locks_.end() || held->second.lane != lane) return lock_lost(lane);
            std::vector<slot*> items;
            for (auto seq : held->second.sequences) {
                auto* s = find(lane, seq);
                if (s && s->lock_token == token && !s->in_flight) items.push_back(s);
            }
            if (items.empty() || items.front()->lock_until <= now) return lock_lost(lane);
            for (auto* s : items) {
                if (how == settlement::abandon)
                    unlock(c, o, lane, *s, now);
                else
                    end(c, o, lane, *s,
                        how == settlement::complete ? ending::completed : ending::rejected, now);
            }
            auto saved = std::move(held->second);
            locks_.erase(held);
            if (auto r = run(c, o, lock); !r) {
                locks_.emplace(std::string(token), std::move(saved));
                return r.error();
            }
        }
        after(c, o);
        return {};
    }

    // Abandons every lease of the lane (its holder went away without settling). Blocks.
    void release(const std::string& lane, sys_time now) {
        change c;
        own o;
        {
            std::unique_lock lock(mutex_);
            auto it = lanes_.find(lane);
            if (it == lanes_.end()) return;
            for (auto& s : it->second)
                if (s.locked() && !s.in_flight) {
                    locks_.erase(s.lock_token);
                    unlock(c, o, lane, s, now);
                }
            if (c.writes.empty()) return;
            if (auto r = run(c, o, lock); !r) {
                spdlog::error("queue {}: releasing locks not committed: {}", traits_.prefix,
                              r.error().message());
                return;
            }
        }
        after(c, o);
    }

    // Ends every item of the lane that is not in flight with `why`; returns how many. Blocks.
    result<std::size_t> clear(const std::string& lane, ending why, sys_time now,
                              const std::function<bool(const Item&)>& which = {}) {
        change c;
        own o;
        std::size_t count = 0;
        {
            std::unique_lock lock(mutex_);
            auto it = lanes_.find(lane);
            if (it == lanes_.end()) return std::size_t{0};
            for (auto& s : it->second) {
                if (s.in_flight || (which && !which(*s.item))) continue;
                end(c, o, lane, s, why, now);
                ++count;
            }
            if (count == 0) return std::size_t{0};
            if (auto r = run(c, o, lock); !r) return r.error();
        }
        after(c, o);
        return count;
    }

    // Times out locks (an abandon) and, with `expire`, ends expired items, across every lane.
    // Locks are this process's own; expiry is decided from storage, so in a cluster one node
    // expires for all. Blocks.
    void sweep(sys_time now, bool expire = true) {
        change c;
        own o;
        {
            std::unique_lock lock(mutex_);
            for (auto& [lane, items] : lanes_)
                for (auto& s : items) {
                    if (s.in_flight) continue;
                    if (s.locked()) {
                        if (s.lock_until <= now) {
                            locks_.erase(s.lock_token);
                            unlock(c, o, lane, s, now);
                        }
                    } else if (expire && s.m.expiry <= now) {
                        end(c, o, lane, s, ending::expired, now);
                    }
                }
            if (c.writes.empty()) return;
            if (auto r = run(c, o, lock); !r) {
                spdlog::error("queue {}: sweep not committed: {}", traits_.prefix,
                              r.error().message());
                return;
            }
        }
        after(c, o);
    }

    std::size_t depth(const std::string& lane) const {
        std::lock_guard lock(mutex_);
        auto it = lanes_.find(lane);
        return it == lanes_.end() ? 0 : it->second.size();
    }
    std::size_t size() const {
        std::lock_guard lock(mutex_);
        std::size_t n = 0;
        for (const auto& [lane, items] : lanes_) n += items.size();
        return n;
    }

  private:
    struct slot {
        std::uint64_t sequence = 0;
        std::shared_ptr<const Item> item;
        meta m;
        std::string lock_token;  // empty while deliverable
        sys_time lock_until;
        // A write about this item is being committed without the mutex held: nothing else may
        // touch it meanwhile.
        bool in_flight = false;

        bool locked() const { return !lock_token.empty(); }
    };
    struct held_lock {
        std::string lane;
        std::vector<std::uint64_t> sequences;
    };
    // What a change does to this queue's memory once committed.
    struct own {
        std::vector<std::pair<std::string, std::uint64_t>> touched;  // in flight meanwhile
        std::vector<std::pair<std::string, std::uint64_t>> removed;
        std::vector<std::pair<std::string, std::uint64_t>> unlocked;
        std::set<std::string> available;

        bool removes(const std::string& lane, std::uint64_t seq) const {
            return std::find(removed.begin(), removed.end(), std::pair{lane, seq}) != removed.end();
        }
    };

    error lock_lost(std::string_view lane) const {
        return settings_.lock_lost
                   ? settings_.lock_lost(lane)
                   : error(errc::message_lock_lost,
                           "The lock token does not name a locked item; it was settled or its "
                           "lock expired.");
    }

    // Sequence numbers follow the clock (microseconds, then a per-process salt), so nodes of a
    // cluster adding to one lane keep the order of their adds and almost never pick the same
    // number (an add that does fails its absent() condition rather than overwrite).
    std::uint64_t take_sequence(sys_time now) {
        const auto us =
            std::chrono::duration_cast<std::chrono::microseconds>(now.time_since_epoch());
        const auto wanted =
            (static_cast<std::uint64_t>(std::max<std::int64_t>(us.count(), 0)) << 8) | salt_;
        auto current = next_.load();
        std::uint64_t taken = 0;
        do {
            taken = std::max(current, wanted);
        } while (!next_.compare_exchange_weak(current, taken + 1));
        return taken;
    }

    void insert(const std::string& lane, slot s) {
        auto& items = lanes_[lane];
        auto at =
            std::lower_bound(items.begin(), items.end(), s.sequence,
                             [](const slot& x, std::uint64_t seq) { return x.sequence < seq; });
        items.insert(at, std::move(s));
    }
    slot* find(const std::string& lane, std::uint64_t sequence) {
        auto it = lanes_.find(lane);
        if (it == lanes_.end()) return nullptr;
        auto& items = it->second;
        auto at =
            std::lower_bound(items.begin(), items.end(), sequence,
                             [](const slot& x, std::uint64_t seq) { return x.sequence < seq; });
        return at != items.end() && at->sequence == sequence ? &*at : nullptr;
    }
    void erase(const std::string& lane, std::uint64_t sequence) {
        auto it = lanes_.find(lane);
        if (it == lanes_.end()) return;
        std::erase_if(it->second, [sequence](const slot& s) { return s.sequence == sequence; });
    }
    void drop_empty_lanes() {
        for (auto it = lanes_.begin(); it != lanes_.end();)
            it = it->second.empty() ? lanes_.erase(it) : std::next(it);
    }

    void end(change& c, own& o, const std::string& lane, const slot& s, ending why, sys_time now) {
        c.writes.push_back({storage::kv_write::op::remove,
                            traits_.key(lane, s.sequence),
                            {},
                            storage::precondition::none()});
        o.removed.emplace_back(lane, s.sequence);
        o.touched.emplace_back(lane, s.sequence);
        if (hooks_.ended) hooks_.ended(c, view{lane, s.sequence, *s.item, s.m}, why, now);
    }

    // A lock ended without a settlement: deliverable again, unless it expired or used up its
    // deliveries meanwhile. The delivery count is written back.
    void unlock(change& c, own& o, const std::string& lane, const slot& s, sys_time now) {
        if (s.m.expiry <= now) return end(c, o, lane, s, ending::expired, now);
        if (s.m.deliveries >= settings_.max_deliveries)
            return end(c, o, lane, s, ending::exhausted, now);
        c.writes.push_back({storage::kv_write::op::put, traits_.key(lane, s.sequence),
                            traits_.encode(*s.item, s.m), storage::precondition::none()});
        o.unlocked.emplace_back(lane, s.sequence);
        o.touched.emplace_back(lane, s.sequence);
        o.available.insert(lane);
    }

    // Commits `c` without holding the mutex (the caller holds it through `lock`), the items it
    // touches marked in flight meanwhile; on success mirrors it in memory.
    result<void> run(change& c, own& o, std::unique_lock<std::mutex>& lock) {
        for (const auto& [lane, seq] : o.touched)
            if (auto* s = find(lane, seq)) s->in_flight = true;
        lock.unlock();
        auto r = commit(kv_, c);
        lock.lock();
        for (const auto& [lane, seq] : o.touched)
            if (auto* s = find(lane, seq)) s->in_flight = false;
        if (!r) return r.error();
        for (const auto& [lane, seq] : o.unlocked)
            if (auto* s = find(lane, seq)) s->lock_token.clear();
        for (const auto& [lane, seq] : o.removed) {
            if (auto* s = find(lane, seq); s && s->locked()) locks_.erase(s->lock_token);
            erase(lane, seq);
        }
        drop_empty_lanes();
        return {};
    }

    // After a successful commit, outside this queue's lock: other queues mirror what was staged
    // into them, then everyone is told.
    void after(change& c, own& o) {
        for (auto& fn : c.committed) fn();
        if (!o.available.empty() && hooks_.available)
            hooks_.available(std::vector<std::string>(o.available.begin(), o.available.end()));
        for (auto& fn : c.tell) fn();
    }

    storage::kv_store& kv_;
    traits traits_;
    settings settings_;
    hooks hooks_;
    mutable std::mutex mutex_;
    std::map<std::string, std::deque<slot>, std::less<>> lanes_;
    std::map<std::string, held_lock, std::less<>> locks_;
    std::atomic<std::uint64_t> next_{1};
    const std::uint64_t salt_ = static_cast<std::uint8_t>(random_bytes(1)[0]);
};

}  // namespace iothub::queue
