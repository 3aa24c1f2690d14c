// One AMQP connection, inside the AMQP endpoint: Qpid Proton's connection driver (framing,
// sessions, links, flow control), the hub's SASL, the bytes in and out (with the performatives
// padded and the transfer formats read), the links by id, the authorizations put on `$cbs`, and
// the dispatch of every link to the family that serves it:
//
//   cbs_links        $cbs put-tokens
//   device_links     telemetry, C2D, twin and method links of devices and modules (one device
//                    session per identity; gateways carry many)
//   service_links    the service's C2D sends, feedback and file notifications
//   event_hub_links  Event Hubs partition receivers, epochs, `$management`
//   event_hub_sends  Event Hubs producers sending to the event hubs routing endpoints host
//   dps_links        provisioning clients: register and poll on {idScope}/registrations/{id}
//
// The connection needs no socket: it is a net::protocol_handler (bytes in, bytes out), so its
// link families are tested by pairing a client driver with it in memory. Everything runs on the
// connection's executor; blocking work goes through off_shard().
#pragma once

#include "amqp/addresses.hpp"
#include "amqp/cbs.hpp"
#include "amqp/detail/frame_padding.hpp"
#include "amqp/detail/sasl.hpp"
#include "amqp/detail/transfer_formats.hpp"
#include "amqp/message_codec.hpp"
#include "amqp/server.hpp"
#include "common/fifo.hpp"
#include "net/connection.hpp"
#include "session/device_session.hpp"

#include <boost/asio/post.hpp>
#include <proton/condition.h>
#include <proton/connection.h>
#include <proton/connection_driver.h>
#include <proton/delivery.h>
#include <proton/link.h>
#include <proton/terminus.h>

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

namespace iothub::amqp::detail {

// The AMQP condition a core error travels as (protocol.md 3.8).
const char* condition_for(errc code);
void set_condition(pn_condition_t* c, std::string_view name, std::string_view description);
std::string terminus_address(pn_terminus_t* t);

// A message-id kept past the message it came from, to answer with the same AMQP type.
struct saved_id {
    pn_type_t type = PN_NULL;
    std::string bytes;
    pn_uuid_t uuid{};
    std::uint64_t number = 0;

    static saved_id of(pn_atom_t a);
    pn_atom_t atom() const;
};

enum class role : std::uint8_t {
    cbs_in,
    cbs_out,
    d2c,
    c2d_out,
    methods_in,
    methods_out,
    twin_in,
    twin_out,
    service_c2d,
    feedback_out,
    file_notifications_out,
    management_in,
    management_out,
    event_hub_partition,
    event_hub_send,  // a producer's sender: the hub receives events for a hosted event hub
    dps_requests,    // a provisioning client's requests (register, poll)
    dps_responses,   // their answers, matched by correlation id
};

// The largest message (a batch, for most producers) a hosted event hub takes: Event Hubs
// Standard's limit, which producers read off the attach to size their batches.
inline constexpr std::uint64_t event_hub_send_max_bytes = 1024 * 1024;

struct link_state {
    std::uint64_t id = 0;
    pn_link_t* link = nullptr;
    role what = role::cbs_in;
    std::string identity;  // "d" or "d/m" for device links
    std::string device_id;
    std::string module_id;
    std::string grant_key;  // the grant that authorized it
    // Receivers: deliveries the core has not answered yet.
    std::size_t unsettled = 0;
    // Receivers: the oversized delivery being read and dropped, and its bytes so far.
    pn_delivery_t* discarding = nullptr;
    std::uint64_t discarded = 0;
    // Senders: lock tokens of unsettled C2D, feedback or notification deliveries.
    std::map<pn_delivery_t*, std::string> locks;
    // Senders: encoded replies waiting for credit.
    fifo<std::string> outbox;
    // Service C2D sends waiting to be enqueued, in order.
    struct pending_send {
        pn_delivery_t* delivery;
        result<c2d::message> message;
        std::string device_id;
    };
    fifo<pending_send> sends;
    bool sending = false;
    // Event Hubs partition receivers; a hosted event hub's sender names one (else -1).
    int partition = 0;
    std::uint64_t next_sequence = 0;
    storage::event_log* log = nullptr;  // an event hub partition receiver's or sender's
    std::uint32_t rotation = 0;         // a sender's next partition for events without a key
    bool reading = false;
    std::uint64_t watch = 0;
    std::string epoch_key;  // set when it holds an epoch
};

// What a family decides about a link the client attached.
struct attach_decision {
    enum class kind : std::uint8_t { open, refuse, later } what = kind::open;
    std::string condition;
    std::string description;

