#include "storage/blob_store.hpp"

#include "common/crypto.hpp"

#include <cerrno>
#include <fcntl.h>
#include <fstream>
#include <map>
#include <mutex>
#include <unistd.h>

namespace iothub::storage {

namespace fs = std::filesystem;

result<void> check_blob_key(std::string_view key) {
    auto bad = [&] {
        return error(errc::argument_invalid, "'" + std::string(key) + "' is not a blob path.");
    };
    if (key.empty() || key.find('\0') != std::string_view::npos ||
        key.find('\\') != std::string_view::npos)
        return bad();
    std::string_view rest = key;
    while (true) {
        auto slash = rest.find('/');
        auto segment = rest.substr(0, slash);
        if (segment.empty() || segment == "." || segment == "..") return bad();
        if (slash == std::string_view::npos) return {};
        rest.remove_prefix(slash + 1);
    }
}

namespace {

constexpr std::string_view temp_dir = ".blob-tmp";

sys_time file_time(const fs::path& p) {
    std::error_code ec;
    auto t = fs::last_write_time(p, ec);
    if (ec) return sys_time{};
    return std::chrono::time_point_cast<sys_time::duration>(std::chrono::file_clock::to_sys(t));
}

// Written through its descriptor so the data is fsync'ed before the rename makes it visible.
bool write_synced(const fs::path& p, std::string_view data) {
    int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return false;
    bool good = true;
    while (good && !data.empty()) {
        auto n = ::write(fd, data.data(), data.size());
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0)
            good = false;
        else
            data.remove_prefix(static_cast<std::size_t>(n));
    }
    good = ::fsync(fd) == 0 && good;
    good = ::close(fd) == 0 && good;
    return good;
}

class file_blobs final : public blob_store {
  public:
    explicit file_blobs(fs::path root) : root_(std::move(root)) {}

    result<void> put(std::string_view key, std::string_view bytes) override {
        if (auto ok = check_blob_key(key); !ok) return ok;
        const auto target = root_ / key;
        std::error_code ec;
        fs::create_directories(target.parent_path(), ec);
        if (ec || fs::is_directory(target, ec))
            return error(errc::already_exists, "'" + std::string(key) +
                                                   "' cannot be stored: a name is the prefix of "
                                                   "another's.");
        const auto tmp = root_ / temp_dir / random_uuid();
        if (!write_synced(tmp, bytes)) {
            fs::remove(tmp, ec);
            return error(errc::server_error, "Cannot write " + tmp.string() + ".");
        }
        fs::rename(tmp, target, ec);
        if (ec) {
            fs::remove(tmp, ec);
            return error(errc::server_error,
                         "Cannot store " + target.string() + ": " + ec.message() + ".");
        }
        return {};
    }

    result<std::string> get(std::string_view key) override {
        if (auto ok = check_blob_key(key); !ok) return ok.error();
        std::ifstream in(root_ / key, std::ios::binary);
        std::error_code ec;
        if (!in || fs::is_directory(root_ / key, ec))
            return error(errc::not_found, "No blob '" + std::string(key) + "'.");
        return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    }

    result<void> remove(std::string_view key) override {
        if (auto ok = check_blob_key(key); !ok) return ok;
        std::error_code ec;
        auto p = root_ / key;
        fs::remove(p, ec);
        // Directories left empty go too, so staging areas do not pile up.
        for (p = p.parent_path(); p != root_ && fs::is_empty(p, ec) && !ec; p = p.parent_path())
            fs::remove(p, ec);
        return {};
    }

    result<std::vector<blob_entry>> list(std::string_view prefix) override {
        std::vector<blob_entry> out;
        const auto base = prefix.empty() ? root_ : root_ / prefix;
        std::error_code ec;
        for (auto it = fs::recursive_directory_iterator(base, ec);
             !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
            if (it->path().filename() == temp_dir) {
                it.disable_recursion_pending();
                continue;
            }
            if (!it->is_regular_file(ec)) continue;
            out.push_back({fs::relative(it->path(), root_, ec).generic_string(), it->file_size(ec),
                           file_time(it->path())});
        }
        return out;
    }

  private:
    fs::path root_;
};

class memory_blobs final : public blob_store {
  public:
    result<void> put(std::string_view key, std::string_view bytes) override {
        if (auto ok = check_blob_key(key); !ok) return ok;
        std::lock_guard lock(mutex_);
        data_.insert_or_assign(std::string(key), std::pair(std::string(bytes), now()));
        return {};
    }
    result<std::string> get(std::string_view key) override {
        std::lock_guard lock(mutex_);
        auto it = data_.find(key);
        if (it == data_.end()) return error(errc::not_found, "No blob '" + std::string(key) + "'.");
        return it->second.first;
    }
    result<void> remove(std::string_view key) override {
        std::lock_guard lock(mutex_);
        if (auto it = data_.find(key); it != data_.end()) data_.erase(it);
        return {};
    }
    result<std::vector<blob_entry>> list(std::string_view prefix) override {
        std::lock_guard lock(mutex_);
        std::vector<blob_entry> out;
        for (auto it = data_.lower_bound(prefix);
             it != data_.end() && it->first.starts_with(prefix); ++it)
            out.push_back({it->first, it->second.first.size(), it->second.second});
        return out;
    }

  private:
    std::mutex mutex_;
    std::map<std::string, std::pair<std::string, sys_time>, std::less<>> data_;
};

class prefixed final : public blob_store {
  public:
    prefixed(blob_store& inner, std::string prefix)
        : inner_(inner), prefix_(std::move(prefix) + "/") {}
    result<void> put(std::string_view key, std::string_view bytes) override {
        if (auto ok = check_blob_key(key); !ok) return ok;
        return inner_.put(prefix_ + std::string(key), bytes);
    }
    result<std::string> get(std::string_view key) override {
        if (auto ok = check_blob_key(key); !ok) return ok.error();
        return inner_.get(prefix_ + std::string(key));
    }
    result<void> remove(std::string_view key) override {
        if (auto ok = check_blob_key(key); !ok) return ok;
        return inner_.remove(prefix_ + std::string(key));
    }
    result<std::vector<blob_entry>> list(std::string_view prefix) override {
        auto all = inner_.list(prefix_ + std::string(prefix));
        if (!all) return all.error();
        for (auto& e : *all) e.key.erase(0, prefix_.size());
        return all;
    }

  private:
    blob_store& inner_;
    std::string prefix_;
};

}  // namespace

std::unique_ptr<blob_store> prefixed_blobs(blob_store& inner, std::string prefix) {
    return std::make_unique<prefixed>(inner, std::move(prefix));
}

result<std::unique_ptr<blob_store>> open_file_blobs(const fs::path& root) {
    std::error_code ec;
    fs::create_directories(root / temp_dir, ec);
    if (ec)
        return error(errc::server_error,
                     "Cannot create " + (root / temp_dir).string() + ": " + ec.message());
    // Temporary files of a crash mid-write: never renamed into place, so never listed.
    for (const auto& e : fs::directory_iterator(root / temp_dir, ec)) fs::remove(e.path(), ec);
    return std::unique_ptr<blob_store>(std::make_unique<file_blobs>(root));
}

std::unique_ptr<blob_store> open_memory_blobs() {
    return std::make_unique<memory_blobs>();
}

}  // namespace iothub::storage
