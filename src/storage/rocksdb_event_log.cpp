#include "storage/detail/rocksdb_event_log.hpp"

#include "common/thread_role.hpp"
#include "storage/detail/event_codec.hpp"
#include "storage/detail/rocksdb_write.hpp"

#include <rocksdb/convenience.h>
#include <rocksdb/write_batch.h>
#include <spdlog/spdlog.h>

#include <algorithm>

namespace iothub::storage::detail {
namespace {

std::string key(std::uint64_t sequence) {
    std::string k;
    put_u64(k, sequence);
    return k;
}

std::string next_key(const std::string& name, int partition) {
    return name + ".next." + std::to_string(partition);
}

error storage_error(const rocksdb::Status& s) {
    return error(errc::server_error, "Event log failure: " + s.ToString());
}

}  // namespace

rocksdb_event_log::rocksdb_event_log(std::string name, rocksdb::DB* db,
                                     std::vector<rocksdb::ColumnFamilyHandle*> partitions,
                                     rocksdb::ColumnFamilyHandle* meta,
                                     const event_log_settings& settings, bool sync,
                                     kv_batch_writer* kv, bool sync_copies)
    : event_log_core(settings.partitions),
      name_(std::move(name)),
      db_(db),
      sync_copies_(sync_copies),
      partitions_(std::move(partitions)),
      meta_(meta),
      settings_(settings),
      kv_(kv),
      next_(static_cast<std::size_t>(settings.partitions), 0),
      sizes_(static_cast<std::size_t>(settings.partitions)) {
    write_options_.sync = sync;
}

result<std::unique_ptr<rocksdb_event_log>> rocksdb_event_log::open(
    const std::string& name, rocksdb::DB* db, std::vector<rocksdb::ColumnFamilyHandle*> partitions,
    rocksdb::ColumnFamilyHandle* meta, const event_log_settings& settings, bool sync,
    kv_batch_writer* kv, bool sync_copies) {
    if (settings.partitions < 1 || settings.partitions > 32)
        return error(errc::argument_invalid, "Event partitions must be between 1 and 32.");
    std::string stored;
    const std::string partitions_key = name + ".partitions";
    auto s = db->Get(rocksdb::ReadOptions(), meta, partitions_key, &stored);
    if (s.ok() && std::stoi(stored) != settings.partitions)
        return error(errc::argument_invalid,
                     "This data directory's " + name + " stream has " + stored +
                         " partitions; the partition count cannot change (configured: " +
                         std::to_string(settings.partitions) + ").");
    if (s.IsNotFound()) {
        s = db->Put(rocksdb::WriteOptions(), meta, partitions_key,
                    std::to_string(settings.partitions));
    }
    if (!s.ok()) return storage_error(s);

    if (partitions.size() != static_cast<std::size_t>(settings.partitions))
        return error(errc::server_error, "The event log needs one column family per partition.");
    std::unique_ptr<rocksdb_event_log> log(new rocksdb_event_log(
        name, db, std::move(partitions), meta, settings, sync, kv, sync_copies));
    for (int p = 0; p < settings.partitions; ++p) {
        auto* cf = log->partitions_[static_cast<std::size_t>(p)];
        std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(rocksdb::ReadOptions(), cf));
        partition_info info;
        std::string next;
        s = db->Get(rocksdb::ReadOptions(), meta, next_key(name, p), &next);
        if (!s.ok() && !s.IsNotFound()) return storage_error(s);
        info.next_sequence_number = s.ok() ? get_u64(next) : 0;
        it->SeekToFirst();
        if (it->Valid() && it->key().size() == 8) {
            info.begin_sequence_number = get_u64(it->key().ToStringView());
        } else {
            info.begin_sequence_number = info.next_sequence_number;
        }
        if (!info.empty()) {
            std::string last;
            s = db->Get(rocksdb::ReadOptions(), cf, key(info.next_sequence_number - 1), &last);
            if (s.ok()) info.last_enqueued_time = time_of(last);
        }
        log->next_[static_cast<std::size_t>(p)] = info.next_sequence_number;
        log->load(p, info);
    }
    log->writer_ = std::thread([l = log.get()] {
        name_this_thread("log:" + l->name_);
        l->run_writer();
    });
    return log;
}

