// The JetStream engine's parts.
//
// State (the kv store) is a replicated state machine: every write is a batch published to one
// stream, `<prefix>_STATE`; every node applies the stream in order to its own in-memory map, and
// a batch's conditions are checked when it is applied, so all nodes reach the same verdict
// without talking to each other. The stream sequence of a batch makes its versions (hub-wide,
// increasing), and a writer learns its outcome by applying its own batch. Reads first ask the
// stream for its last sequence and wait until the map has applied that far, so a read sees
// every write acknowledged before it began, on whichever node.
//
// append_with commits its events with its writes in one state batch (an outbox entry every node
// holds), then copies them to the partition's stream under message ids derived from the batch
// (`o<batch>.<i>`), then confirms the entry with a later batch. Should the writer die before the
// confirmation, any node copies the entry again after a few seconds: JetStream drops the copies
// it already holds by their ids (within the streams' duplicate window, ten minutes), so events
// reach their log exactly once.
//
// Event logs are one stream per partition (`<prefix>_<log>_<p>`): stream sequence - 1 is the
// event's sequence number and the stream's timestamp its enqueued time, the same on every node.
// Each node follows every partition from its tail (one ordered consumer each), which wakes
// watchers, serves readers that keep up from memory, and completes appends once this node can
// read them back.
#pragma once

#include "nats/nats.hpp"
#include "storage/blob_store.hpp"
#include "storage/detail/event_log_core.hpp"
#include "storage/engine.hpp"

#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_map>

namespace iothub::storage::detail {

using nats::js_wrong_last_sequence;
using nats::nats_error;
using nats::nats_ptr;

// Stream names allow letters, digits, '-' and '_'; subjects use '.' between tokens. Log names
// ("[A-Za-z0-9._-]+") keep letters, digits and '-'; anything else is written as "_XX" (hex), so
// two names never map to one stream.
std::string stream_token(std::string_view name);

// An ordered consumer's options: every message of `stream` from `from` (a stream sequence) on,
// in order, with no acknowledgements. `stream` must outlive the options.
jsSubOptions ordered_from(const std::string& stream, std::uint64_t from);

// The connection and JetStream context the engine's parts share.
struct jetstream_link {
    jetstream_settings settings;
    nats_ptr<natsConnection> nc;
    nats_ptr<jsCtx> js;
    std::string node;  // this process, among the writers of the state stream

    static result<std::unique_ptr<jetstream_link>> connect(const jetstream_settings& settings);
    // Creates the stream, or brings an existing one to `config`'s limits.
    result<void> ensure_stream(jsStreamConfig& config);
    result<nats_ptr<jsStreamInfo>> stream_info(const std::string& stream);
    jsOptions options() const;

    // Runs `attempt` (returning natsStatus, filling `code`) again while JetStream answers at once
    // that it cannot serve now (no responders, no stream leader: an election after a server
    // restart), until the request timeout has passed since the first try. A request that timed
    // out is not retried: it has used the whole timeout, and a publish may have been stored.
    template <class Attempt>
    natsStatus retry_while_electing(jsErrCode& code, Attempt&& attempt) const;
};

void retry_pause(int attempt);

template <class Attempt>
natsStatus jetstream_link::retry_while_electing(jsErrCode& code, Attempt&& attempt) const {
    const auto deadline = std::chrono::steady_clock::now() + settings.timeout;
    for (int n = 0;; ++n) {
        code = static_cast<jsErrCode>(0);
        const natsStatus st = attempt();
        if (st == NATS_OK || !nats::refused_at_once(st, code) ||
            std::chrono::steady_clock::now() >= deadline)
            return st;
        retry_pause(n);
    }
}

// Blobs (see jetstream_blobs.cpp for their layout).
class jetstream_blobs final : public blob_store {
  public:
    explicit jetstream_blobs(jetstream_link& link);
    result<void> start();  // creates the stream

