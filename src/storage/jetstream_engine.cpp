// The JetStream engine: a hub's whole state in a NATS JetStream cluster (see
// detail/jetstream.hpp for how the kv store and the event logs map onto streams).
#include "storage/detail/jetstream.hpp"

#include <spdlog/spdlog.h>

#include <thread>

namespace iothub::storage {
namespace {

class jetstream_engine final : public engine {
  public:
    static result<std::unique_ptr<engine>> open(const jetstream_settings& s) {
        if (s.replicas < 1 || s.replicas > 5)
            return error(errc::argument_invalid, "JetStream replicas must be 1 to 5.");
        auto link = detail::jetstream_link::connect(s);
        if (!link) return link.error();
        std::unique_ptr<jetstream_engine> e(new jetstream_engine(std::move(*link)));
        // Nodes and NATS servers often start together: while JetStream elects its leaders the
        // node waits (up to a minute) rather than failing.
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(1);
        for (auto delay = std::chrono::milliseconds(100);;
             delay = std::min(delay * 2, std::chrono::milliseconds(2000))) {
            auto ok = e->kv_->start();
            if (ok) break;
            if (ok.error().code() != errc::service_unavailable ||
                std::chrono::steady_clock::now() + delay > deadline)
                return ok.error();
            spdlog::info("jetstream: waiting for the cluster ({})", ok.error().message());
            std::this_thread::sleep_for(delay);
        }
        e->events_ =
            std::make_unique<detail::jetstream_event_log>(*e->link_, *e->kv_, "events", s.events);
        if (auto ok = e->events_->start(); !ok) return ok.error();
        e->hub_ =
            std::make_unique<detail::jetstream_event_log>(*e->link_, *e->kv_, "hub", s.events);
        if (auto ok = e->hub_->start(); !ok) return ok.error();
        e->blobs_ = std::make_unique<detail::jetstream_blobs>(*e->link_);
        if (auto ok = e->blobs_->start(); !ok) return ok.error();
        e->housekeeping_ = std::thread([raw = e.get()] { raw->housekeep(); });
        e->watchdog_ = std::thread([raw = e.get()] { raw->watch_followers(); });
        e->outbox_keeper_ = std::thread([raw = e.get()] { raw->keep_outbox(); });
        return std::unique_ptr<engine>(std::move(e));
    }

    ~jetstream_engine() override {
        {
            std::lock_guard lock(stop_mutex_);
            stopping_ = true;
        }
        stop_cv_.notify_all();
        if (housekeeping_.joinable()) housekeeping_.join();
        if (watchdog_.joinable()) watchdog_.join();
        if (outbox_keeper_.joinable()) outbox_keeper_.join();
        {
            std::lock_guard lock(logs_mutex_);
            logs_.clear();
        }
        hub_.reset();
        events_.reset();
        blobs_.reset();
        kv_.reset();
        link_.reset();
    }

    kv_store& kv() override { return *kv_; }
    blob_store* shared_blobs() override { return blobs_.get(); }
    event_log& events() override { return *events_; }
    event_log& hub_events() override { return *hub_; }

    result<event_log*> log(std::string_view name, bool) override {
        // Every JetStream write is replicated before it is acknowledged: no cheaper kind exists.
        if (auto ok = check_log_name(name); !ok) return ok.error();
        std::lock_guard lock(logs_mutex_);
        if (auto it = logs_.find(name); it != logs_.end()) return it->second.get();
        auto log = std::make_unique<detail::jetstream_event_log>(*link_, *kv_, std::string(name),
                                                                 link_->settings.events);
        if (auto ok = log->start(); !ok) return ok.error();
        auto* raw = log.get();
        logs_.emplace(std::string(name), std::move(log));
        return raw;
    }

    result<void> drop_log(std::string_view name) override {
        // Opened first, so the streams of a log this node never used are emptied too.
        auto opened = log(name, true);
        if (!opened) return opened.error();
        std::unique_ptr<detail::jetstream_event_log> dropped;
        {
            std::lock_guard lock(logs_mutex_);
            auto it = logs_.find(name);
            if (it == logs_.end()) return {};
            dropped = std::move(it->second);
            logs_.erase(it);
        }
        return dropped->purge();
    }

    void enforce_retention(sys_time now) override {
        events_->enforce_retention(now);
        hub_->enforce_retention(now);
        std::lock_guard lock(logs_mutex_);
        for (auto& [name, log] : logs_) log->enforce_retention(now);
    }

