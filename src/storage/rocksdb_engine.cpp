// The embedded engine: one RocksDB database per data directory, one column family per kind of
// state, and one write-ahead log shared by all of them.
#include "common/thread_role.hpp"
#include "storage/detail/kv_batch.hpp"
#include "storage/detail/rocksdb_event_log.hpp"
#include "storage/detail/rocksdb_write.hpp"
#include "storage/engine.hpp"

#include <rocksdb/db.h>
#include <rocksdb/merge_operator.h>
#include <rocksdb/options.h>
#include <rocksdb/write_batch.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <functional>
#include <map>
#include <mutex>

namespace iothub::storage {
namespace {

constexpr std::string_view kv_family = "kv";

// The telemetry stream is "events"; events the hub itself raises (twin changes, lifecycle,
// connection state) are "hub", kept apart so telemetry readers never see them unrouted.
constexpr std::string_view events_log = "events";
constexpr std::string_view hub_events_log = "hub";

std::string events_family_name(std::string_view log, int partition) {
    return std::string(log) + "." + std::to_string(partition);
}
constexpr std::string_view version_key = "kv.version";

std::string encode_u64(std::uint64_t v) {
    std::string out(8, '\0');
    for (int i = 7; i >= 0; --i, v >>= 8) out[i] = static_cast<char>(v & 0xff);
    return out;
}

std::uint64_t decode_u64(std::string_view s) {
    std::uint64_t v = 0;
    for (std::size_t i = 0; i < 8 && i < s.size(); ++i)
        v = (v << 8) | static_cast<unsigned char>(s[i]);
    return v;
}

error storage_error(const rocksdb::Status& s) {
    return error(errc::server_error, "Storage failure: " + s.ToString());
}

// Keeps the largest of the merged values: the high-water mark of issued versions, written with
// every commit so that concurrent commits need no ordering among themselves.
class max_u64_operator final : public rocksdb::AssociativeMergeOperator {
  public:
    bool Merge(const rocksdb::Slice&, const rocksdb::Slice* existing, const rocksdb::Slice& value,
               std::string* new_value, rocksdb::Logger*) const override {
        std::uint64_t a = existing ? decode_u64(existing->ToStringView()) : 0;
        std::uint64_t b = decode_u64(value.ToStringView());
        *new_value = encode_u64(std::max(a, b));
        return true;
    }
    const char* Name() const override { return "iothub.max_u64"; }
};

class rocksdb_kv_store final : public kv_store, public detail::kv_batch_writer {
  public:
    rocksdb_kv_store(rocksdb::DB* db, rocksdb::ColumnFamilyHandle* data,
                     rocksdb::ColumnFamilyHandle* meta, bool sync, std::uint64_t last_version)
        : db_(db), data_(data), meta_(meta), version_(last_version) {
        write_options_.sync = sync;
    }

    result<std::optional<versioned_value>> get(std::string_view key) override {
        IOTHUB_ASSERT_MAY_BLOCK();
        std::string raw;
        auto s = db_->Get(rocksdb::ReadOptions(), data_, key, &raw);
        if (s.IsNotFound()) return std::optional<versioned_value>{};
        if (!s.ok()) return storage_error(s);
        return std::optional<versioned_value>{decode(raw)};
    }

    staged stage(const std::vector<std::span<const kv_write>>& groups,
                 rocksdb::WriteBatch& batch) override {
        std::vector<std::string_view> keys;
        for (const auto& g : groups)
            for (const auto& w : g) keys.push_back(w.key);
        auto stripes = lock_stripes(keys);
        staged out;
        out.release = [this, stripes] { unlock_stripes(stripes); };
        // What earlier groups of this batch wrote, for later groups' conditions.
        std::map<std::string, std::optional<std::uint64_t>, std::less<>> pending;
        std::uint64_t highest = 0;
        for (const auto& g : groups) {
            std::vector<std::optional<std::uint64_t>> current;
            std::optional<error> refused;
            for (const auto& w : g) {
                std::optional<std::uint64_t> v;
                if (auto p = pending.find(w.key); p != pending.end()) {
                    v = p->second;
                } else {
                    std::string raw;
                    auto s = db_->Get(rocksdb::ReadOptions(), data_, w.key, &raw);
                    if (!s.ok() && !s.IsNotFound()) {
                        refused = storage_error(s);
                        break;
                    }
                    if (s.ok()) v = decode(raw).version;
                }
                if (auto ok = w.admissible(v); !ok) {
                    refused = ok.error();
                    break;
                }
            }
            if (refused) {
                out.groups.emplace_back(*refused);
                continue;
            }
            std::vector<std::uint64_t> versions;
            for (const auto& w : g) {
                if (w.operation == kv_write::op::remove) {
                    batch.Delete(data_, w.key);
                    pending[w.key] = std::nullopt;
                    versions.push_back(0);
                } else {
                    std::uint64_t v = ++version_;
                    highest = std::max(highest, v);
                    batch.Put(data_, w.key, encode_u64(v) + w.value);
                    pending[w.key] = v;
                    versions.push_back(v);
                }
            }
            out.groups.emplace_back(std::move(versions));
        }
        if (highest > 0) batch.Merge(meta_, version_key, encode_u64(highest));
        return out;
    }

