#include "net/timer_wheel.hpp"

namespace iothub::net {

wheel_entry::~wheel_entry() {
    if (wheel_) wheel_->cancel(*this);
}

timer_wheel::timer_wheel(boost::asio::execution_context& ctx)
    : boost::asio::execution_context::service(ctx),
      origin_(clock::now()),
      timer_(static_cast<boost::asio::io_context&>(ctx)) {}

timer_wheel& timer_wheel::of(boost::asio::io_context& ctx) {
    return boost::asio::use_service<timer_wheel>(ctx);
}

timer_wheel& timer_wheel::of(const boost::asio::any_io_executor& ex) {
    // Connections run on shards, which are io_contexts (the wheel's timer needs one).
    auto& ctx = boost::asio::query(ex, boost::asio::execution::context);
    return of(static_cast<boost::asio::io_context&>(ctx));
}

std::int64_t timer_wheel::tick_of(clock::time_point t) const {
    if (t <= origin_) return 0;
    const auto d = t - origin_;
    // Rounded up: a deadline never fires before its time.
    return static_cast<std::int64_t>((d + resolution - clock::duration(1)) / resolution);
}

void timer_wheel::schedule(wheel_entry& e, clock::time_point due) {
    if (due == clock::time_point::max()) return cancel(e);
    if (down_) return;
    const auto t = std::max(tick_of(due), current_);
    if (e.wheel_ == this) {
        if (e.due_tick_ == t) return;
        unlink(e);
    } else if (e.wheel_) {
        e.wheel_->cancel(e);  // an entry moved between shards (not done today; kept correct)
    }
    e.due_tick_ = t;
    link(e);
    arm_at(t);
}

void timer_wheel::arm_at(std::int64_t tick) {
    if (armed_for_ >= 0 && armed_for_ <= tick) return;
    armed_for_ = tick;
    timer_.expires_at(origin_ + resolution * tick);  // a wait for a later tick ends aborted
    timer_.async_wait([this](const boost::system::error_code& ec) {
        if (ec || down_) return;
        advance();
    });
}

void timer_wheel::cancel(wheel_entry& e) {
    if (e.wheel_ == this) unlink(e);
}

void timer_wheel::link(wheel_entry& e) {
    const auto slot = static_cast<std::size_t>(e.due_tick_) % slots;
    e.wheel_ = this;
    e.prev_ = nullptr;
    e.next_ = heads_[slot];
    if (e.next_) e.next_->prev_ = &e;
    heads_[slot] = &e;
    busy_.set(slot);
    ++count_;
}

void timer_wheel::unlink(wheel_entry& e) {
    const auto slot = static_cast<std::size_t>(e.due_tick_) % slots;
    if (e.prev_) {
        e.prev_->next_ = e.next_;
    } else if (heads_[slot] == &e) {
        heads_[slot] = e.next_;
        if (!e.next_) busy_.reset(slot);
    } else if (firing_ == &e) {
        firing_ = e.next_;
    }
    if (e.next_) e.next_->prev_ = e.prev_;
    e.wheel_ = nullptr;
    e.prev_ = e.next_ = nullptr;
    --count_;
}

void timer_wheel::advance() {
    armed_for_ = -1;
    const auto now_tick = static_cast<std::int64_t>((clock::now() - origin_) / resolution);
    // Each slot once at most, however long the shard was away.
    const auto last = std::min(now_tick, current_ + static_cast<std::int64_t>(slots) - 1);
    for (auto k = current_; k <= last; ++k) {
        const auto slot = static_cast<std::size_t>(k) % slots;
        if (!busy_.test(slot)) continue;
        // Due entries move to the firing list first: an expiry may cancel or reschedule any
        // entry, including the others due now, and unlink() keeps every list consistent.
        for (auto* e = heads_[slot]; e;) {
            auto* next = e->next_;
            if (e->due_tick_ <= now_tick) {
                if (e->prev_)
                    e->prev_->next_ = e->next_;
                else
                    heads_[slot] = e->next_;
                if (e->next_) e->next_->prev_ = e->prev_;
                e->prev_ = nullptr;
                e->next_ = firing_;
                if (firing_) firing_->prev_ = e;
                firing_ = e;
            }
            e = next;
        }
        if (!heads_[slot]) busy_.reset(slot);
    }
    current_ = now_tick + 1;
    while (firing_) {
        auto* e = firing_;
        unlink(*e);
        e->expired();
    }
    if (count_ == 0) return;
    // The next busy slot; its entries may belong to a later turn, then the wheel wakes, finds
    // nothing due and looks further.
    for (std::size_t d = 0; d < slots; ++d) {
        const auto k = current_ + static_cast<std::int64_t>(d);
        if (busy_.test(static_cast<std::size_t>(k) % slots)) return arm_at(k);
    }
}

void timer_wheel::shutdown() {
    down_ = true;
    timer_.cancel();
    // Owners that outlive the context find their entries unscheduled.
    for (auto& head : heads_) {
        while (head) unlink(*head);
    }
    while (firing_) unlink(*firing_);
}

}  // namespace iothub::net
