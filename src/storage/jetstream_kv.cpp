// The JetStream engine's connection and its kv store: a state machine replicated through one
// stream (see detail/jetstream.hpp).
#include "common/crypto.hpp"
#include "common/encoding.hpp"
#include "common/thread_role.hpp"
#include "storage/detail/event_codec.hpp"
#include "storage/detail/jetstream.hpp"
#include "storage/detail/ordered_scan.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <thread>

namespace iothub::storage::detail {

std::string stream_token(std::string_view name) {
    static constexpr char hex[] = "0123456789ABCDEF";
    std::string out;
    for (unsigned char c : name) {
        if (std::isalnum(c) || c == '-') {
            out += static_cast<char>(c);
        } else {
            out += '_';
            out += hex[c >> 4];
            out += hex[c & 15];
        }
    }
    return out;
}

jsSubOptions ordered_from(const std::string& stream, std::uint64_t from) {
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = stream.c_str();
    so.Ordered = true;
    so.Config.DeliverPolicy = js_DeliverByStartSequence;
    so.Config.OptStartSeq = from;
    return so;
}

result<std::unique_ptr<jetstream_link>> jetstream_link::connect(const jetstream_settings& s) {
    if (s.prefix.empty() || !std::all_of(s.prefix.begin(), s.prefix.end(), [](unsigned char c) {
            return std::isalnum(c) || c == '-' || c == '_';
        }))
        return error(errc::argument_invalid,
                     "The JetStream prefix takes letters, digits, '-' and '_'.");
    auto link = std::make_unique<jetstream_link>();
    link->settings = s;
    link->node = hex_encode(random_bytes(8));
    auto nc = nats::connect(s.connection);
    if (!nc) return nc.error();
    link->nc = std::move(*nc);
    jsOptions jo = link->options();
    jsCtx* js = nullptr;
    if (auto st = natsConnection_JetStream(&js, link->nc.get(), &jo); st != NATS_OK)
        return nats_error("JetStream", st);
    link->js.reset(js);
    return link;
}

void retry_pause(int attempt) {
    // 50, 100, 200, 400 ms, then every 500 ms: an election takes one to a few seconds.
    std::this_thread::sleep_for(
        std::chrono::milliseconds(std::min(50 << std::min(attempt, 4), 500)));
}

jsOptions jetstream_link::options() const {
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = settings.timeout.count();
    return jo;
}

result<void> jetstream_link::ensure_stream(jsStreamConfig& config) {
    // A replicated stream needs its group elected before it answers: longer than a write.
    jsOptions jo = options();
    jo.Wait = std::max<std::int64_t>(jo.Wait, 30000);
    jsErrCode code = static_cast<jsErrCode>(0);
    jsStreamInfo* info = nullptr;
    natsStatus st = js_AddStream(&info, js.get(), &config, &jo, &code);
    if (st == NATS_OK) {
        jsStreamInfo_Destroy(info);
        return {};
    }
    // 10058: the stream exists with another configuration (limits changed in the settings).
    if (code == static_cast<jsErrCode>(10058)) {
        st = js_UpdateStream(&info, js.get(), &config, &jo, &code);
        if (st == NATS_OK) {
            jsStreamInfo_Destroy(info);
            return {};
        }
    }
    return nats_error(std::string("Creating stream ") + config.Name, st, code);
}

result<nats_ptr<jsStreamInfo>> jetstream_link::stream_info(const std::string& stream) {
    jsErrCode code = static_cast<jsErrCode>(0);
    jsStreamInfo* info = nullptr;
    auto st = js_GetStreamInfo(&info, js.get(), stream.c_str(), nullptr, &code);
    if (st != NATS_OK) return nats_error("Stream " + stream, st, code);
    return nats_ptr<jsStreamInfo>(info);
}

// A state batch as every node decodes it.
struct state_batch {
    std::string node;
    bool all_or_nothing = false;
    std::vector<kv_write> writes;
    std::optional<outbox_entry> outbox;
    std::vector<std::uint64_t> confirmations;
};

namespace {

// A batch on the state stream: who wrote it, flags, its writes; then, by the flags, the events it
// puts in the outbox and the outbox entries it confirms.
constexpr char flag_all_or_nothing = 1, flag_outbox = 2, flag_confirmations = 4;

std::string encode_batch(const std::string& node, std::span<const kv_write> writes,
                         bool all_or_nothing, const outbox_entry* outbox,
                         std::span<const std::uint64_t> confirmations = {}) {
    std::string out;
    put_string(out, node);
    out +=
        static_cast<char>((all_or_nothing ? flag_all_or_nothing : 0) | (outbox ? flag_outbox : 0) |
                          (confirmations.empty() ? 0 : flag_confirmations));
    put_varint(out, writes.size());
    for (const auto& w : writes) {
        out += static_cast<char>(w.operation);
        out += static_cast<char>(w.condition.what());
        put_varint(out, w.condition.expected_version());
        put_string(out, w.key);
        put_string(out, w.operation == kv_write::op::put ? std::string_view(w.value) : "");
    }
    if (outbox) {
        put_string(out, outbox->log);
        put_varint(out, static_cast<std::uint64_t>(outbox->partition));
        put_varint(out, outbox->events.size());
        for (const auto& e : outbox->events) put_string(out, e);
    }
    if (!confirmations.empty()) {
        put_varint(out, confirmations.size());
        for (auto c : confirmations) put_varint(out, c);
    }
    return out;
}

bool decode_batch(std::string_view in, state_batch& out) {
    std::uint64_t n = 0;
    if (!get_string(in, out.node) || in.empty()) return false;
    const char flags = in.front();
    out.all_or_nothing = (flags & flag_all_or_nothing) != 0;
    in.remove_prefix(1);
    if (!get_varint(in, n) || n > in.size()) return false;
    out.writes.resize(n);
    for (auto& w : out.writes) {
        if (in.size() < 2) return false;
        auto op = static_cast<std::uint8_t>(in[0]);
        auto kind = static_cast<std::uint8_t>(in[1]);
        in.remove_prefix(2);
        std::uint64_t expected = 0;
        if (op > 1 || kind > 3 || !get_varint(in, expected) || !get_string(in, w.key) ||
            !get_string(in, w.value))
            return false;
        w.operation = static_cast<kv_write::op>(op);
        switch (static_cast<precondition::kind>(kind)) {
            case precondition::kind::none:
                w.condition = precondition::none();
                break;
            case precondition::kind::absent:
                w.condition = precondition::absent();
                break;
            case precondition::kind::exists:
                w.condition = precondition::exists();
                break;
            case precondition::kind::version:
                w.condition = precondition::version(expected);
                break;
        }
    }
    if (flags & flag_outbox) {
        outbox_entry e;
        std::uint64_t partition = 0, count = 0;
        if (!get_string(in, e.log) || !get_varint(in, partition) || !get_varint(in, count) ||
            count > in.size())
            return false;
        e.partition = static_cast<int>(partition);
        e.events.resize(count);
        for (auto& ev : e.events)
            if (!get_string(in, ev)) return false;
        out.outbox = std::move(e);
    }
    if (flags & flag_confirmations) {
        std::uint64_t count = 0;
        if (!get_varint(in, count) || count > in.size()) return false;
        out.confirmations.resize(count);
        for (auto& c : out.confirmations)
            if (!get_varint(in, c)) return false;
    }
    return true;
}

// Each write in a batch gets its own version: the batch's stream sequence, then its index.
constexpr int index_bits = 20;
constexpr std::size_t max_batch_writes = std::size_t{1} << index_bits;

}  // namespace

jetstream_kv::jetstream_kv(jetstream_link& link)
    : link_(link),
      stream_(link.settings.prefix + "_STATE"),
      subject_(link.settings.prefix + ".state") {}

jetstream_kv::~jetstream_kv() {
    std::lock_guard lock(follow_mutex_);
    if (sub_) retired_.push_back(std::move(sub_));
    for (auto& sub : retired_)
        if (natsSubscription_Drain(sub.get()) == NATS_OK)
            (void)natsSubscription_WaitForDrainCompletion(sub.get(), 2000);
    retired_.clear();
}

result<void> jetstream_kv::start() {
    // The partition count is fixed for the life of a hub: the state stream records it.
    const auto partitions = link_.settings.events.partitions;
    const std::string description = "iothub state; partitions=" + std::to_string(partitions);
    if (auto existing = link_.stream_info(stream_); existing) {
        const char* d = (*existing)->Config ? (*existing)->Config->Description : nullptr;
        std::string_view have = d ? d : "";
        if (auto at = have.find("partitions="); at != std::string_view::npos) {
            auto theirs = have.substr(at + 11);
            if (theirs != std::to_string(partitions))
                return error(errc::argument_invalid,
                             "The event partition count cannot change: the hub in " + stream_ +
                                 " has " + std::string(theirs) + ", not " +
                                 std::to_string(partitions) + ".");
        }
    }
    const char* subjects[] = {subject_.c_str()};
    jsStreamConfig cfg;
    jsStreamConfig_Init(&cfg);
    cfg.Name = stream_.c_str();
    cfg.Description = description.c_str();
    cfg.Subjects = subjects;
    cfg.SubjectsLen = 1;
    cfg.Storage = js_FileStorage;
    cfg.Replicas = link_.settings.replicas;
    cfg.Retention = js_LimitsPolicy;
    if (auto ok = link_.ensure_stream(cfg); !ok) return ok.error();
    auto info = link_.stream_info(stream_);
    if (!info) return info.error();
    const auto last = (*info)->State.LastSeq;

    if (!sub_)
        if (auto ok = follow(1); !ok) return ok.error();
    // Loading the state takes as long as the stream is long; give it time proportionate to that.
    std::unique_lock lock(mutex_);
    const auto budget = std::chrono::seconds(30) + std::chrono::microseconds(100) * last;
    if (!applied_cv_.wait_for(lock, budget, [&] { return applied_ >= last; }))
        return error(errc::service_unavailable,
                     "Loading the state from " + stream_ + " timed out.");
    spdlog::info("jetstream: state loaded from {} ({} batches, {} keys)", stream_, last,
                 data_.size());
    return {};
}

result<void> jetstream_kv::follow(std::uint64_t from) {
    std::lock_guard lock(follow_mutex_);
    jsOptions jo = link_.options();
    jsSubOptions so = ordered_from(stream_, from);
    natsSubscription* sub = nullptr;
    jsErrCode code = static_cast<jsErrCode>(0);
    if (auto st = js_Subscribe(&sub, link_.js.get(), subject_.c_str(), &jetstream_kv::on_message,
                               this, &jo, &so, &code);
        st != NATS_OK)
        return nats_error("Following " + stream_, st, code);
    natsSubscription_SetPendingLimits(sub, -1, -1);
    if (sub_) {
        natsSubscription_Unsubscribe(sub_.get());
        retired_.push_back(std::move(sub_));
    }
    sub_.reset(sub);
    return {};
}

void jetstream_kv::check_follower() {
    auto info = link_.stream_info(stream_);
    if (!info) return;
    std::uint64_t applied = 0;
    {
        std::lock_guard lock(mutex_);
        applied = applied_;
    }
    const bool stalled = (*info)->State.LastSeq > applied && applied == checked_;
    checked_ = applied;
    if (!stalled) return;
    spdlog::warn("jetstream: following {} again from {}", stream_, applied + 1);
    if (auto ok = follow(applied + 1); !ok)
        spdlog::warn("jetstream: cannot follow {}: {}", stream_, ok.error().message());
}

void jetstream_kv::on_message(natsConnection*, natsSubscription*, natsMsg* msg, void* self_ptr) {
    nats_ptr<natsMsg> owned(msg);
    auto* self = static_cast<jetstream_kv*>(self_ptr);
    jsMsgMetaData* meta_raw = nullptr;
    if (natsMsg_GetMetaData(&meta_raw, msg) != NATS_OK) return;  // a status message
    nats_ptr<jsMsgMetaData> meta(meta_raw);
    self->apply_batch(meta->Sequence.Stream,
                      std::string_view(natsMsg_GetData(msg),
                                       static_cast<std::size_t>(natsMsg_GetDataLength(msg))));
}

void jetstream_kv::observe_remote(change_observer observer) {
    std::lock_guard lock(mutex_);
    observer_ = std::move(observer);
}

void jetstream_kv::apply_batch(std::uint64_t sequence, std::string_view payload) {
    state_batch batch;
    const bool valid = decode_batch(payload, batch);
    std::vector<kv_change> changes;
    change_observer observer;
    {
        std::lock_guard lock(mutex_);
        apply_locked(sequence, valid, batch, changes);
        observer = observer_;
    }
    if (observer && !changes.empty()) observer(std::move(changes));
}

void jetstream_kv::apply_locked(std::uint64_t sequence, bool valid, state_batch& batch,
                                std::vector<kv_change>& changes) {
    // The stream's sequences are dense: anything but the next one is a repeat (after following
    // again) or a skip, which check_follower() repairs.
    if (sequence != applied_ + 1) return;
    applied_ = sequence;
    if (!valid) {
        spdlog::error("jetstream: batch {} of {} is malformed; skipped", sequence, stream_);
        applied_cv_.notify_all();
        return;
    }
    outcome results;
    results.reserve(batch.writes.size());
    auto current = [&](const std::string& key) -> std::optional<std::uint64_t> {
        auto it = data_.find(key);
        if (it == data_.end()) return std::nullopt;
        return it->second.version;
    };
    std::optional<error> refused;
    if (batch.all_or_nothing)
        for (const auto& w : batch.writes)
            if (auto ok = w.admissible(current(w.key)); !ok) {
                refused = ok.error();
                break;
            }
    for (std::size_t i = 0; i < batch.writes.size(); ++i) {
        auto& w = batch.writes[i];
        if (refused) {
            results.emplace_back(*refused);
            continue;
        }
        if (auto ok = w.admissible(current(w.key)); !ok) {
            results.emplace_back(ok.error());
            continue;
        }
        const bool remote = observer_ && batch.node != link_.node;
        auto it = data_.find(w.key);
        if (remote) {
            kv_change c;
            c.key = w.key;
            if (it != data_.end()) c.before = it->second;
            if (w.operation == kv_write::op::put)
                c.after = versioned_value{w.value, (sequence << index_bits) | i};
            changes.push_back(std::move(c));
        }
        if (w.operation == kv_write::op::remove) {
            data_.erase(it);
            results.emplace_back(std::uint64_t{0});
        } else {
            const auto version = (sequence << index_bits) | i;
            data_.insert_or_assign(std::move(w.key), versioned_value{std::move(w.value), version});
            results.emplace_back(version);
        }
    }
    for (auto c : batch.confirmations) outbox_.erase(c);
    if (batch.outbox && !refused) {
        batch.outbox->batch = sequence;
        outbox_.emplace(sequence, held{std::move(*batch.outbox), std::chrono::steady_clock::now()});
    }
    if (batch.node == link_.node) {
        mine_.emplace(sequence, std::move(results));
        // Outcomes nobody came for (the writer timed out) do not pile up.
        while (!mine_.empty() && mine_.begin()->first + 100000 < sequence)
            mine_.erase(mine_.begin());
    }
    applied_cv_.notify_all();
}

result<void> jetstream_kv::wait_applied(std::uint64_t sequence) {
    std::unique_lock lock(mutex_);
    if (!applied_cv_.wait_for(lock, link_.settings.timeout, [&] { return applied_ >= sequence; }))
        return error(
            errc::service_unavailable,
            "The storage cluster is unavailable: this node is not receiving " + stream_ + ".");
    return {};
}

// Asked of the stream's leader (a stream's information may come from any replica, even one cut
// off from the others): without a quorum there is no answer, and reads fail rather than return
// what may be stale.
result<std::uint64_t> jetstream_kv::leader_last_sequence() {
    natsMsg* raw = nullptr;
    jsErrCode code = static_cast<jsErrCode>(0);
    jsOptions jo = link_.options();
    auto st = link_.retry_while_electing(code, [&] {
        return js_GetLastMsg(&raw, link_.js.get(), stream_.c_str(), subject_.c_str(), &jo, &code);
    });
    // 10037: no message (nothing written yet).
    if (st == NATS_NOT_FOUND || code == static_cast<jsErrCode>(10037)) return std::uint64_t{0};
    if (st != NATS_OK) return nats_error("Reading " + stream_, st, code);
    nats_ptr<natsMsg> msg(raw);
    return natsMsg_GetSequence(raw);
}

result<void> jetstream_kv::catch_up() {
    std::unique_lock lock(barrier_mutex_);
    const auto ticket = ++barrier_requested_;
    for (;;) {
        if (barrier_done_ >= ticket) {
            if (!barrier_last_) return barrier_last_.error();
            const auto target = *barrier_last_;
            lock.unlock();
            return wait_applied(target);
        }
        if (!barrier_in_flight_) {
            barrier_in_flight_ = true;
            const auto sent = barrier_requested_;
            lock.unlock();
            auto last = leader_last_sequence();
            lock.lock();
            barrier_in_flight_ = false;
            barrier_sent_ = sent;
            barrier_done_ = sent;
            barrier_last_ = std::move(last);
            barrier_cv_.notify_all();
            continue;
        }
        barrier_cv_.wait(lock);
    }
}

result<std::pair<std::uint64_t, jetstream_kv::outcome>> jetstream_kv::commit(std::string payload) {
    IOTHUB_ASSERT_MAY_BLOCK();
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = link_.settings.timeout.count();
    jsPubAck* ack_raw = nullptr;
    jsErrCode code = static_cast<jsErrCode>(0);
    auto st = link_.retry_while_electing(code, [&] {
        return js_Publish(&ack_raw, link_.js.get(), subject_.c_str(), payload.data(),
                          static_cast<int>(payload.size()), &po, &code);
    });
    if (st != NATS_OK) return nats_error("Writing to " + stream_, st, code);
    nats_ptr<jsPubAck> ack(ack_raw);
    const auto sequence = ack->Sequence;
    if (auto ok = wait_applied(sequence); !ok) return ok.error();
    std::lock_guard lock(mutex_);
    auto it = mine_.find(sequence);
    if (it == mine_.end())
        return error(errc::server_error, "The outcome of a state write was lost.");
    auto out = std::move(it->second);
    mine_.erase(it);
    return std::make_pair(sequence, std::move(out));
}

result<std::optional<versioned_value>> jetstream_kv::get(std::string_view key) {
    IOTHUB_ASSERT_MAY_BLOCK();
    if (auto ok = catch_up(); !ok) return ok.error();
    std::lock_guard lock(mutex_);
    auto it = data_.find(key);
    if (it == data_.end()) return std::optional<versioned_value>{};
    return std::optional<versioned_value>{it->second};
}

std::vector<result<std::uint64_t>> jetstream_kv::apply(std::span<const kv_write> writes) {
    if (writes.empty()) return {};
    auto fail = [&](const error& e) {
        return std::vector<result<std::uint64_t>>(writes.size(), result<std::uint64_t>(e));
    };
    if (writes.size() >= max_batch_writes)
        return fail(error(errc::request_too_large, "Too many writes in one batch."));
    auto r = commit(encode_batch(link_.node, writes, false, nullptr));
    if (!r) return fail(r.error());
    return std::move(r->second);
}

result<std::pair<std::uint64_t, std::vector<std::uint64_t>>> jetstream_kv::apply_all(
    std::span<const kv_write> writes, outbox_entry events) {
    if (writes.size() >= max_batch_writes)
        return error(errc::request_too_large, "Too many writes in one batch.");
    auto r =
        commit(encode_batch(link_.node, writes, true, events.events.empty() ? nullptr : &events));
    if (!r) return r.error();
    std::vector<std::uint64_t> versions;
    for (auto& v : r->second) {
        if (!v) return v.error();
        versions.push_back(*v);
    }
    return std::make_pair(r->first, std::move(versions));
}

void jetstream_kv::confirm(std::uint64_t batch) {
    std::lock_guard lock(confirm_mutex_);
    confirmations_.push_back(batch);
}

void jetstream_kv::flush_confirmations() {
    std::vector<std::uint64_t> batch;
    {
        std::lock_guard lock(confirm_mutex_);
        batch.swap(confirmations_);
    }
    if (batch.empty()) return;
    auto r = commit(encode_batch(link_.node, {}, false, nullptr, batch));
    if (!r) {
        // Kept for the next round; meanwhile another node may copy the entries again, which
        // the streams' duplicate detection absorbs.
        std::lock_guard lock(confirm_mutex_);
        confirmations_.insert(confirmations_.end(), batch.begin(), batch.end());
    }
}

std::vector<outbox_entry> jetstream_kv::overdue(std::chrono::steady_clock::duration age) {
    const auto now = std::chrono::steady_clock::now();
    std::vector<outbox_entry> out;
    std::lock_guard lock(mutex_);
    for (auto& [seq, h] : outbox_)
        if (now - h.since >= age) {
            h.since = now;
            out.push_back(h.entry);
        }
    return out;
}

result<std::vector<kv_entry>> jetstream_kv::scan(std::string_view prefix,
                                                 std::string_view start_after, std::size_t limit) {
    IOTHUB_ASSERT_MAY_BLOCK();
    if (auto ok = catch_up(); !ok) return ok.error();
    std::lock_guard lock(mutex_);
    return ordered_scan(data_, prefix, start_after, limit);
}

}  // namespace iothub::storage::detail
