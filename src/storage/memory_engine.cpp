// The in-memory engine: the same contracts as RocksDB with nothing on disk.
#include "storage/engine.hpp"

#include <map>
#include <mutex>

namespace iothub::storage {
namespace {

class memory_kv_store final : public kv_store {
  public:
    result<std::optional<versioned_value>> get(std::string_view key) override {
        std::lock_guard lock(mutex_);
        auto it = data_.find(key);
        if (it == data_.end()) return std::optional<versioned_value>{};
        return std::optional<versioned_value>{it->second};
    }

    std::vector<result<std::uint64_t>> apply(std::span<const kv_write> writes) override {
        std::lock_guard lock(mutex_);
        std::vector<result<std::uint64_t>> results;
        results.reserve(writes.size());
        for (const auto& w : writes) {
            auto it = data_.find(w.key);
            std::optional<std::uint64_t> current;
            if (it != data_.end()) current = it->second.version;
            if (auto ok = w.admissible(current); !ok) {
                results.emplace_back(ok.error());
                continue;
            }
            if (w.operation == kv_write::op::remove) {
                data_.erase(it);
                results.emplace_back(std::uint64_t{0});
            } else {
                auto v = ++version_;
                data_[w.key] = versioned_value{w.value, v};
                results.emplace_back(v);
            }
        }
        return results;
    }

    result<std::vector<kv_entry>> scan(std::string_view prefix, std::string_view start_after,
                                       std::size_t limit) override {
        std::lock_guard lock(mutex_);
        std::vector<kv_entry> out;
        auto it = start_after.empty() || start_after < prefix ? data_.lower_bound(prefix)
                                                              : data_.upper_bound(start_after);
        for (; it != data_.end() && out.size() < limit; ++it) {
            if (it->first.compare(0, prefix.size(), prefix) != 0) break;
            out.push_back(kv_entry{it->first, it->second});
        }
        return out;
    }

  private:
    std::mutex mutex_;
    std::map<std::string, versioned_value, std::less<>> data_;
    std::uint64_t version_ = 0;
};

class memory_engine final : public engine {
  public:
    kv_store& kv() override { return kv_; }
    result<void> flush() override { return {}; }

  private:
    memory_kv_store kv_;
};

}  // namespace

std::unique_ptr<engine> open_memory() {
    return std::make_unique<memory_engine>();
}

}  // namespace iothub::storage
