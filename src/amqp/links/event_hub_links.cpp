// The Event Hubs-compatible endpoint's links: partition receivers (consumer group, selector
// filter, exclusive epoch receivers hub-wide) and `$management` READ. Checking a consumer group
// and fixing where a receiver starts read storage, so they run off the network thread while the
// attach waits; events are read off it too and sent within the receiver's credit.
#include "amqp/detail/connection.hpp"
#include "amqp/event_hubs.hpp"
#include "common/encoding.hpp"

#include <proton/link.h>
#include <spdlog/spdlog.h>

#include <charconv>

namespace iothub::amqp::detail {
namespace {

std::optional<std::int64_t> epoch_of(pn_link_t* link) {
    auto* props = pn_link_remote_properties(link);
    if (!props) return std::nullopt;
    std::optional<std::int64_t> epoch;
    pn_data_rewind(props);
    if (pn_data_next(props) && pn_data_type(props) == PN_MAP) {
        pn_data_enter(props);
        while (pn_data_next(props)) {
            bool is_epoch = false;
            if (pn_data_type(props) == PN_SYMBOL) {
                auto b = pn_data_get_symbol(props);
                is_epoch = std::string_view(b.start, b.size) == "com.microsoft:epoch";
            }
            if (!pn_data_next(props)) break;
            if (is_epoch && pn_data_type(props) == PN_LONG) epoch = pn_data_get_long(props);
        }
        pn_data_exit(props);
    }
    return epoch;
}

class event_hub_links final : public link_family {
  public:
    using link_family::link_family;

    attach_decision attach(link_state& ls, const node_address& a) override {
        if (ls.what != role::event_hub_partition) return attach_decision::open();
        const auto* g = c_.service_grant();
        if (!g)
            return attach_decision::refuse(
                "amqp:unauthorized-access",
                "Reading events needs a token of a policy with ServiceConnect.");
        ls.grant_key = g->key();
        auto& svc = c_.svc();
        const bool builtin = iequals(a.entity, svc.event_hub);
        ls.log = log_for(a.entity);
        if (!ls.log)
            return attach_decision::refuse(
                "amqp:not-found", "No event hub '" + a.entity + "': the built-in one is '" +
                                      svc.event_hub + "', others are routing endpoints.");
        int partition = -1;
        auto [p, ec] =
            std::from_chars(a.partition.data(), a.partition.data() + a.partition.size(), partition);
        if (ec != std::errc{} || p != a.partition.data() + a.partition.size() || partition < 0 ||
            partition >= ls.log->partition_count())
            return attach_decision::refuse(
                "amqp:not-found", "Partition '" + a.partition + "' does not exist; there are " +
                                      std::to_string(ls.log->partition_count()) + ".");
        auto selector = selector_of(pn_terminus_filter(pn_link_remote_source(ls.link)));
        if (!selector)
            return attach_decision::refuse(condition_for(selector.error().code()),
                                           selector.error().message());
        ls.partition = partition;
        const auto position = selector->value_or(storage::read_position::latest());
        // The consumer group is checked, and where the receiver starts fixed, off the network
        // thread; the attach is answered then. A receiver "from the end" must still get what
        // arrives before it grants credit, so the start is fixed at attach, not at first credit.
        c_.off_shard(
            ls.id,
            // Hosted event hubs take any consumer group name, as an Event Hubs namespace's own
            // groups are not the hub's to manage.
            [&svc, log = ls.log, builtin, group = a.consumer_group, partition,
             position]() -> result<std::uint64_t> {
                if (builtin)
                    if (auto found = svc.groups.find(group); !found) return found.error();
                return log->resolve(partition, position);
            },
            [this, group = to_lower(a.entity) + "/" + a.consumer_group](
                link_state& ls, result<std::uint64_t> start) {
                if (!start)
                    return c_.finish_attach(
                        ls.id, attach_decision::refuse(condition_for(start.error().code()),
                                                       start.error().message()));
                ls.next_sequence = *start;
                c_.finish_attach(ls.id, claim_epoch(ls, group));
            });
        return attach_decision::later();
    }