    std::vector<result<std::uint64_t>> apply(std::span<const kv_write> writes) override {
        IOTHUB_ASSERT_MAY_BLOCK();
        // Conditional writes are check-then-write; striped locks make that atomic per key while
        // writes to unrelated keys proceed (and group-commit) in parallel.
        std::vector<std::string_view> keys;
        for (const auto& w : writes) keys.push_back(w.key);
        auto stripes = lock_stripes(keys);

        std::vector<result<std::uint64_t>> results;
        results.reserve(writes.size());
        rocksdb::WriteBatch batch;
        std::uint64_t highest = 0;
        for (const auto& w : writes) {
            std::string raw;
            auto s = db_->Get(rocksdb::ReadOptions(), data_, w.key, &raw);
            if (!s.ok() && !s.IsNotFound()) {
                results.emplace_back(storage_error(s));
                continue;
            }
            std::optional<std::uint64_t> current;
            if (s.ok()) current = decode(raw).version;
            if (auto ok = w.admissible(current); !ok) {
                results.emplace_back(ok.error());
                continue;
            }
            if (w.operation == kv_write::op::remove) {
                batch.Delete(data_, w.key);
                results.emplace_back(std::uint64_t{0});
            } else {
                std::uint64_t v = ++version_;
                highest = std::max(highest, v);
                batch.Put(data_, w.key, encode_u64(v) + w.value);
                results.emplace_back(v);
            }
        }
        if (batch.Count() > 0) {
            if (highest > 0) batch.Merge(meta_, version_key, encode_u64(highest));
            auto s = detail::write_to_rocksdb(*db_, write_options_, batch);
            if (!s.ok()) {
                for (auto& r : results)
                    if (r) r = storage_error(s);
            }
        }
        unlock_stripes(stripes);
        return results;
    }

    result<std::vector<kv_entry>> scan(std::string_view prefix, std::string_view start_after,
                                       std::size_t limit) override {
        IOTHUB_ASSERT_MAY_BLOCK();
        std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), data_));
        std::vector<kv_entry> out;
        if (start_after.empty() || start_after < prefix) {
            it->Seek(prefix);
        } else {
            it->Seek(start_after);
            if (it->Valid() && it->key().ToStringView() == start_after) it->Next();
        }
        for (; it->Valid() && out.size() < limit; it->Next()) {
            auto key = it->key().ToStringView();
            if (key.substr(0, prefix.size()) != prefix) break;
            out.push_back(kv_entry{std::string(key), decode(it->value().ToStringView())});
        }
        if (!it->status().ok()) return storage_error(it->status());
        return out;
    }

  private:
    // Locks the stripes of `keys` in ascending order, each once.
    std::vector<std::size_t> lock_stripes(const std::vector<std::string_view>& keys) {
        std::vector<std::size_t> stripes;
        stripes.reserve(keys.size());
        for (auto k : keys) stripes.push_back(std::hash<std::string_view>{}(k) % locks_.size());
        std::sort(stripes.begin(), stripes.end());
        stripes.erase(std::unique(stripes.begin(), stripes.end()), stripes.end());
        for (auto i : stripes) locks_[i].lock();
        return stripes;
    }
    void unlock_stripes(const std::vector<std::size_t>& stripes) {
        for (auto it = stripes.rbegin(); it != stripes.rend(); ++it) locks_[*it].unlock();
    }

    static versioned_value decode(std::string_view raw) {
        return versioned_value{std::string(raw.substr(std::min<std::size_t>(8, raw.size()))),
                               decode_u64(raw)};
    }

    rocksdb::DB* db_;
    rocksdb::ColumnFamilyHandle* data_;
    rocksdb::ColumnFamilyHandle* meta_;
    rocksdb::WriteOptions write_options_;
    std::atomic<std::uint64_t> version_;
    std::array<std::mutex, 64> locks_;
};

// Telemetry is written once, read in order, and dropped from the front. Each partition has its
// own column family keyed by sequence number alone, so keys only ever increase: flushed files
// never overlap and compaction moves them down without rewriting them.
rocksdb::ColumnFamilyOptions events_options() {
    rocksdb::ColumnFamilyOptions o;
    o.write_buffer_size = 32 << 20;
    o.compression = rocksdb::kLZ4Compression;
    return o;
}

