// The cluster bus over NATS core subjects: `<prefix>.bus.all.<topic>` reaches every node,
// `<prefix>.bus.node.<id>.<topic>` one node; replies come back on this node's inbox subject.
#include "cluster/cluster.hpp"
#include "common/crypto.hpp"
#include "common/encoding.hpp"
#include "nats/nats.hpp"

#include <spdlog/spdlog.h>

#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>

namespace iothub::cluster {
namespace {

class nats_bus final : public bus {
  public:
    nats_bus(nats::nats_ptr<natsConnection> nc, std::string prefix)
        : nc_(std::move(nc)), prefix_(std::move(prefix)), node_(hex_encode(random_bytes(8))) {}

    ~nats_bus() override {
        {
            std::lock_guard lock(mutex_);
            stopping_ = true;
        }
        cv_.notify_all();
        if (sweeper_.joinable()) sweeper_.join();
        for (auto& sub : subs_)
            if (natsSubscription_Drain(sub.get()) == NATS_OK)
                (void)natsSubscription_WaitForDrainCompletion(sub.get(), 2000);
        subs_.clear();
        std::map<std::uint64_t, waiting> left;
        {
            std::lock_guard lock(mutex_);
            left.swap(waiting_);
        }
        for (auto& [id, w] : left)
            w.reply(error(errc::service_unavailable, "The hub node is stopping."));
    }

    const std::string& node() const override { return node_; }

    void broadcast(std::string_view topic, std::string payload) override {
        const auto subject = prefix_ + ".bus.all." + std::string(topic);
        if (auto st = natsConnection_Publish(nc_.get(), subject.c_str(), payload.data(),
                                             static_cast<int>(payload.size()));
            st != NATS_OK)
            spdlog::warn("cluster: cannot broadcast {}: {}", topic, natsStatus_GetText(st));
    }

    void request(std::string_view node, std::string_view topic, std::string payload,
                 std::chrono::milliseconds timeout,
                 std::function<void(result<std::string>)> reply) override {
        std::uint64_t id = 0;
        {
            std::lock_guard lock(mutex_);
            id = next_++;
            waiting_.emplace(id, waiting{std::chrono::steady_clock::now() + timeout, reply});
        }
        const auto subject = prefix_ + ".bus.node." + std::string(node) + "." + std::string(topic);
        const auto inbox = inbox_ + "." + std::to_string(id);
        auto st = natsConnection_PublishRequest(nc_.get(), subject.c_str(), inbox.c_str(),
                                                payload.data(), static_cast<int>(payload.size()));
        if (st == NATS_OK) return;
        if (auto w = take(id)) w->reply(nats::nats_error("Reaching another hub node", st));
    }

    void on(std::string topic, handler h) override { handlers_[std::move(topic)] = std::move(h); }

    result<void> start() override {
        inbox_ = prefix_ + ".bus.reply." + node_;
        for (auto& [topic, h] : handlers_) {
            for (auto subject :
                 {prefix_ + ".bus.all." + topic, prefix_ + ".bus.node." + node_ + "." + topic}) {
                natsSubscription* sub = nullptr;
                if (auto st = natsConnection_Subscribe(&sub, nc_.get(), subject.c_str(),
                                                       &nats_bus::on_message, &h);
                    st != NATS_OK)
                    return nats::nats_error("Subscribing to " + subject, st);
                natsSubscription_SetPendingLimits(sub, -1, -1);
                subs_.emplace_back(sub);
            }
        }
        natsSubscription* sub = nullptr;
        const auto replies = inbox_ + ".*";
        if (auto st = natsConnection_Subscribe(&sub, nc_.get(), replies.c_str(),
                                               &nats_bus::on_reply, this);
            st != NATS_OK)
            return nats::nats_error("Subscribing to " + replies, st);
        subs_.emplace_back(sub);
        if (auto st = natsConnection_FlushTimeout(nc_.get(), 2000); st != NATS_OK)
            return nats::nats_error("Flushing to NATS", st);
        sweeper_ = std::thread([this] { sweep(); });
        return {};
    }

  private:
    struct waiting {
        std::chrono::steady_clock::time_point deadline;
        std::function<void(result<std::string>)> reply;
    };

    static void on_message(natsConnection* nc, natsSubscription*, natsMsg* msg, void* closure) {
        nats::nats_ptr<natsMsg> owned(msg);
        auto& h = *static_cast<handler*>(closure);
        std::string payload(natsMsg_GetData(msg),
                            static_cast<std::size_t>(natsMsg_GetDataLength(msg)));
        const char* reply = natsMsg_GetReply(msg);
        std::function<void(std::string)> respond = [](std::string) {};
        if (reply && *reply)
            respond = [nc, to = std::string(reply)](std::string answer) {
                (void)natsConnection_Publish(nc, to.c_str(), answer.data(),
                                             static_cast<int>(answer.size()));
            };
        try {
            h(std::move(payload), std::move(respond));
        } catch (const std::exception& e) {
            spdlog::error("cluster: a bus handler threw: {}", e.what());
        }
    }

    static void on_reply(natsConnection*, natsSubscription*, natsMsg* msg, void* closure) {
        nats::nats_ptr<natsMsg> owned(msg);
        auto& self = *static_cast<nats_bus*>(closure);
        std::string_view subject = natsMsg_GetSubject(msg);
        auto dot = subject.rfind('.');
        std::uint64_t id = 0;
        for (char c : subject.substr(dot + 1)) id = id * 10 + static_cast<std::uint64_t>(c - '0');
        if (auto w = self.take(id))
            w->reply(std::string(natsMsg_GetData(msg),
                                 static_cast<std::size_t>(natsMsg_GetDataLength(msg))));
    }

    std::optional<waiting> take(std::uint64_t id) {
        std::lock_guard lock(mutex_);
        auto it = waiting_.find(id);
        if (it == waiting_.end()) return std::nullopt;
        auto w = std::move(it->second);
        waiting_.erase(it);
        return w;
    }

    // Requests whose node never answered (it died, or NATS lost the message) end unavailable.
    void sweep() {
        std::unique_lock lock(mutex_);
        while (!cv_.wait_for(lock, std::chrono::milliseconds(100), [&] { return stopping_; })) {
            const auto now = std::chrono::steady_clock::now();
            std::vector<waiting> late;
            for (auto it = waiting_.begin(); it != waiting_.end();) {
                if (it->second.deadline <= now) {
                    late.push_back(std::move(it->second));
                    it = waiting_.erase(it);
                } else {
                    ++it;
                }
            }
            lock.unlock();
            for (auto& w : late)
                w.reply(error(errc::service_unavailable,
                              "The hub node holding the connection did not answer."));
            lock.lock();
        }
    }

    nats::nats_ptr<natsConnection> nc_;
    std::string prefix_, node_, inbox_;
    std::map<std::string, handler> handlers_;
    std::vector<nats::nats_ptr<natsSubscription>> subs_;
    std::mutex mutex_;
    std::condition_variable cv_;
    bool stopping_ = false;
    std::uint64_t next_ = 1;
    std::map<std::uint64_t, waiting> waiting_;
    std::thread sweeper_;
};

}  // namespace

result<std::unique_ptr<bus>> connect_bus(const nats::connection_settings& settings,
                                         const std::string& prefix) {
    auto named = settings;
    named.name += " (bus)";
    auto nc = nats::connect(named);
    if (!nc) return nc.error();
    return std::unique_ptr<bus>(std::make_unique<nats_bus>(std::move(*nc), prefix));
}

}  // namespace iothub::cluster