    result<void> put(std::string_view key, std::string_view bytes) override;
    result<std::string> get(std::string_view key) override;
    result<void> remove(std::string_view key) override;
    result<std::vector<blob_entry>> list(std::string_view prefix) override;

  private:
    std::string subject(std::string_view key) const;
    std::optional<std::string> key_of(std::string_view subject) const;
    result<std::uint64_t> publish(const std::string& subject, std::string_view data,
                                  natsMsg* with_headers);
    // Everything on `subject` below sequence `below` (all of it for 0).
    result<void> purge(const std::string& subject, std::uint64_t below);
    result<nats_ptr<natsMsg>> last_message(const std::string& subject);

    jetstream_link& link_;
    std::string stream_, base_;
};

// Events committed with a state batch, waiting to be copied to their log.
struct outbox_entry {
    std::uint64_t batch = 0;  // the state batch's stream sequence
    std::string log;
    int partition = 0;
    std::vector<std::string> events;  // encoded records
};

struct state_batch;

class jetstream_kv final : public kv_store {
  public:
    explicit jetstream_kv(jetstream_link& link);
    ~jetstream_kv() override;
    // Creates the stream, subscribes and applies what is already there.
    result<void> start();

    result<std::optional<versioned_value>> get(std::string_view key) override;
    std::vector<result<std::uint64_t>> apply(std::span<const kv_write> writes) override;
    result<std::vector<kv_entry>> scan(std::string_view prefix, std::string_view start_after,
                                       std::size_t limit) override;
    void observe_remote(change_observer observer) override;
    // Follows the stream again from where it stopped when it stalled (the consumer was on a
    // server that went away) or skipped. The engine calls it every couple of seconds.
    void check_follower();
    // Every write or none, with `events` into the outbox (for append_with): the first condition
    // that fails is the answer. Returns the batch's sequence and the writes' versions.
    result<std::pair<std::uint64_t, std::vector<std::uint64_t>>> apply_all(
        std::span<const kv_write> writes, outbox_entry events);
    // The entry's events are in their log: it goes with the next confirmation batch.
    void confirm(std::uint64_t batch);
    // Publishes the confirmations gathered so far (the engine calls it a few times a second).
    void flush_confirmations();
    // Entries nobody confirmed for `age` (their writer may have died); each is handed out again
    // only after another `age`.
    std::vector<outbox_entry> overdue(std::chrono::steady_clock::duration age);

  private:
    using outcome = std::vector<result<std::uint64_t>>;
    static void on_message(natsConnection*, natsSubscription*, natsMsg* msg, void* self);
    void apply_batch(std::uint64_t sequence, std::string_view payload);
    void apply_locked(std::uint64_t sequence, bool valid, state_batch& batch,
                      std::vector<kv_change>& changes);
    result<std::pair<std::uint64_t, outcome>> commit(std::string payload);
    // Waits until every batch committed before the call is applied here.
    result<void> catch_up();
    result<std::uint64_t> leader_last_sequence();
    result<void> wait_applied(std::uint64_t sequence);
    result<void> follow(std::uint64_t from);

    jetstream_link& link_;
    std::string stream_, subject_;
    std::mutex follow_mutex_;
    nats_ptr<natsSubscription> sub_;
    // Replaced subscriptions, unsubscribed but kept: a callback of theirs may still be running.
    std::vector<nats_ptr<natsSubscription>> retired_;
    std::uint64_t checked_ = 0;  // applied_ at the last check

    std::mutex mutex_;
    std::condition_variable applied_cv_;
    std::map<std::string, versioned_value, std::less<>> data_;
    change_observer observer_;
    std::uint64_t applied_ = 0;              // the last stream sequence applied
    std::map<std::uint64_t, outcome> mine_;  // outcomes of this node's batches, until taken
    struct held {
        outbox_entry entry;
        std::chrono::steady_clock::time_point since;  // applied, or last handed out
    };
    std::map<std::uint64_t, held> outbox_;
    std::mutex confirm_mutex_;
    std::vector<std::uint64_t> confirmations_;

