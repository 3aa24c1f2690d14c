// AMQP 1.0's type encoding read straight off the bytes, for the places where the hub looks at
// frames and sections around Qpid Proton rather than through it: padding outgoing performatives,
// reading incoming transfer headers that proton does not expose, and splitting batched messages
// into their sections. Every reader is bounded by its input and fails (nullopt) rather than read
// past it, since the bytes come from the network.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace iothub::amqp::detail {

std::uint32_t read_u32(std::string_view s, std::size_t at);
void put_u32(std::string& out, std::uint32_t v);

// Where the encoded value starting at `at` ends; nullopt when it runs past the input or uses a
// constructor this does not know.
std::optional<std::size_t> skip_value(std::string_view s, std::size_t at, int depth = 0);

// A described value with a numeric descriptor (smallulong or ulong form): its code and where the
// value after the descriptor starts. nullopt for anything else.
struct descriptor {
    std::uint64_t code = 0;
    std::size_t value_at = 0;
};
std::optional<descriptor> read_descriptor(std::string_view s, std::size_t at);

// A list (list0, list8 or list32) at `at`: how many items, where the first starts and where the
// list ends. nullopt when it is not a list or its header runs past the input.
struct list_header {
    std::size_t count = 0;
    std::size_t items = 0;
    std::size_t end = 0;
};
std::optional<list_header> read_list_header(std::string_view s, std::size_t at);

// Scalars of one encoded value (exactly the value's bytes). uint: uint0, smalluint or uint; bool:
// true, false or the one-byte form; binary and string: their 8- or 32-bit-length forms.
bool is_null(std::string_view value);
std::optional<std::uint32_t> read_uint(std::string_view value);
std::optional<bool> read_bool(std::string_view value);
std::optional<std::string_view> read_binary(std::string_view value);
std::optional<std::string_view> read_string(std::string_view value);

// The first `limit` fields of a described list (a performative or a section), each as its
// encoded bytes; fields past the list's count are absent (empty views). nullopt when the value is
// not a described list or a wanted field runs past the input, so a truncated prefix of a
// performative can still be read as far as it goes.
struct fields {
    std::uint64_t code = 0;
    std::size_t count = 0;
    std::string_view at[16];
};
std::optional<fields> read_described_list(std::string_view s, std::size_t limit);

}  // namespace iothub::amqp::detail