rocksdb_event_log::~rocksdb_event_log() {
    stop();
}

void rocksdb_event_log::stop() {
    {
        std::lock_guard lock(queue_mutex_);
        stopping_ = true;
    }
    queue_cv_.notify_all();
    if (writer_.joinable()) writer_.join();
}

void rocksdb_event_log::append(int partition, std::vector<event_record> events,
                               append_callback done) {
    enqueue(partition, std::move(events), {}, true, [done = std::move(done)](result<appended> r) {
        if (!r) return done(r.error());
        done(std::move(r->sequences));
    });
}

void rocksdb_event_log::append_with(int partition, std::vector<event_record> events,
                                    std::vector<kv_write> writes, append_with_callback done) {
    if (!kv_ && !writes.empty())
        return done(error(errc::server_error, "This event log has no kv store to write with."));
    enqueue(partition, std::move(events), std::move(writes), sync_copies_, std::move(done));
}

void rocksdb_event_log::enqueue(int partition, std::vector<event_record> events,
                                std::vector<kv_write> writes, bool sync,
                                append_with_callback done) {
    if (partition < 0 || partition >= partition_count())
        return done(error(errc::argument_invalid, "No such partition."));
    {
        std::lock_guard lock(queue_mutex_);
        if (!stopping_) {
            queued_events_ += events.size();
            queue_.push_back(
                pending{partition, std::move(events), std::move(writes), sync, std::move(done)});
            if (writer_state_ == writer_state::idle ||
                (writer_state_ == writer_state::lingering &&
                 queued_events_ >= settings_.group_commit_events))
                queue_cv_.notify_one();
            return;
        }
    }
    done(error(errc::service_unavailable, "The event log is shutting down."));
}

void rocksdb_event_log::linger(std::unique_lock<std::mutex>& lock) {
    if (!write_options_.sync || settings_.group_commit_delay.count() <= 0) return;
    // Only a commit that syncs is worth pacing: unsynced copies go at once.
    if (std::none_of(queue_.begin(), queue_.end(), [](const pending& p) { return p.sync; })) return;
    // Commits are paced, not delayed: one that comes at least the interval after the previous
    // one started goes at once (an idle log adds no latency); sooner, it waits out the rest of
    // the interval, or until the batch is full, collecting what arrives meanwhile.
    const auto deadline = last_commit_ + settings_.group_commit_delay;
    if (std::chrono::steady_clock::now() >= deadline) return;
    writer_state_ = writer_state::lingering;
    queue_cv_.wait_until(lock, deadline, [&] {
        return stopping_ || queued_events_ >= settings_.group_commit_events;
    });
}