    // One stream-info request serves every read that arrived before it was sent.
    std::mutex barrier_mutex_;
    std::condition_variable barrier_cv_;
    bool barrier_in_flight_ = false;
    std::uint64_t barrier_requested_ = 0, barrier_sent_ = 0, barrier_done_ = 0;
    result<std::uint64_t> barrier_last_ = std::uint64_t{0};
};

class jetstream_event_log final : public event_log_core {
  public:
    jetstream_event_log(jetstream_link& link, jetstream_kv& kv, std::string name,
                        const event_log_settings& settings);
    ~jetstream_event_log() override;
    result<void> start();
    // Removes every event (drop_log); the streams stay, so sequence numbers are never reused.
    result<void> purge();

    void append(int partition, std::vector<event_record> events, append_callback done) override;
    // Copies an outbox entry's events into the log, under ids that make a repeat harmless.
    void forward(const outbox_entry& entry, append_callback done);
    void append_with(int partition, std::vector<event_record> events, std::vector<kv_write> writes,
                     append_with_callback done) override;
    result<std::vector<stored_event>> read(int partition, std::uint64_t from_sequence,
                                           std::size_t max_events) override;
    void enforce_retention(sys_time now) override;
    // Fails appends whose acknowledgements are overdue (the cluster may have lost quorum).
    void expire(std::chrono::steady_clock::time_point now);
    // Follows a partition again from where it stopped when its tail stalled or skipped.
    void check_tails();
    std::vector<std::string> stream_names() const;

  protected:
    result<sys_time> enqueued_time_of(int partition, std::uint64_t sequence) override;

  private:
    struct pending {
        int partition = 0;
        std::vector<std::uint64_t> sequences;
        std::size_t outstanding = 0;
        std::optional<error> failure;
        bool finished = false;
        std::chrono::steady_clock::time_point deadline;
        append_callback done;
    };
    struct partition_state {
        jetstream_event_log* owner = nullptr;
        int index = 0;
        std::string stream, subject;
        nats_ptr<natsSubscription> tail;
        std::mutex publish_order;  // one append's events stay together
        // Guarded by the log's cache_mutex_:
        std::deque<stored_event> cache;
        std::size_t cache_bytes = 0;
        std::uint64_t delivered = 0;  // sequence numbers below it reached this node
        std::uint64_t checked = 0;    // delivered at the last check
        std::vector<nats_ptr<natsSubscription>> retired;  // see jetstream_kv::retired_
        std::multimap<std::uint64_t, std::shared_ptr<pending>> waiting;  // by last sequence
    };

    static void on_tail(natsConnection*, natsSubscription*, natsMsg* msg, void* self);
    static void on_ack(jsCtx*, natsMsg* msg, jsPubAck* ack, jsPubAckErr* failure, void* self);
    result<void> subscribe_tail(int partition, std::uint64_t from_stream_sequence);
    // Publishes encoded events (with message ids when `id_prefix` is set: "<prefix><i>").
    void publish(int partition, const std::vector<std::string>& payloads,
                 const std::string& id_prefix, append_callback done);
    void settle(const std::shared_ptr<pending>& p);
    result<std::vector<stored_event>> fetch(int partition, std::uint64_t from, std::size_t max);

    jetstream_link& link_;
    jetstream_kv& kv_;
    std::string name_;
    event_log_settings settings_;
    nats_ptr<jsCtx> async_js_;
    std::vector<std::unique_ptr<partition_state>> parts_;
    std::mutex cache_mutex_;
    std::mutex inflight_mutex_;
    std::unordered_map<natsMsg*, std::pair<std::shared_ptr<pending>, std::size_t>> inflight_;

    // append_with's kv half blocks on the cluster; it runs here, never on the caller's thread.
    std::mutex work_mutex_;
    std::condition_variable work_cv_;
    std::deque<std::function<void()>> work_;
    bool stopping_ = false;
    std::thread worker_;
};

}  // namespace iothub::storage::detail