class rocksdb_engine final : public engine {
  public:
    static result<std::unique_ptr<engine>> open(const rocksdb_settings& settings) {
        rocksdb::Options options;
        options.create_if_missing = true;
        options.create_missing_column_families = true;
        options.max_background_jobs = std::max(2, settings.background_jobs);
        // A torn tail after kill -9 or power loss is cut back to the last complete commit.
        options.wal_recovery_mode = rocksdb::WALRecoveryMode::kPointInTimeRecovery;
        options.keep_log_file_num = 4;

        rocksdb::ColumnFamilyOptions meta_options;
        meta_options.merge_operator = std::make_shared<max_u64_operator>();
        rocksdb::ColumnFamilyOptions kv_options;
        // Registry and twin reads are point lookups: bloom filters and hashed data-block index.
        kv_options.OptimizeForPointLookup(64);

        // All memtables together stay within this, however many partitions there are.
        options.db_write_buffer_size = 256 << 20;

        // Every existing column family must be opened; missing ones are created.
        std::vector<std::string> names;
        if (!rocksdb::DB::ListColumnFamilies(options, settings.path.string(), &names).ok())
            names.clear();
        auto want = [&](const std::string& n) {
            if (std::find(names.begin(), names.end(), n) == names.end()) names.push_back(n);
        };
        want(rocksdb::kDefaultColumnFamilyName);
        want(std::string(kv_family));
        for (int p = 0; p < settings.events.partitions; ++p) {
            want(events_family_name(events_log, p));
            want(events_family_name(hub_events_log, p));
        }
        std::vector<rocksdb::ColumnFamilyDescriptor> families;
        for (const auto& n : names) {
            if (n == rocksdb::kDefaultColumnFamilyName)
                families.emplace_back(n, meta_options);
            else if (n == kv_family)
                families.emplace_back(n, kv_options);
            else
                families.emplace_back(n, events_options());
        }
        std::vector<rocksdb::ColumnFamilyHandle*> handles;
        rocksdb::DB* raw = nullptr;
        auto s = rocksdb::DB::Open(options, settings.path.string(), families, &handles, &raw);
        // RocksDB reports a LOCK file held by another process as an I/O error; it is told apart
        // here, at the boundary, so callers decide by code.
        if (s.IsIOError() && s.ToString().find("lock") != std::string::npos)
            return error(errc::already_exists,
                         "The database is in use by another process (" + s.ToString() + ").");
        if (!s.ok()) return storage_error(s);
        auto engine = std::unique_ptr<rocksdb_engine>(new rocksdb_engine(raw, handles, settings));
        auto handle = [&](const std::string& n) {
            for (std::size_t i = 0; i < families.size(); ++i)
                if (families[i].name == n) return handles[i];
            return static_cast<rocksdb::ColumnFamilyHandle*>(nullptr);
        };
        auto* meta = handle(rocksdb::kDefaultColumnFamilyName);
        engine->meta_ = meta;

        std::string last;
        s = raw->Get(rocksdb::ReadOptions(), meta, version_key, &last);
        if (!s.ok() && !s.IsNotFound()) return storage_error(s);
        engine->kv_ =
            std::make_unique<rocksdb_kv_store>(raw, handle(std::string(kv_family)), meta,
                                               settings.sync, s.ok() ? decode_u64(last) : 0);
        for (auto log : {events_log, hub_events_log}) {
            std::vector<rocksdb::ColumnFamilyHandle*> partitions;
            for (int p = 0; p < settings.events.partitions; ++p)
                partitions.push_back(handle(events_family_name(log, p)));
            auto opened =
                detail::rocksdb_event_log::open(std::string(log), raw, std::move(partitions), meta,
                                                settings.events, settings.sync, engine->kv_.get());
            if (!opened) return opened.error();
            (log == events_log ? engine->events_ : engine->hub_events_) = std::move(*opened);
        }
        return std::unique_ptr<storage::engine>(std::move(engine));
    }

    ~rocksdb_engine() override {
        events_.reset();  // drains queued appends first
        hub_events_.reset();
        logs_.clear();
        kv_.reset();
        for (auto* h : handles_) db_->DestroyColumnFamilyHandle(h);
        db_->Close();
        delete db_;
    }

    kv_store& kv() override { return *kv_; }
    event_log& events() override { return *events_; }
    event_log& hub_events() override { return *hub_events_; }

