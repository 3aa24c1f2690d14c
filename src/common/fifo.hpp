// A first-in, first-out queue for per-connection state: unlike std::deque (which allocates a map
// and a 512-byte block as soon as it exists) an empty fifo allocates nothing, and one that has
// drained gives its storage back. Elements live in one vector; popped ones are skipped, and the
// vector is compacted once most of it has been popped.
#pragma once

#include <cstddef>
#include <utility>
#include <vector>

namespace iothub {

template <class T>
class fifo {
  public:
    bool empty() const { return head_ == items_.size(); }
    std::size_t size() const { return items_.size() - head_; }

    T& front() { return items_[head_]; }
    const T& front() const { return items_[head_]; }
    T& back() { return items_.back(); }
    T& operator[](std::size_t i) { return items_[head_ + i]; }
    const T& operator[](std::size_t i) const { return items_[head_ + i]; }

    void push_back(T v) { items_.push_back(std::move(v)); }
    template <class... Args>
    T& emplace_back(Args&&... args) {
        return items_.emplace_back(std::forward<Args>(args)...);
    }

    void pop_front() {
        items_[head_] = T();  // what it held goes now, not at the next compaction
        if (++head_ == items_.size()) return clear();
        if (head_ >= 16 && head_ * 2 >= items_.size()) {
            items_.erase(items_.begin(), items_.begin() + static_cast<std::ptrdiff_t>(head_));
            head_ = 0;
        }
    }

    void clear() {
        std::vector<T>().swap(items_);
        head_ = 0;
    }

    auto begin() { return items_.begin() + static_cast<std::ptrdiff_t>(head_); }
    auto end() { return items_.end(); }
    auto begin() const { return items_.begin() + static_cast<std::ptrdiff_t>(head_); }
    auto end() const { return items_.end(); }

  private:
    std::vector<T> items_;
    std::size_t head_ = 0;
};

}  // namespace iothub
