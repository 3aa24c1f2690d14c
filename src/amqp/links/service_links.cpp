// The service's links: sending cloud-to-device messages (`/messages/devicebound`), and receiving
// delivery feedback and file-upload notifications, each locked until the service settles it.
// Every one needs a token of a policy with ServiceConnect.
#include "amqp/detail/connection.hpp"

#include <spdlog/spdlog.h>

namespace iothub::amqp::detail {
namespace {

class service_links final : public link_family {
  public:
    using link_family::link_family;

    attach_decision attach(link_state& ls, const node_address&) override {
        const auto* g = c_.service_grant();
        if (!g)
            return attach_decision::refuse(
                "amqp:unauthorized-access",
                "The service links need a token of a policy with ServiceConnect.");
        ls.grant_key = g->key();
        return attach_decision::open();
    }

    void opened(link_state& ls) override {
        auto& svc = c_.svc();
        if (ls.what == role::feedback_out) {
            if (!feedback_watch_)
                feedback_watch_ = svc.c2d.watch_feedback(wakeup(&service_links::pump_all_feedback));
            pump_feedback(ls);
        } else if (ls.what == role::file_notifications_out) {
            if (!file_watch_)
                file_watch_ =
                    svc.files.watch_notifications(wakeup(&service_links::pump_all_notifications));
            pump_notifications(ls);
        }
    }

    void message(link_state& ls, pn_delivery_t* d, pn_message_t* m) override {
        if (ls.what != role::service_c2d) return c_.settle(ls, d, PN_ACCEPTED);
        auto msg = to_c2d_message(m);
        std::string device;
        if (msg) {
            const char* to = pn_message_get_address(m);
            auto target = c2d_target_device(to ? to : "");
            if (!target)
                msg = error(errc::argument_invalid,
                            "The message's 'to' must be /devices/{deviceId}/messages/devicebound.");
            else
                device = std::move(*target);
        }
        ls.sends.push_back({d, std::move(msg), std::move(device)});
        run_sends(ls);
    }

    void flow(link_state& ls) override {
        if (ls.what == role::feedback_out) pump_feedback(ls);
        if (ls.what == role::file_notifications_out) pump_notifications(ls);
    }

    void outcome(link_state& ls, pn_delivery_t* d, std::uint64_t state) override {
        auto lock = ls.locks.find(d);
        if (lock == ls.locks.end()) return;
        auto token = std::move(lock->second);
        ls.locks.erase(lock);
        settle(ls.what, std::move(token), state);
    }

    void detached(link_state& ls) override { release(ls); }

    void closing() override {
        c_.for_each_link(role::feedback_out, [this](link_state& ls) { release(ls); });
        c_.for_each_link(role::file_notifications_out, [this](link_state& ls) { release(ls); });
        if (feedback_watch_) c_.svc().c2d.unwatch_feedback(feedback_watch_);
        if (file_watch_) c_.svc().files.unwatch_notifications(file_watch_);
        feedback_watch_ = file_watch_ = 0;
    }

  private:
    // A watcher callback (any thread) that pumps on this connection's executor.
    std::function<void()> wakeup(void (service_links::*pump)()) {
        return [weak = c_.io().handle(), this, pump] {
            if (auto alive = weak.lock())
                alive->post([this, pump](net::protocol_handler&) {
                    (this->*pump)();
                    c_.wake();
                });
        };
    }

