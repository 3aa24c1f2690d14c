// Thin, allocation-light wrappers over OpenSSL for the primitives the hub signs and checks with.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace iothub {

// Raw 32-byte HMAC-SHA256 of `message` under `key`.
std::string hmac_sha256(std::string_view key, std::string_view message);

std::string sha1(std::string_view data);
std::string sha256(std::string_view data);

// Cryptographically secure random bytes; aborts if the system RNG is unavailable, because a
// hub that cannot make keys must not start.
std::string random_bytes(std::size_t count);

// A fresh symmetric key as Azure makes them: 32 random bytes, Base64.
std::string generate_key();

// A random (version 4) UUID in its 36-character text form.
std::string random_uuid();

// Compares secrets without leaking where they differ through timing.
bool constant_time_equal(std::string_view a, std::string_view b) noexcept;

}  // namespace iothub