    std::string describe() override {
        std::vector<std::string> streams{link_->settings.prefix + "_STATE",
                                         link_->settings.prefix + "_BLOBS"};
        auto add = [&](detail::jetstream_event_log& log) {
            for (auto& name : log.stream_names()) streams.push_back(name);
        };
        add(*events_);
        add(*hub_);
        {
            std::lock_guard lock(logs_mutex_);
            for (auto& [name, log] : logs_) add(*log);
        }
        std::string out = "[";
        for (const auto& name : streams) {
            auto info = link_->stream_info(name);
            if (out.size() > 1) out += ",";
            out += "{\"stream\":\"" + name + "\"";
            if (!info) {
                out += ",\"error\":\"unavailable\"}";
                continue;
            }
            const auto& st = (*info)->State;
            out += ",\"messages\":" + std::to_string(st.Msgs) +
                   ",\"bytes\":" + std::to_string(st.Bytes) +
                   ",\"firstSequence\":" + std::to_string(st.FirstSeq) +
                   ",\"lastSequence\":" + std::to_string(st.LastSeq);
            if (const auto* c = (*info)->Cluster) {
                out += ",\"leader\":\"" + std::string(c->Leader ? c->Leader : "") + "\"";
                out += ",\"replicas\":[";
                for (int i = 0; i < c->ReplicasLen; ++i) {
                    const auto* r = c->Replicas[i];
                    out += std::string(i ? "," : "") + "{\"name\":\"" + (r->Name ? r->Name : "") +
                           "\",\"current\":" + (r->Current ? "true" : "false") +
                           ",\"lag\":" + std::to_string(r->Lag) + "}";
                }
                out += "]";
            }
            out += "}";
        }
        return out + "]";
    }

    result<void> flush() override {
        if (auto st = natsConnection_FlushTimeout(link_->nc.get(), 2000); st != NATS_OK)
            return nats::nats_error("Flushing to NATS", st);
        return {};
    }

  private:
    explicit jetstream_engine(std::unique_ptr<detail::jetstream_link> link)
        : link_(std::move(link)), kv_(std::make_unique<detail::jetstream_kv>(*link_)) {}

    // Fails appends the cluster has not acknowledged in time, so a device waiting for its PUBACK
    // hears "server busy" instead of nothing while NATS has no quorum. Never waits on storage.
    void housekeep() {
        std::unique_lock lock(stop_mutex_);
        while (
            !stop_cv_.wait_for(lock, std::chrono::milliseconds(250), [&] { return stopping_; })) {
            const auto now = std::chrono::steady_clock::now();
            events_->expire(now);
            hub_->expire(now);
            std::lock_guard logs(logs_mutex_);
            for (auto& [name, log] : logs_) log->expire(now);
        }
    }

    // The outbox's upkeep, a few times a second: confirms the entries whose events are in their
    // logs, and copies again those whose writer went quiet (it died between commit and copy).
    void keep_outbox() {
        std::unique_lock lock(stop_mutex_);
        while (
            !stop_cv_.wait_for(lock, std::chrono::milliseconds(250), [&] { return stopping_; })) {
            lock.unlock();
            kv_->flush_confirmations();
            for (auto& entry : kv_->overdue(std::chrono::seconds(5))) recover(entry);
            lock.lock();
        }
    }

    // Every two seconds, on a thread of its own (the others may wait on the very follower that
    // stalled): a follower of the state or of a partition that stopped while its stream moved
    // on follows again (its consumer was on a server that went away).
    void watch_followers() {
        std::unique_lock lock(stop_mutex_);
        while (!stop_cv_.wait_for(lock, std::chrono::seconds(2), [&] { return stopping_; })) {
            lock.unlock();
            kv_->check_follower();
            events_->check_tails();
            hub_->check_tails();
            {
                std::lock_guard logs(logs_mutex_);
                for (auto& [name, log] : logs_) log->check_tails();
            }
            lock.lock();
        }
    }

    void recover(const detail::outbox_entry& entry) {
        detail::jetstream_event_log* target = nullptr;
        if (entry.log == "events") {
            target = events_.get();
        } else if (entry.log == "hub") {
            target = hub_.get();
        } else if (auto opened = log(entry.log, true); opened) {
            target = static_cast<detail::jetstream_event_log*>(*opened);
        } else {
            spdlog::warn("jetstream: outbox entry {} names log {}: {}", entry.batch, entry.log,
                         opened.error().message());
            return;
        }
        spdlog::info("jetstream: copying outbox entry {} ({} events for {}) again", entry.batch,
                     entry.events.size(), entry.log);
        target->forward(entry, [kv = kv_.get(), batch = entry.batch](auto r) {
            if (r) kv->confirm(batch);
        });
    }

    std::unique_ptr<detail::jetstream_link> link_;
    std::unique_ptr<detail::jetstream_kv> kv_;
    std::unique_ptr<detail::jetstream_blobs> blobs_;
    std::unique_ptr<detail::jetstream_event_log> events_, hub_;
    std::mutex logs_mutex_;
    std::map<std::string, std::unique_ptr<detail::jetstream_event_log>, std::less<>> logs_;
    std::mutex stop_mutex_;
    std::condition_variable stop_cv_;
    bool stopping_ = false;
    std::thread housekeeping_;
    std::thread watchdog_;
    std::thread outbox_keeper_;
};

}  // namespace

result<std::unique_ptr<engine>> open_jetstream(const jetstream_settings& settings) {
    return jetstream_engine::open(settings);
}

}  // namespace iothub::storage
