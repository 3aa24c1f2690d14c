// Event Hubs producers sending to the event hubs routing endpoints host, as they would to an Event
// Hubs namespace: a sender on `{entity}` or `{entity}/Partitions/{n}`, authorized by a put-token
// for that entity (or the whole hub) of a policy with ServiceConnect, the same credentials that
// read it. Each transfer, plain or batched, is appended to the entity's log as one write, to the
// partition the address names, else the one its `x-opt-partition-key` hashes to, else the next in
// the link's rotation; it is accepted only once the append is durable. The built-in endpoint takes
// no sends: it is the devices' telemetry.
#include "amqp/detail/connection.hpp"
#include "common/encoding.hpp"

#include <spdlog/spdlog.h>

#include <charconv>

namespace iothub::amqp::detail {
namespace {

constexpr std::string_view partition_key = "x-opt-partition-key";

class event_hub_sends final : public link_family {
  public:
    using link_family::link_family;

    attach_decision attach(link_state& ls, const node_address& a) override {
        auto& svc = c_.svc();
        if (iequals(a.entity, svc.event_hub))
            return attach_decision::refuse(
                "amqp:not-found", "'" + a.entity +
                                      "' is the hub's built-in endpoint, which only devices send "
                                      "to; the event hubs that take sends are routing endpoints.");
        ls.log = svc.hosted_event_hub ? svc.hosted_event_hub(a.entity) : nullptr;
        if (!ls.log)
            return attach_decision::refuse(
                "amqp:not-found", "No event hub '" + a.entity +
                                      "' takes sends here: only eventHubs routing endpoints "
                                      "without a connection string do.");
        ls.partition = -1;
        if (!a.partition.empty()) {
            int p = -1;
            auto [end, ec] =
                std::from_chars(a.partition.data(), a.partition.data() + a.partition.size(), p);
            if (ec != std::errc{} || end != a.partition.data() + a.partition.size() || p < 0 ||
                p >= ls.log->partition_count())
                return attach_decision::refuse("amqp:not-found",
                                               "Partition '" + a.partition + "' of '" + a.entity +
                                                   "' does not exist; there are " +
                                                   std::to_string(ls.log->partition_count()) + ".");
            ls.partition = p;
        }
        const auto* g = c_.event_hub_grant(a.entity);
        if (!g)
            return attach_decision::refuse(
                "amqp:unauthorized-access",
                "Sending to '" + a.entity + "' needs a put-token for sb://" + svc.hub_name + "/" +
                    a.entity + " of a policy with ServiceConnect.");
        ls.grant_key = g->key();
        return attach_decision::open();
    }

    void message(link_state& ls, pn_delivery_t* d, pn_message_t* m) override {
        auto e = to_event_hub_event(m);
        if (!e) return c_.settle_error(ls, d, e.error());
        auto key = annotation(m, partition_key);
        std::vector<storage::event_record> events;
        events.push_back(std::move(*e));
        append(ls, d, std::move(events), key);
    }

    // A batch (what the Event Hubs SDKs send): every data section is a whole event. It is taken or
    // refused whole, and goes to one partition: the envelope's key is the batch's, and producers
    // give every event of a keyed batch the same key.
    void batch(link_state& ls, pn_delivery_t* d, std::string_view bytes) override {
        // The envelope's key, else the first event's.
        auto* m = c_.scratch();
        pn_message_clear(m);
        std::optional<std::string> key;
        if (pn_message_decode(m, bytes.data(), bytes.size()) == 0)
            key = annotation(m, partition_key);
        auto events = c_.decode_batch(ls, d, bytes, "Event", [&key](pn_message_t* inner) {
            auto e = to_event_hub_event(inner);
            if (e && !key) key = annotation(inner, partition_key);
            return e;
        });
        if (!events) return;
        append(ls, d, std::move(*events), key);
    }

  private:
    // One write per transfer. Appends to one partition complete in the order they were made, so
    // a key's events keep their order. The completion runs on the log's thread: it posts back
    // here, and the delivery is answered if its link is still there.
    void append(link_state& ls, pn_delivery_t* d, std::vector<storage::event_record> events,
                const std::optional<std::string>& key) {
        const int count = ls.log->partition_count();
        int partition = ls.partition;
        if (partition < 0)
            partition = key && !key->empty() ? storage::partition_for(*key, count)
                                             : static_cast<int>(ls.rotation++ % count);
        std::size_t bytes = 0;
        for (const auto& e : events) bytes += storage::event_size(e);
        // The same bound as device telemetry: reading pauses while too much waits for storage.
        c_.budget()->charge(bytes);
        ls.log->append(
            partition, std::move(events),
            [weak = c_.io().handle(), link_id = ls.id, d, bytes,
             budget = c_.budget()](result<std::vector<std::uint64_t>> r) {
                auto alive = weak.lock();
                if (!alive) return;
                alive->post(
                    [link_id, d, bytes, budget, r = std::move(r)](net::protocol_handler& h) {
                        auto& c = static_cast<connection&>(h);
                        budget->release(bytes);
                        if (auto* ls = c.link(link_id)) {
                            if (r) {
                                c.settle(*ls, d, PN_ACCEPTED);
                            } else {
                                spdlog::error("{}: events for '{}' not stored: {}", c.describe(),
                                              terminus_address(pn_link_remote_target(ls->link)),
                                              r.error().message());
                                c.settle_error(*ls, d, r.error());
                            }
                        }
                        c.wake();
                    });
            });
    }
};

}  // namespace

std::unique_ptr<link_family> make_event_hub_send_links(connection& c) {
    return std::make_unique<event_hub_sends>(c);
}

}  // namespace iothub::amqp::detail
