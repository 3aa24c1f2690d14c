// A file written through its descriptor, so its data can be fsync'ed before it is renamed into
// place: blobs are whole or absent after a crash. Internal to file_upload.
#pragma once

#include <cerrno>
#include <fcntl.h>
#include <filesystem>
#include <string_view>
#include <unistd.h>

namespace iothub::file_upload::detail {

class output_file {
  public:
    explicit output_file(const std::filesystem::path& p)
        : fd_(::open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) {}
    ~output_file() {
        if (fd_ >= 0) ::close(fd_);
    }
    output_file(const output_file&) = delete;
    output_file& operator=(const output_file&) = delete;
    bool ok() const { return fd_ >= 0; }
    bool write(std::string_view data) {
        while (!data.empty()) {
            auto n = ::write(fd_, data.data(), data.size());
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) return false;
            data.remove_prefix(static_cast<std::size_t>(n));
        }
        return true;
    }
    bool finish() {
        bool good = ::fsync(fd_) == 0;
        good = ::close(fd_) == 0 && good;
        fd_ = -1;
        return good;
    }

  private:
    int fd_;
};

}  // namespace iothub::file_upload::detail