void rocksdb_event_log::run_writer() {
    std::vector<pending> batch;
    for (;;) {
        {
            std::unique_lock lock(queue_mutex_);
            writer_state_ = writer_state::idle;
            queue_cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
            if (queue_.empty()) return;  // stopping, and everything queued is written
            linger(lock);
            batch.swap(queue_);
            last_commit_ = std::chrono::steady_clock::now();
            queued_events_ = 0;
            writer_state_ = writer_state::working;
        }
        // Everything that queued up while the previous batch synced goes into this one.
        rocksdb::WriteBatch wb;
        // kv writes that ride along (append_with): an append whose conditions fail is left out.
        std::vector<std::optional<result<std::vector<std::uint64_t>>>> kv_results(batch.size());
        std::function<void()> release_kv;
        {
            std::vector<std::span<const kv_write>> groups;
            std::vector<std::size_t> owners;
            for (std::size_t i = 0; i < batch.size(); ++i)
                if (!batch[i].writes.empty()) {
                    groups.emplace_back(batch[i].writes);
                    owners.push_back(i);
                }
            if (!groups.empty()) {
                auto staged = kv_->stage(groups, wb);
                release_kv = std::move(staged.release);
                for (std::size_t g = 0; g < owners.size(); ++g)
                    kv_results[owners[g]] = std::move(staged.groups[g]);
            }
        }
        auto refused = [&](std::size_t i) { return kv_results[i] && !*kv_results[i]; };
        const auto t_now = settings_.clock ? settings_.clock() : now();
        std::vector<std::uint64_t> first(next_.size());
        std::vector<sys_time> times(next_.size());
        std::vector<bool> touched(next_.size(), false);
        std::vector<std::vector<std::uint64_t>> assigned(batch.size());
        for (std::size_t i = 0; i < batch.size(); ++i) {
            if (refused(i)) continue;
            auto p = static_cast<std::size_t>(batch[i].partition);
            if (!touched[p]) {
                touched[p] = true;
                first[p] = next_[p];
                times[p] = stamp(batch[i].partition, t_now);
            }
            for (const auto& e : batch[i].events) {
                wb.Put(partitions_[p], key(next_[p]), encode(times[p], e));
                assigned[i].push_back(next_[p]++);
            }
        }
        for (std::size_t p = 0; p < next_.size(); ++p) {
            if (!touched[p]) continue;
            std::string v;
            put_u64(v, next_[p]);
            wb.Put(meta_, next_key(name_, static_cast<int>(p)), v);
        }
        auto options = write_options_;
        options.sync = options.sync && std::any_of(batch.begin(), batch.end(),
                                                   [](const pending& p) { return p.sync; });
        auto s = wb.Count() > 0 ? write_to_rocksdb(*db_, options, wb) : rocksdb::Status::OK();
        if (release_kv) release_kv();
        if (!s.ok()) {
            for (std::size_t p = 0; p < next_.size(); ++p)
                if (touched[p]) next_[p] = first[p];
            for (auto& b : batch) tell(b.done, storage_error(s));
        } else {
            for (std::size_t p = 0; p < next_.size(); ++p)
                if (touched[p]) published(static_cast<int>(p), next_[p], times[p]);
            for (std::size_t i = 0; i < batch.size(); ++i) {
                if (refused(i)) {
                    tell(batch[i].done, kv_results[i]->error());
                    continue;
                }
                appended a{std::move(assigned[i]), {}};
                if (kv_results[i]) a.versions = std::move(**kv_results[i]);
                tell(batch[i].done, std::move(a));
            }
        }
        batch.clear();
    }
}

result<std::vector<stored_event>> rocksdb_event_log::read(int partition, std::uint64_t from,
                                                          std::size_t max_events) {
    IOTHUB_ASSERT_MAY_BLOCK();
    if (partition < 0 || partition >= partition_count())
        return error(errc::argument_invalid, "No such partition.");
    auto state = info(partition);
    from = std::max(from, state.begin_sequence_number);
    std::vector<stored_event> out;
    if (from >= state.next_sequence_number) return out;
    rocksdb::ReadOptions ro;
    std::string upper = key(state.next_sequence_number);
    rocksdb::Slice upper_slice(upper);
    ro.iterate_upper_bound = &upper_slice;  // only what is durable and published
    std::unique_ptr<rocksdb::Iterator> it(
        db_->NewIterator(ro, partitions_[static_cast<std::size_t>(partition)]));
    for (it->Seek(key(from)); it->Valid() && out.size() < max_events; it->Next()) {
        stored_event e;
        e.sequence_number = get_u64(it->key().ToStringView());
        if (!decode(it->value().ToStringView(), e))
            return error(errc::server_error, "A stored event is corrupt (partition " +
                                                 std::to_string(partition) + ", sequence " +
                                                 std::to_string(e.sequence_number) + ").");
        out.push_back(std::move(e));
    }
    if (!it->status().ok()) return storage_error(it->status());
    return out;
}