    void opened(link_state& ls) override {
        if (ls.what == role::event_hub_partition) pump(ls);
    }

    void message(link_state& ls, pn_delivery_t* d, pn_message_t* m) override {
        if (ls.what != role::management_in) return c_.settle(ls, d, PN_ACCEPTED);
        management_request(ls, d, m);
    }

    void flow(link_state& ls) override {
        if (ls.what == role::event_hub_partition) pump(ls);
    }

    void detached(link_state& ls) override {
        if (ls.what == role::event_hub_partition) close_partition(ls);
    }

    void closing() override {
        c_.for_each_link(role::event_hub_partition,
                         [this](link_state& ls) { close_partition(ls); });
    }

  private:
    // The built-in stream or a hosted routing endpoint, by the entity a client names.
    storage::event_log* log_for(std::string_view entity) {
        auto& svc = c_.svc();
        if (iequals(entity, svc.event_hub)) return &svc.events;
        return svc.hosted_event_hub ? svc.hosted_event_hub(entity) : nullptr;
    }

    // Exclusive (epoch) receivers, per event hub, consumer group and partition, hub-wide.
    attach_decision claim_epoch(link_state& ls, const std::string& group) {
        const auto epoch = epoch_of(ls.link);
        const auto key = to_lower(group) + "/" + std::to_string(ls.partition);
        auto& srv = c_.server();
        std::shared_ptr<net::connection> displaced;
        std::uint64_t displaced_link = 0;
        {
            std::lock_guard lock(srv.mutex);
            auto it = srv.epochs.find(key);
            const bool held = it != srv.epochs.end() && !it->second.conn.expired();
            if (held && (!epoch || *epoch < it->second.epoch))
                return attach_decision::refuse(
                    "amqp:link:stolen", "A receiver with epoch " +
                                            std::to_string(it->second.epoch) + " owns partition " +
                                            std::to_string(ls.partition) + " of consumer group '" +
                                            group + "'.");
            if (epoch) {
                if (held) {
                    displaced = it->second.conn.lock();
                    displaced_link = it->second.link_id;
                }
                srv.epochs[key] = {*epoch, c_.io().handle(), ls.id};
                ls.epoch_key = key;
            }
        }
        if (displaced) {
            auto reason = "A receiver with a higher epoch (" + std::to_string(*epoch) +
                          ") took over partition " + std::to_string(ls.partition) + ".";
            displaced->post([displaced_link, reason](net::protocol_handler& h) {
                auto& other = static_cast<connection&>(h);
                other.close_link(displaced_link, "amqp:link:stolen", reason);
                other.wake();
            });
        }
        return attach_decision::open();
    }

    void close_partition(link_state& ls) {
        if (ls.watch && ls.log) ls.log->unwatch(ls.watch);
        ls.watch = 0;
        if (ls.epoch_key.empty()) return;
        auto& srv = c_.server();
        std::lock_guard lock(srv.mutex);
        auto it = srv.epochs.find(ls.epoch_key);
        if (it != srv.epochs.end() && it->second.link_id == ls.id &&
            it->second.conn.lock().get() == c_.io().handle().lock().get())
            srv.epochs.erase(it);
    }

    // Reads as many events as the receiver has credit for (off the network thread), sends them,
    // and when it has caught up waits for the partition to grow.
    void pump(link_state& ls) {
        if (ls.reading || c_.is_closed() || !(pn_link_state(ls.link) & PN_LOCAL_ACTIVE)) return;
        const int credit = pn_link_credit(ls.link);
        if (credit <= 0) return;
        ls.reading = true;
        const auto max = static_cast<std::size_t>(std::min(credit, 256));
        c_.off_shard(
            ls.id,
            // A reader behind retention gets the oldest events still kept: read() clamps.
            [&events = *ls.log, partition = ls.partition, from = ls.next_sequence, max] {
                return events.read(partition, from, max);
            },
            [this, max](link_state& ls, result<std::vector<storage::stored_event>> r) {
                ls.reading = false;
                if (!r) {
                    spdlog::error("{}: reading partition {} failed: {}", c_.describe(),
                                  ls.partition, r.error().message());
                    return;
                }
                for (const auto& e : *r) {
                    fill_event(c_.scratch(), e);
                    c_.send_now(ls, c_.scratch(), {});
                    ls.next_sequence = e.sequence_number + 1;
                }
                if (r->size() == max) return pump(ls);
                auto& events = *ls.log;
                if (ls.watch) events.unwatch(ls.watch);
                ls.watch = events.watch(ls.partition, ls.next_sequence,
                                        [weak = c_.io().handle(), this, id = ls.id] {
                                            auto alive = weak.lock();
                                            if (!alive) return;
                                            alive->post([this, id](net::protocol_handler&) {
                                                if (auto* l = c_.link(id)) {
                                                    l->watch = 0;
                                                    pump(*l);
                                                    c_.wake();
                                                }
                                            });
                                        });
            });
    }