    static attach_decision open() { return {}; }
    static attach_decision refuse(std::string condition, std::string description) {
        return {kind::refuse, std::move(condition), std::move(description)};
    }
    // The family answers with connection::finish_attach once it knows (blocking checks).
    static attach_decision later() { return {kind::later, {}, {}}; }
};

class connection;

class link_family {
  public:
    explicit link_family(connection& c) : c_(c) {}
    virtual ~link_family() = default;
    link_family(const link_family&) = delete;
    link_family& operator=(const link_family&) = delete;

    virtual attach_decision attach(link_state& ls, const node_address& a) = 0;
    // The link is open (attach answered).
    virtual void opened(link_state& /*ls*/) {}
    // A whole message on one of the family's receivers.
    virtual void message(link_state& ls, pn_delivery_t* d, pn_message_t* m) = 0;
    // A batched message (format 0x80013700): only device telemetry takes them.
    virtual void batch(link_state& /*ls*/, pn_delivery_t* /*d*/, std::string_view /*bytes*/) {}
    // One of the family's senders got credit.
    virtual void flow(link_state& /*ls*/) {}
    // The peer's final outcome for a delivery the hub sent (PN_ACCEPTED, ...).
    virtual void outcome(link_state& /*ls*/, pn_delivery_t* /*d*/, std::uint64_t /*state*/) {}
    // The link is going away, whichever side ended it.
    virtual void detached(link_state& /*ls*/) {}
    // The connection is closing: let go of everything held.
    virtual void closing() {}

  protected:
    connection& c_;
};

// State shared by every connection of one AMQP server.
struct server_state {
    services svc;
    session::services& sessions;
    server_settings settings;

    // Event Hubs epoch receivers: per consumer group and partition, the highest epoch attached
    // and the link holding it. A higher epoch takes over; a lower one, or a receiver without an
    // epoch while one is held, is refused.
    struct epoch_owner {
        std::int64_t epoch = 0;
        std::weak_ptr<net::connection> conn;
        std::uint64_t link_id = 0;
    };
    std::mutex mutex;
    std::map<std::string, epoch_owner> epochs;

    server_state(services s, session::services& ss, server_settings st)
        : svc(s), sessions(ss), settings(st) {}
};

class connection final : public net::protocol_handler {
  public:
    connection(std::shared_ptr<server_state> srv, net::connection_io& io);
    ~connection() override;

    // net::protocol_handler
    void start() override;
    void received(std::string_view bytes) override;
    void stream_ended(const std::string& reason) override;
    void stop(const std::string& reason) override;
    void take_output(std::string& out) override;
    bool wants_read() const override;
    bool finished() const override;
    net::steady::time_point deadline() const override;
    void on_deadline() override;
    void closed() override;

    // --- for the link families ---------------------------------------------------------------
    server_state& server() { return *srv_; }
    services& svc() { return srv_->svc; }
    session::services& sessions() { return srv_->sessions; }
    net::connection_io& io() { return io_; }
    const std::shared_ptr<session::telemetry_budget>& budget() const { return budget_; }
    bool is_closed() const { return closed_; }
    std::string describe() const;  // "amqps 1.2.3.4:5678", for logs

    link_state* link(std::uint64_t id);
    link_state* link_of(const std::string& identity, role r);
    template <class Fn>
    void for_each_link(role r, Fn fn) {
        for (auto& [l, ls] : links_)
            if (ls->what == r) fn(*ls);
    }

    // Answers an attach a family deferred (attach_decision::later); a no-op if the link went.
    void finish_attach(std::uint64_t link_id, const attach_decision& d);
    // Detaches a link with an error condition.
    void close_link(std::uint64_t link_id, std::string_view condition, std::string_view why);

    // Receivers: answer a delivery (each counts against the link's window until answered).
    void settle(link_state& ls, pn_delivery_t* d, std::uint64_t outcome);
    void settle_error(link_state& ls, pn_delivery_t* d, const error& e);
    void reject(link_state& ls, pn_delivery_t* d, std::string_view condition,
                std::string_view description);
    // A batched message's data sections, each a whole message made into an event by `convert`
    // (which sees the decoded inner message). Taken or refused whole: on the first fault the
    // delivery is refused, naming the message ("<noun> 3 of 10 in the batch"), and nullopt
    // comes back.
    std::optional<std::vector<storage::event_record>> decode_batch(
        link_state& ls, pn_delivery_t* d, std::string_view bytes, std::string_view noun,
        const std::function<result<storage::event_record>(pn_message_t*)>& convert);
    // Senders: sends `m` now or when credit comes; send_now needs credit.
    void send(link_state& ls, pn_message_t* m);
    pn_delivery_t* send_now(link_state& ls, pn_message_t* m, std::string_view tag);
    std::string next_tag();
    // A message to decode into or build in, the connection's until process() ends: borrowed from
    // its thread's few (a Proton message with its data trees is several KiB, and an idle
    // connection needs none).
    pn_message_t* scratch();

