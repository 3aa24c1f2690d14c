// The JetStream engine's event logs: one stream per partition, followed from its tail by every
// node (see detail/jetstream.hpp).
#include "common/thread_role.hpp"
#include "storage/detail/event_codec.hpp"
#include "storage/detail/jetstream.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>

namespace iothub::storage::detail {
namespace {

sys_time time_from_ns(std::int64_t ns) {
    return sys_time(std::chrono::nanoseconds(ns));
}

// A partition stream's message as the event it holds; nullopt for a status message. `pending`
// gets how many messages the consumer has yet to deliver.
std::optional<stored_event> event_of(natsMsg* msg, std::uint64_t* pending = nullptr) {
    jsMsgMetaData* meta_raw = nullptr;
    if (natsMsg_GetMetaData(&meta_raw, msg) != NATS_OK) return std::nullopt;
    nats_ptr<jsMsgMetaData> meta(meta_raw);
    stored_event e;
    e.sequence_number = meta->Sequence.Stream - 1;
    e.enqueued_time = time_from_ns(meta->Timestamp);
    if (pending) *pending = meta->NumPending;
    if (!decode_record(std::string_view(natsMsg_GetData(msg),
                                        static_cast<std::size_t>(natsMsg_GetDataLength(msg))),
                       e.record))
        spdlog::error("jetstream: event {} of stream {} is malformed", e.sequence_number,
                      meta->Stream ? meta->Stream : "");
    return e;
}

error unavailable(std::string_view what) {
    return error(errc::service_unavailable,
                 "The storage cluster is unavailable: " + std::string(what));
}

}  // namespace

jetstream_event_log::jetstream_event_log(jetstream_link& link, jetstream_kv& kv, std::string name,
                                         const event_log_settings& settings)
    : event_log_core(settings.partitions),
      link_(link),
      kv_(kv),
      name_(std::move(name)),
      settings_(settings) {
    const auto token = stream_token(name_);
    for (int p = 0; p < settings.partitions; ++p) {
        auto part = std::make_unique<partition_state>();
        part->owner = this;
        part->index = p;
        part->stream = link.settings.prefix + "_" + token + "_" + std::to_string(p);
        part->subject = link.settings.prefix + ".log." + token + "." + std::to_string(p);
        parts_.push_back(std::move(part));
    }
    worker_ = std::thread([this] {
        std::unique_lock lock(work_mutex_);
        for (;;) {
            work_cv_.wait(lock, [&] { return stopping_ || !work_.empty(); });
            if (work_.empty()) return;
            auto job = std::move(work_.front());
            work_.pop_front();
            lock.unlock();
            job();
            lock.lock();
        }
    });
}

jetstream_event_log::~jetstream_event_log() {
    {
        std::lock_guard lock(work_mutex_);
        stopping_ = true;
    }
    work_cv_.notify_all();
    worker_.join();
    for (auto& part : parts_) {
        if (part->tail) part->retired.push_back(std::move(part->tail));
        // Draining returns once no callback of the subscription runs any more.
        for (auto& sub : part->retired)
            if (natsSubscription_Drain(sub.get()) == NATS_OK)
                (void)natsSubscription_WaitForDrainCompletion(sub.get(), 2000);
        part->retired.clear();
    }
    if (async_js_) {
        jsPubOptions po;
        jsPubOptions_Init(&po);
        po.MaxWait = 2000;
        (void)js_PublishAsyncComplete(async_js_.get(), &po);
    }
    std::vector<std::shared_ptr<pending>> left;
    {
        std::lock_guard lock(inflight_mutex_);
        for (auto& [msg, entry] : inflight_)
            if (!entry.first->finished) {
                entry.first->finished = true;
                left.push_back(entry.first);
            }
        inflight_.clear();
    }
    {
        std::lock_guard lock(cache_mutex_);
        for (auto& part : parts_) {
            for (auto& [last, p] : part->waiting) left.push_back(p);
            part->waiting.clear();
        }
    }
    for (auto& p : left) tell(p->done, unavailable("the hub is stopping."));
    async_js_.reset();
}

result<void> jetstream_event_log::start() {
    jsOptions jo = link_.options();
    jo.PublishAsync.AckHandler = &jetstream_event_log::on_ack;
    jo.PublishAsync.AckHandlerClosure = this;
    jo.PublishAsync.MaxPending = 1 << 16;
    jo.PublishAsync.StallWait = link_.settings.timeout.count();
    jsCtx* js = nullptr;
    if (auto st = natsConnection_JetStream(&js, link_.nc.get(), &jo); st != NATS_OK)
        return nats_error("JetStream", st);
    async_js_.reset(js);

    for (auto& part : parts_) {
        const char* subjects[] = {part->subject.c_str()};
        jsStreamConfig cfg;
        jsStreamConfig_Init(&cfg);
        cfg.Name = part->stream.c_str();
        cfg.Subjects = subjects;
        cfg.SubjectsLen = 1;
        cfg.Storage = js_FileStorage;
        cfg.Replicas = link_.settings.replicas;
        cfg.Retention = js_LimitsPolicy;
        cfg.Discard = js_DiscardOld;
        cfg.MaxAge =
            std::chrono::duration_cast<std::chrono::nanoseconds>(settings_.retention.max_age)
                .count();
        cfg.MaxBytes = settings_.retention.max_bytes_per_partition
                           ? static_cast<std::int64_t>(settings_.retention.max_bytes_per_partition)
                           : -1;
        cfg.AllowDirect = true;
        // How long copies of an outbox entry are recognised as repeats.
        cfg.Duplicates = std::chrono::duration_cast<std::chrono::nanoseconds>(
                             std::min<std::chrono::seconds>(std::chrono::minutes(10),
                                                            settings_.retention.max_age))
                             .count();
        if (auto ok = link_.ensure_stream(cfg); !ok) return ok.error();
        auto info = link_.stream_info(part->stream);
        if (!info) return info.error();
        const auto& state = (*info)->State;
        partition_info pi;
        pi.next_sequence_number = state.LastSeq;
        pi.begin_sequence_number = state.Msgs == 0 ? state.LastSeq : state.FirstSeq - 1;
        pi.last_enqueued_time = time_from_ns(state.LastTime);
        load(part->index, pi);
        {
            std::lock_guard lock(cache_mutex_);
            part->delivered = state.LastSeq;
        }
        if (auto ok = subscribe_tail(part->index, state.LastSeq + 1); !ok) return ok.error();
    }
    return {};
}

result<void> jetstream_event_log::subscribe_tail(int partition, std::uint64_t from) {
    auto& part = *parts_[static_cast<std::size_t>(partition)];
    jsOptions jo = link_.options();
    jsSubOptions so = ordered_from(part.stream, from);
    natsSubscription* sub = nullptr;
    jsErrCode code = static_cast<jsErrCode>(0);
    if (auto st = js_Subscribe(&sub, link_.js.get(), part.subject.c_str(),
                               &jetstream_event_log::on_tail, &part, &jo, &so, &code);
        st != NATS_OK)
        return nats_error("Following " + part.stream, st, code);
    natsSubscription_SetPendingLimits(sub, -1, -1);
    if (part.tail) {
        natsSubscription_Unsubscribe(part.tail.get());
        part.retired.push_back(std::move(part.tail));
    }
    part.tail.reset(sub);
    return {};
}

std::vector<std::string> jetstream_event_log::stream_names() const {
    std::vector<std::string> out;
    for (const auto& part : parts_) out.push_back(part->stream);
    return out;
}

void jetstream_event_log::check_tails() {
    for (auto& part : parts_) {
        auto info = link_.stream_info(part->stream);
        if (!info) continue;
        std::uint64_t delivered = 0;
        {
            std::lock_guard lock(cache_mutex_);
            delivered = part->delivered;
        }
        const bool stalled = (*info)->State.LastSeq > delivered && delivered == part->checked;
        part->checked = delivered;
        if (!stalled) continue;
        spdlog::warn("jetstream: following {} again from {}", part->stream, delivered + 1);
        if (auto ok = subscribe_tail(part->index, delivered + 1); !ok)
            spdlog::warn("jetstream: cannot follow {}: {}", part->stream, ok.error().message());
    }
}

void jetstream_event_log::on_tail(natsConnection*, natsSubscription*, natsMsg* msg, void* ptr) {
    nats_ptr<natsMsg> owned(msg);
    auto& part = *static_cast<partition_state*>(ptr);
    auto& self = *part.owner;
    auto decoded = event_of(msg);
    if (!decoded) return;
    auto& e = *decoded;
    const auto time = e.enqueued_time;
    std::vector<std::shared_ptr<pending>> ready;
    {
        std::lock_guard lock(self.cache_mutex_);
        // Dense while retained: anything but the next one is a repeat (after following again)
        // or a skip, which check_tails() repairs.
        if (e.sequence_number != part.delivered) return;
        part.delivered = e.sequence_number + 1;
        part.cache_bytes += event_size(e.record) + 64;
        part.cache.push_back(std::move(e));
        while (part.cache_bytes > self.link_.settings.tail_cache_bytes && part.cache.size() > 1) {
            part.cache_bytes -= event_size(part.cache.front().record) + 64;
            part.cache.pop_front();
        }
        auto end = part.waiting.upper_bound(part.delivered - 1);
        for (auto it = part.waiting.begin(); it != end; ++it) ready.push_back(it->second);
        part.waiting.erase(part.waiting.begin(), end);
    }
    self.published(part.index, part.delivered, time);
    for (auto& p : ready) tell(p->done, std::move(p->sequences));
}

void jetstream_event_log::on_ack(jsCtx*, natsMsg* msg, jsPubAck* ack, jsPubAckErr* failure,
                                 void* ptr) {
    auto& self = *static_cast<jetstream_event_log*>(ptr);
    std::shared_ptr<pending> done_now;
    {
        std::lock_guard lock(self.inflight_mutex_);
        auto it = self.inflight_.find(msg);
        if (it != self.inflight_.end()) {
            auto [p, index] = std::move(it->second);
            self.inflight_.erase(it);
            if (ack)
                p->sequences[index] = ack->Sequence - 1;
            else if (!p->failure)
                p->failure = failure ? nats_error("Appending to " + self.name_, failure->Err,
                                                  failure->ErrCode)
                                     : unavailable("an append was not acknowledged.");
            if (--p->outstanding == 0 && !p->finished) {
                p->finished = true;
                done_now = std::move(p);
            }
        }
    }
    natsMsg_Destroy(msg);
    if (done_now) self.settle(done_now);
}

void jetstream_event_log::settle(const std::shared_ptr<pending>& p) {
    if (p->failure) return tell(p->done, *p->failure);
    const auto last = *std::max_element(p->sequences.begin(), p->sequences.end());
    {
        std::lock_guard lock(cache_mutex_);
        auto& part = *parts_[static_cast<std::size_t>(p->partition)];
        if (part.delivered <= last) {
            part.waiting.emplace(last, p);
            return;
        }
    }
    tell(p->done, std::move(p->sequences));
}

void jetstream_event_log::append(int partition, std::vector<event_record> events,
                                 append_callback done) {
    if (partition < 0 || partition >= partition_count())
        return done(error(errc::argument_invalid, "No such partition."));
    std::vector<std::string> payloads(events.size());
    for (std::size_t i = 0; i < events.size(); ++i) encode_record(payloads[i], events[i]);
    publish(partition, payloads, {}, std::move(done));
}

void jetstream_event_log::forward(const outbox_entry& entry, append_callback done) {
    if (entry.partition < 0 || entry.partition >= partition_count())
        return done(error(errc::argument_invalid, "No such partition."));
    publish(entry.partition, entry.events, "o" + std::to_string(entry.batch) + ".",
            std::move(done));
}

void jetstream_event_log::publish(int partition, const std::vector<std::string>& payloads,
                                  const std::string& id_prefix, append_callback done) {
    if (payloads.empty()) return done(std::vector<std::uint64_t>{});
    auto p = std::make_shared<pending>();
    p->partition = partition;
    p->sequences.resize(payloads.size());
    p->outstanding = payloads.size();
    p->deadline = std::chrono::steady_clock::now() + link_.settings.timeout;
    p->done = std::move(done);
    auto& part = *parts_[static_cast<std::size_t>(partition)];
    std::lock_guard order(part.publish_order);
    for (std::size_t i = 0; i < payloads.size(); ++i) {
        natsMsg* msg = nullptr;
        auto st = natsMsg_Create(&msg, part.subject.c_str(), nullptr, payloads[i].data(),
                                 static_cast<int>(payloads[i].size()));
        if (st == NATS_OK && !id_prefix.empty())
            st = natsMsgHeader_Set(msg, "Nats-Msg-Id", (id_prefix + std::to_string(i)).c_str());
        if (st == NATS_OK) {
            {
                std::lock_guard lock(inflight_mutex_);
                inflight_.emplace(msg, std::make_pair(p, i));
            }
            st = js_PublishMsgAsync(async_js_.get(), &msg, nullptr);
        }
        if (st == NATS_OK) continue;
        // Not sent: this event and every later one fail (earlier ones may already be stored).
        bool finish = false;
        {
            std::lock_guard lock(inflight_mutex_);
            if (msg) inflight_.erase(msg);
            if (!p->failure) p->failure = nats_error("Appending to " + name_, st);
            p->outstanding -= payloads.size() - i;
            if (p->outstanding == 0 && !p->finished) finish = p->finished = true;
        }
        natsMsg_Destroy(msg);
        if (finish) settle(p);
        return;
    }
}

void jetstream_event_log::append_with(int partition, std::vector<event_record> events,
                                      std::vector<kv_write> writes, append_with_callback done) {
    if (partition < 0 || partition >= partition_count())
        return done(error(errc::argument_invalid, "No such partition."));
    // The writes and the events commit together in one state batch (the events into the
    // outbox); the events are then copied to the stream and the outbox entry confirmed.
    auto job = [this, partition, events = std::move(events), writes = std::move(writes),
                done = std::move(done)]() mutable {
        outbox_entry entry;
        entry.log = name_;
        entry.partition = partition;
        entry.events.resize(events.size());
        for (std::size_t i = 0; i < events.size(); ++i) encode_record(entry.events[i], events[i]);
        auto committed = kv_.apply_all(writes, entry);
        if (!committed) return done(committed.error());
        entry.batch = committed->first;
        forward(entry, [this, batch = entry.batch, versions = std::move(committed->second),
                        done = std::move(done)](result<std::vector<std::uint64_t>> r) mutable {
            // Committed either way: what did not reach the stream now is copied again later.
            if (!r) return done(r.error());
            kv_.confirm(batch);
            done(appended{std::move(*r), std::move(versions)});
        });
    };
    {
        std::lock_guard lock(work_mutex_);
        work_.push_back(std::move(job));
    }
    work_cv_.notify_one();
}

void jetstream_event_log::expire(std::chrono::steady_clock::time_point now) {
    std::vector<std::shared_ptr<pending>> overdue;
    {
        std::lock_guard lock(inflight_mutex_);
        for (auto it = inflight_.begin(); it != inflight_.end();) {
            auto& p = it->second.first;
            if (p->deadline < now) {
                if (!p->finished) {
                    p->finished = true;
                    if (!p->failure)
                        p->failure = unavailable("an append was not acknowledged in time.");
                    overdue.push_back(p);
                }
                it = inflight_.erase(it);
            } else {
                ++it;
            }
        }
    }
    for (auto& p : overdue) settle(p);
}

result<std::vector<stored_event>> jetstream_event_log::read(int partition,
                                                            std::uint64_t from_sequence,
                                                            std::size_t max_events) {
    IOTHUB_ASSERT_MAY_BLOCK();
    if (partition < 0 || partition >= partition_count())
        return error(errc::argument_invalid, "No such partition.");
    auto& part = *parts_[static_cast<std::size_t>(partition)];
    from_sequence = std::max(from_sequence, info(partition).begin_sequence_number);
    std::uint64_t delivered = 0;
    {
        std::lock_guard lock(cache_mutex_);
        delivered = part.delivered;
        if (!part.cache.empty() && from_sequence >= part.cache.front().sequence_number) {
            std::vector<stored_event> out;
            auto index = from_sequence - part.cache.front().sequence_number;
            for (auto i = index; i < part.cache.size() && out.size() < max_events; ++i)
                out.push_back(part.cache[i]);
            return out;
        }
    }
    if (from_sequence >= delivered || max_events == 0) return std::vector<stored_event>{};
    return fetch(
        partition, from_sequence,
        static_cast<std::size_t>(std::min<std::uint64_t>(max_events, delivered - from_sequence)));
}

result<std::vector<stored_event>> jetstream_event_log::fetch(int partition, std::uint64_t from,
                                                             std::size_t max) {
    auto& part = *parts_[static_cast<std::size_t>(partition)];
    jsOptions jo = link_.options();
    jsSubOptions so = ordered_from(part.stream, from + 1);
    natsSubscription* raw = nullptr;
    jsErrCode code = static_cast<jsErrCode>(0);
    if (auto st = js_SubscribeSync(&raw, link_.js.get(), part.subject.c_str(), &jo, &so, &code);
        st != NATS_OK)
        return nats_error("Reading " + part.stream, st, code);
    nats_ptr<natsSubscription> sub(raw);
    natsSubscription_SetPendingLimits(raw, -1, -1);
    std::vector<stored_event> out;
    while (out.size() < max) {
        natsMsg* m = nullptr;
        auto st = natsSubscription_NextMsg(
            &m, raw, static_cast<std::int64_t>(link_.settings.timeout.count()));
        if (st == NATS_TIMEOUT) break;  // retention removed the rest, or the stream is slow
        if (st != NATS_OK) {
            natsSubscription_Unsubscribe(raw);
            return nats_error("Reading " + part.stream, st);
        }
        nats_ptr<natsMsg> msg(m);
        std::uint64_t pending = 0;
        auto e = event_of(m, &pending);
        if (!e) continue;
        const bool last = pending == 0;
        out.push_back(std::move(*e));
        if (last) break;
    }
    natsSubscription_Unsubscribe(raw);
    return out;
}

result<sys_time> jetstream_event_log::enqueued_time_of(int partition, std::uint64_t sequence) {
    {
        std::lock_guard lock(cache_mutex_);
        auto& part = *parts_[static_cast<std::size_t>(partition)];
        if (!part.cache.empty() && sequence >= part.cache.front().sequence_number &&
            sequence < part.delivered)
            return part.cache[sequence - part.cache.front().sequence_number].enqueued_time;
    }
    auto one = fetch(partition, sequence, 1);
    if (!one) return one.error();
    if (one->empty()) return error(errc::not_found, "No such event.");
    return one->front().enqueued_time;
}

void jetstream_event_log::enforce_retention(sys_time) {
    // The streams apply their own limits (once for the cluster); this learns where they start.
    for (auto& part : parts_) {
        auto info = link_.stream_info(part->stream);
        if (!info) continue;
        const auto& state = (*info)->State;
        if (state.Msgs == 0 && state.LastSeq == 0) continue;
        trimmed(part->index, state.Msgs == 0 ? state.LastSeq : state.FirstSeq - 1);
    }
}

result<void> jetstream_event_log::purge() {
    for (auto& part : parts_) {
        jsErrCode code = static_cast<jsErrCode>(0);
        if (auto st = js_PurgeStream(link_.js.get(), part->stream.c_str(), nullptr, &code);
            st != NATS_OK)
            return nats_error("Purging " + part->stream, st, code);
        std::lock_guard lock(cache_mutex_);
        part->cache.clear();
        part->cache_bytes = 0;
    }
    enforce_retention(sys_time{});
    return {};
}

}  // namespace iothub::storage::detail
