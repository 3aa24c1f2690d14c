#include "amqp/detail/sasl.hpp"

#include <proton/sasl.h>
#include <proton/sasl_plugin.h>

#include <string_view>

namespace iothub::amqp::detail {
namespace {

sasl_outcome& state_of(pn_transport_t* t) {
    return *static_cast<sasl_outcome*>(pnx_sasl_get_context(t));
}

void no_free(pn_transport_t*) {}

const char* list_mechanisms(pn_transport_t* t) {
    return state_of(t).offer_external ? "MSSBCBS ANONYMOUS PLAIN EXTERNAL"
                                      : "MSSBCBS ANONYMOUS PLAIN";
}

bool init_server(pn_transport_t* t) {
    pnx_sasl_set_desired_state(t, SASL_POSTED_MECHANISMS);
    return true;
}

bool init_client(pn_transport_t*) {
    return false;
}
void prepare_write(pn_transport_t*) {}

void process_init(pn_transport_t* t, const char* mechanism, const pn_bytes_t* recv) {
    auto& s = state_of(t);
    s.mechanism = mechanism ? mechanism : "";
    if (s.mechanism == "PLAIN" && recv && recv->start) {
        // authzid NUL authcid NUL password
        std::string_view r(recv->start, recv->size);
        auto first = r.find('\0');
        auto second = first == std::string_view::npos ? first : r.find('\0', first + 1);
        if (second != std::string_view::npos) {
            s.username = std::string(r.substr(first + 1, second - first - 1));
            s.password = std::string(r.substr(second + 1));
        }
    }
    if (s.mechanism == "PLAIN" && s.defer_plain) {
        s.plain_pending = true;  // the outcome goes out with finish_plain
        return;
    }
    pnx_sasl_set_succeeded(t, s.username.empty() ? "anonymous" : s.username.c_str(), nullptr);
    pnx_sasl_set_desired_state(t, SASL_POSTED_OUTCOME);
}

void process_response(pn_transport_t*, const pn_bytes_t*) {}
bool process_mechanisms(pn_transport_t*, const char*) {
    return false;
}
void process_challenge(pn_transport_t*, const pn_bytes_t*) {}
void process_outcome(pn_transport_t*, const pn_bytes_t*) {}
bool can_encrypt(pn_transport_t*) {
    return false;
}
ssize_t max_encrypt_size(pn_transport_t*) {
    return 0;
}
ssize_t encode(pn_transport_t*, pn_bytes_t, pn_bytes_t*) {
    return 0;
}
ssize_t decode(pn_transport_t*, pn_bytes_t, pn_bytes_t*) {
    return 0;
}

const pnx_sasl_implementation hub_sasl = {
    no_free,
    list_mechanisms,
    init_server,
    init_client,
    prepare_write,
    process_init,
    process_response,
    process_mechanisms,
    process_challenge,
    process_outcome,
    can_encrypt,
    max_encrypt_size,
    encode,
    decode,
};

}  // namespace

void finish_plain(pn_transport_t* t, sasl_outcome& s, bool accepted) {
    if (accepted)
        pnx_sasl_set_succeeded(t, s.username.empty() ? "anonymous" : s.username.c_str(), nullptr);
    else
        pnx_sasl_set_failed(t);
    pnx_sasl_set_desired_state(t, SASL_POSTED_OUTCOME);
}

void install_sasl(pn_transport_t* transport, sasl_outcome& state) {
    auto* sasl = pn_sasl(transport);
    // TLS is below proton, so proton thinks the link is unencrypted; PLAIN is fine here.
    pn_sasl_set_allow_insecure_mechs(sasl, true);
    pnx_sasl_set_implementation(transport, &hub_sasl, &state);
}

}  // namespace iothub::amqp::detail