    // A provisioning client's SASL PLAIN login (`{idScope}/registrations/{id}` and its SAS):
    // checked by the provisioning service when a link attaches, and with each request.
    struct provisioning_login {
        std::string id_scope, registration_id, authorization;
    };
    const std::optional<provisioning_login>& provisioning() const { return provisioning_; }

    // Authorizations from put-tokens, SASL PLAIN and client certificates.
    void add_grant(grant g);
    const grant* grant_for(const std::string& key) const;
    const grant* service_grant() const;
    // A grant that lets the connection send to the event hub `entity` (grant::allows_sending_to).
    const grant* event_hub_grant(std::string_view entity) const;
    void drop_grant(const std::string& key);
    // From the server: the identity's access ended; tokens held for it (and for a device's
    // modules) stop counting.
    void revoke(const std::string& device_id, const std::string& module_id);

    // Runs `work` on the blocking pool, then `then(link, result)` here if the link still exists.
    template <class Work, class Then>
    void off_shard(std::uint64_t link_id, Work work, Then then) {
        srv_->sessions.blocking.run(
            std::move(work), io_.executor(),
            [weak = io_.handle(), this, link_id, then = std::move(then)](auto r) mutable {
                auto alive = weak.lock();
                if (!alive || closed_) return;
                if (auto* ls = link(link_id)) then(*ls, std::move(r));
                wake();
            });
    }
    // Runs `fn` here later (after the current event), unless the connection has closed by then.
    void defer(std::function<void()> fn);

    // After work outside received()/on_deadline(): handle proton's events, write what is due.
    void wake();

  private:
    bool setup();
    void process();
    void handle(pn_event_t* e);
    void on_attach(pn_link_t* l);
    void open_link(link_state& ls);
    void refuse(pn_link_t* l, std::string_view condition, std::string_view description);
    void forget_link(pn_link_t* l);
    void on_flow(pn_link_t* l);
    void on_delivery(pn_delivery_t* d);
    void on_outcome(link_state& ls, pn_delivery_t* d);
    void discard(link_state& ls, pn_delivery_t* d);
    std::uint32_t forget_format(pn_delivery_t* d);
    void top_up(link_state& ls);
    void drain_outbox(link_state& ls);
    link_family* family_of(role r);
    std::optional<sys_time> earliest_expiry() const;
    void expire_grants();
    void check_plain();
    void accept_provisioning_login(node_address a);

    std::shared_ptr<server_state> srv_;
    net::connection_io& io_;
    std::shared_ptr<session::telemetry_budget> budget_;
    pn_connection_driver_t driver_;
    sasl_outcome sasl_;
    performative_padder padder_;
    transfer_formats formats_;
    message_ptr scratch_;  // borrowed: see scratch()
    void return_scratch();
    net::steady::time_point next_tick_ = net::steady::time_point::max();
    bool in_process_ = false, again_ = false;
    bool stream_gone_ = false, closed_ = false, setup_failed_ = false;
    std::uint64_t next_link_id_ = 1;
    std::uint64_t next_tag_ = 1;
    std::unordered_map<pn_link_t*, std::unique_ptr<link_state>> links_;
    std::unordered_map<std::uint64_t, link_state*> by_id_;
    std::map<std::string, grant> grants_;
    std::optional<provisioning_login> provisioning_;
    std::unique_ptr<link_family> cbs_, devices_, service_, event_hubs_, event_hub_sends_, dps_;
};

// The families, each in its own file.
std::unique_ptr<link_family> make_cbs_links(connection& c);
std::unique_ptr<link_family> make_device_links(connection& c);
std::unique_ptr<link_family> make_service_links(connection& c);
std::unique_ptr<link_family> make_event_hub_links(connection& c);
std::unique_ptr<link_family> make_event_hub_send_links(connection& c);
std::unique_ptr<link_family> make_dps_links(connection& c);

}  // namespace iothub::amqp::detail