    // `$management` READ for the event hub or one partition (protocol.md 8).
    void management_request(link_state& ls, pn_delivery_t* d, pn_message_t* m) {
        auto& svc = c_.svc();
        auto operation = application_property(m, "operation").value_or("");
        auto type = application_property(m, "type").value_or("");
        auto name = application_property(m, "name").value_or("");
        auto partition_text = application_property(m, "partition").value_or("");
        auto security_token = application_property(m, "security_token");
        auto id = saved_id::of(pn_message_get_id(m));
        const char* reply_to_c = pn_message_get_reply_to(m);
        std::string reply_to(reply_to_c ? reply_to_c : "");
        c_.settle(ls, d, PN_ACCEPTED);

        int status = 200;
        std::string description = "OK";
        auto* out = c_.scratch();
        pn_message_clear(out);
        bool allowed = c_.service_grant() != nullptr;
        auto* log = log_for(name);
        if (!allowed && security_token) {
            auto g = authorize_event_hubs_token(*security_token, svc.policies, svc.hosts,
                                                log ? std::string_view(name) : svc.event_hub,
                                                iothub::now());
            allowed = g.has_value();
            if (!g) description = g.error().message();
        }
        if (!allowed) {
            status = 401;
            if (description == "OK") description = "Put a token of a policy with ServiceConnect.";
        } else if (operation != "READ") {
            status = 400;
            description = "Unsupported operation '" + operation + "'.";
        } else if (!log) {
            status = 404;
            description =
                "No event hub '" + name + "': the built-in one is '" + svc.event_hub + "'.";
        } else if (type == "com.microsoft:eventhub") {
            fill_eventhub_info(out, name, svc.created, log->partition_count());
        } else if (type == "com.microsoft:partition") {
            int p = -1;
            auto [end, ec] = std::from_chars(partition_text.data(),
                                             partition_text.data() + partition_text.size(), p);
            if (ec != std::errc{} || p < 0 || p >= log->partition_count()) {
                status = 404;
                description = "Partition '" + partition_text + "' does not exist.";
            } else {
                fill_partition_info(out, name, p, log->info(p));
            }
        } else {
            status = 400;
            description = "Unsupported type '" + type + "'.";
        }
        if (status != 200) pn_message_clear(out);
        if (id.type != PN_NULL) pn_message_set_correlation_id(out, id.atom());
        auto* props = pn_message_properties(out);
        put_int_property(props, "status-code", status);
        put_string_property(props, "status-description", description);
        // Answer on the link the client named in reply-to (its receiver's name or target), else
        // on any $management receiver: Debian's Python client sends no reply-to.
        link_state* target = nullptr;
        c_.for_each_link(role::management_out, [&](link_state& o) {
            if (target && (reply_to == pn_link_name(target->link) ||
                           reply_to == terminus_address(pn_link_remote_target(target->link))))
                return;
            if (!target || reply_to == pn_link_name(o.link) ||
                reply_to == terminus_address(pn_link_remote_target(o.link)))
                target = &o;
        });
        if (target) c_.send(*target, out);
    }
};

}  // namespace

std::unique_ptr<link_family> make_event_hub_links(connection& c) {
    return std::make_unique<event_hub_links>(c);
}

}  // namespace iothub::amqp::detail
