// Writes the hub's AMQP performatives at full length. Proton omits trailing null fields, which
// the AMQP spec allows and Azure does not do; Debian's Python `azure.eventhub` 5.11 reads fields by
// position and fails on the short forms (protocol.md 3.11 and 8.9). This sits between the
// connection driver and the socket and rewrites each outgoing frame's performative list to every
// field of its type, giving BEGIN a numeric handle-max and ATTACH a properties map where the
// client indexes into them. Frame payloads (message bytes) pass through untouched.
//
// The stream is fed in whatever pieces the driver produces; a partial frame waits for its rest.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace iothub::amqp::detail {

class performative_padder {
  public:
    // Appends to `out` the padded form of every complete frame (and protocol header) in what was
    // fed so far.
    void feed(std::string_view in, std::string& out);
    // Bytes of an incomplete frame still held back.
    std::size_t pending() const { return pending_.size(); }

  private:
    std::string pending_;
};

// Pads one performative body (a described list); returns it unchanged when it is not one or
// cannot be parsed. Exposed for tests.
std::string pad_performative(std::string_view body);

}  // namespace iothub::amqp::detail