result<sys_time> rocksdb_event_log::enqueued_time_of(int partition, std::uint64_t sequence) {
    std::string value;
    auto s = db_->Get(rocksdb::ReadOptions(), partitions_[static_cast<std::size_t>(partition)],
                      key(sequence), &value);
    if (s.IsNotFound()) return error(errc::not_found, "No such event.");
    if (!s.ok()) return storage_error(s);
    return time_of(value);
}

std::uint64_t rocksdb_event_log::size_cut(int partition, std::uint64_t begin, std::uint64_t next,
                                          std::uint64_t age_cut) {
    const auto limit = settings_.retention.max_bytes_per_partition;
    auto* cf = partitions_[static_cast<std::size_t>(partition)];
    auto& w = sizes_[static_cast<std::size_t>(partition)];
    rocksdb::ReadOptions ro;
    ro.fill_cache = false;  // retention's reads are not worth caching
    auto stored = [](const rocksdb::Iterator& it) {
        return static_cast<std::uint64_t>(it.key().size() + it.value().size());
    };
    auto sequence_at = [](const rocksdb::Iterator& it) { return get_u64(it.key().ToStringView()); };
    std::string lower = key(begin), upper = key(next);
    rocksdb::Slice lower_bound(lower), upper_bound(upper);
    ro.iterate_lower_bound = &lower_bound;
    ro.iterate_upper_bound = &upper_bound;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, cf));
    if (!w.known || w.from < begin || w.to > next) {
        // Sum back from the newest event until one more would pass a limit.
        w = size_window{true, next, next, 0};
        for (it->SeekToLast(); it->Valid(); it->Prev()) {
            if (sequence_at(*it) < age_cut || w.bytes + stored(*it) > limit) break;
            w.bytes += stored(*it);
            w.from = sequence_at(*it);
        }
        if (!it->status().ok()) {
            w.known = false;
            return age_cut;
        }
    } else {
        for (it->Seek(key(w.to)); it->Valid(); it->Next()) w.bytes += stored(*it);
        w.to = next;
        // Drop from the front, including whatever the age limit drops anyway.
        for (it->Seek(key(w.from)); it->Valid(); it->Next()) {
            if (w.bytes <= limit && sequence_at(*it) >= age_cut) break;
            w.bytes -= stored(*it);
            w.from = sequence_at(*it) + 1;
        }
        if (!it->status().ok()) {
            w.known = false;
            return age_cut;
        }
    }
    return std::max(age_cut, w.from);
}

void rocksdb_event_log::enforce_retention(sys_time now) {
    IOTHUB_ASSERT_MAY_BLOCK();
    std::lock_guard guard(retention_mutex_);
    const auto cutoff = now - settings_.retention.max_age;
    for (int p = 0; p < partition_count(); ++p) {
        auto state = info(p);
        if (state.empty()) continue;
        auto* cf = partitions_[static_cast<std::size_t>(p)];
        // Age: everything before the first event enqueued at or after the cutoff.
        std::uint64_t cut =
            resolve(p, read_position{read_position::kind::enqueued_time, 0, cutoff, true});
        // Size: drop the oldest events until what is left fits.
        if (settings_.retention.max_bytes_per_partition > 0)
            cut = size_cut(p, state.begin_sequence_number, state.next_sequence_number, cut);
        if (cut <= state.begin_sequence_number) continue;
        // Readers move past the cut before the data goes, so none reads a half-deleted range.
        trimmed(p, cut);
        // Whole files first (no rewrite, space back at once), then a range tombstone for the
        // rest.
        std::string from = key(state.begin_sequence_number), to = key(cut);
        rocksdb::Slice lo(from), hi(to);
        rocksdb::DeleteFilesInRange(db_, cf, &lo, &hi, false);
        db_->DeleteRange(rocksdb::WriteOptions(), cf, from, to);
    }
}

}  // namespace iothub::storage::detail