    // One link's messages are enqueued one batch at a time, in order, so a device receives them
    // in the order the service sent them.
    void run_sends(link_state& ls) {
        if (ls.sending || ls.sends.empty()) return;
        ls.sending = true;
        auto work = std::make_shared<fifo<link_state::pending_send>>(std::move(ls.sends));
        ls.sends.clear();
        c_.off_shard(
            ls.id,
            [&c2d = c_.svc().c2d, work] {
                // Messages that are already refused keep their error; the rest are enqueued
                // together, one sync for all of them.
                std::vector<result<void>> out(work->size());
                std::vector<c2d::c2d_service::outgoing> batch;
                std::vector<std::size_t> where;
                for (std::size_t i = 0; i < work->size(); ++i) {
                    auto& s = (*work)[i];
                    if (!s.message) {
                        out[i] = s.message.error();
                        continue;
                    }
                    batch.push_back({s.device_id, std::move(*s.message)});
                    where.push_back(i);
                }
                auto sent = c2d.send_many(std::move(batch), iothub::now());
                for (std::size_t j = 0; j < sent.size(); ++j) out[where[j]] = std::move(sent[j]);
                return out;
            },
            [this, work](link_state& ls, std::vector<result<void>> results) {
                for (std::size_t i = 0; i < results.size(); ++i) {
                    if (results[i])
                        c_.settle(ls, (*work)[i].delivery, PN_ACCEPTED);
                    else
                        c_.settle_error(ls, (*work)[i].delivery, results[i].error());
                }
                ls.sending = false;
                run_sends(ls);
            });
    }

    void pump_feedback(link_state& ls) {
        const auto t = iothub::now();
        auto& c2d = c_.svc().c2d;
        while (pn_link_credit(ls.link) > 0) {
            auto batch = c2d.receive_feedback(t);
            if (!batch) break;
            fill_feedback(c_.scratch(), *batch, c_.svc().hub_name);
            sent(ls, batch->lock_token);
        }
    }

    // One notification per message, locked like a feedback batch.
    void pump_notifications(link_state& ls) {
        const auto t = iothub::now();
        auto& files = c_.svc().files;
        while (pn_link_credit(ls.link) > 0) {
            auto next = files.receive_notification(t);
            if (!next) break;
            fill_file_notification(c_.scratch(), next->notification.enqueued_time,
                                   file_upload::notification_json(next->notification),
                                   c_.svc().hub_name);
            sent(ls, next->lock_token);
        }
    }

    // Sends the message in scratch() tagged with its lock's GUID; a pre-settled receiver takes it
    // as accepted on arrival.
    void sent(link_state& ls, const std::string& lock_token) {
        auto tag = guid_bytes(lock_token).value_or(c_.next_tag());
        auto* d = c_.send_now(ls, c_.scratch(), tag);
        if (pn_link_snd_settle_mode(ls.link) == PN_SND_SETTLED)
            settle(ls.what, lock_token, PN_ACCEPTED);
        else
            ls.locks[d] = lock_token;
    }

    void pump_all_feedback() {
        c_.for_each_link(role::feedback_out, [this](link_state& ls) { pump_feedback(ls); });
    }
    void pump_all_notifications() {
        c_.for_each_link(role::file_notifications_out,
                         [this](link_state& ls) { pump_notifications(ls); });
    }

    // The service's outcome, applied off the network thread.
    void settle(role what, std::string token, std::uint64_t state) {
        auto& svc = c_.svc();
        c_.sessions().blocking.post([&svc, what, token = std::move(token), state] {
            result<void> r;
            const auto t = iothub::now();
            if (what == role::feedback_out)
                r = state == PN_ACCEPTED   ? svc.c2d.complete_feedback(token, t)
                    : state == PN_REJECTED ? svc.c2d.reject_feedback(token, t)
                                           : svc.c2d.abandon_feedback(token, t);
            else
                r = state == PN_ACCEPTED   ? svc.files.complete_notification(token, t)
                    : state == PN_REJECTED ? svc.files.reject_notification(token, t)
                                           : svc.files.abandon_notification(token, t);
            if (!r) spdlog::debug("service settlement not applied: {}", r.error().message());
        });
    }

    // What a link held goes back for another receiver.
    void release(link_state& ls) {
        for (auto& [d, token] : ls.locks) settle(ls.what, token, PN_RELEASED);
        ls.locks.clear();
    }

    std::uint64_t feedback_watch_ = 0;
    std::uint64_t file_watch_ = 0;
};

}  // namespace

std::unique_ptr<link_family> make_service_links(connection& c) {
    return std::make_unique<service_links>(c);
}

}  // namespace iothub::amqp::detail