    result<event_log*> log(std::string_view name, bool synced) override {
        if (auto bad = check_log_name(name); !bad) return bad.error();
        std::lock_guard lock(logs_mutex_);
        if (auto it = logs_.find(name); it != logs_.end()) return it->second.log.get();
        named n;
        for (int p = 0; p < settings_.events.partitions; ++p) {
            const auto family = events_family_name(name, p);
            rocksdb::ColumnFamilyHandle* h = nullptr;
            for (auto* existing : handles_)
                if (existing->GetName() == family) h = existing;
            if (!h) {
                auto s = db_->CreateColumnFamily(events_options(), family, &h);
                if (!s.ok()) return storage_error(s);
                handles_.push_back(h);
            }
            n.partitions.push_back(h);
        }
        auto opened =
            detail::rocksdb_event_log::open(std::string(name), db_, n.partitions, meta_,
                                            settings_.events, settings_.sync, kv_.get(), synced);
        if (!opened) return opened.error();
        n.log = std::move(*opened);
        auto* out = n.log.get();
        logs_.emplace(std::string(name), std::move(n));
        return out;
    }

    result<void> drop_log(std::string_view name) override {
        std::lock_guard retention(retention_mutex_);
        std::lock_guard lock(logs_mutex_);
        std::vector<rocksdb::ColumnFamilyHandle*> doomed;
        if (auto it = logs_.find(name); it != logs_.end()) {
            it->second.log.reset();
            doomed = it->second.partitions;
            logs_.erase(it);
        } else {
            for (int p = 0; p < settings_.events.partitions; ++p)
                for (auto* h : handles_)
                    if (h->GetName() == events_family_name(name, p)) doomed.push_back(h);
        }
        for (auto* h : doomed) {
            auto s = db_->DropColumnFamily(h);
            if (!s.ok()) return storage_error(s);
            db_->DestroyColumnFamilyHandle(h);
            std::erase(handles_, h);
        }
        return {};
    }

    void enforce_retention(sys_time now) override {
        events_->enforce_retention(now);
        hub_events_->enforce_retention(now);
        // drop_log takes retention_mutex_ first too, so no log is freed during the pass.
        std::lock_guard retention(retention_mutex_);
        std::vector<detail::rocksdb_event_log*> open;
        {
            std::lock_guard lock(logs_mutex_);
            for (auto& [name, n] : logs_) open.push_back(n.log.get());
        }
        for (auto* l : open) l->enforce_retention(now);
    }

    result<void> flush() override {
        if (events_) events_->stop();
        if (hub_events_) hub_events_->stop();
        {
            std::lock_guard lock(logs_mutex_);
            for (auto& [name, n] : logs_) n.log->stop();
        }
        auto s = db_->FlushWAL(true);
        if (!s.ok()) return storage_error(s);
        s = db_->Flush(rocksdb::FlushOptions(), handles_);
        if (!s.ok()) return storage_error(s);
        return {};
    }

  private:
    rocksdb_engine(rocksdb::DB* db, std::vector<rocksdb::ColumnFamilyHandle*> handles,
                   const rocksdb_settings& settings)
        : db_(db), handles_(std::move(handles)), settings_(settings) {}

    struct named {
        std::vector<rocksdb::ColumnFamilyHandle*> partitions;
        std::unique_ptr<detail::rocksdb_event_log> log;
    };

    rocksdb::DB* db_;
    std::vector<rocksdb::ColumnFamilyHandle*> handles_;
    rocksdb_settings settings_;
    rocksdb::ColumnFamilyHandle* meta_ = nullptr;
    std::mutex logs_mutex_;
    std::mutex retention_mutex_;
    std::map<std::string, named, std::less<>> logs_;
    std::unique_ptr<rocksdb_kv_store> kv_;
    std::unique_ptr<detail::rocksdb_event_log> events_;
    std::unique_ptr<detail::rocksdb_event_log> hub_events_;
};

}  // namespace

namespace {

// Called from write_to_rocksdb, so that a PC inside that function is on every stack that reaches
// RocksDB's write (a sanitizer records callers' PCs, never one inside RocksDB's own code).
[[gnu::noinline]] rocksdb::Status write_batch(rocksdb::DB& db, const rocksdb::WriteOptions& options,
                                              rocksdb::WriteBatch& batch) {
    return db.Write(options, &batch);
}

}  // namespace

rocksdb::Status detail::write_to_rocksdb(rocksdb::DB& db, const rocksdb::WriteOptions& options,
                                         rocksdb::WriteBatch& batch) {
    auto s = write_batch(db, options, batch);
    return s;
}

result<std::unique_ptr<engine>> open_rocksdb(const rocksdb_settings& settings) {
    return rocksdb_engine::open(settings);
}

}  // namespace iothub::storage
