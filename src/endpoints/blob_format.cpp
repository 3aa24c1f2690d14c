#include "endpoints/blob_format.hpp"

#include "common/crypto.hpp"
#include "common/encoding.hpp"
#include "common/error.hpp"
#include "routing/evaluation.hpp"

#include <boost/json.hpp>

#include <cstdint>
#include <new>
#include <utility>
#include <vector>
#include <zlib.h>

namespace iothub::endpoints {
namespace {
namespace json = boost::json;

// Byte for byte the schema Azure writes in `avro.schema` (a routed blob shown in
// MicrosoftDocs/azure-docs issue #11269). Body is the ["null","bytes"] union there, always written
// as bytes.
constexpr std::string_view message_schema =
    R"({"type":"record","name":"Message","namespace":"Microsoft.Azure.Devices","fields":[)"
    R"({"name":"EnqueuedTimeUtc","type":"string"},)"
    R"({"name":"Properties","type":{"type":"map","values":"string"}},)"
    R"({"name":"SystemProperties","type":{"type":"map","values":"string"}},)"
    R"({"name":"Body","type":["null","bytes"]}]})";

// A block is closed once its records reach this size (Avro's own writers sync about every 64 KB):
// readers hold a whole block in memory, and a reader may start at any sync marker.
constexpr std::size_t block_bytes = 64 * 1024;

using pairs = std::vector<std::pair<std::string_view, std::string_view>>;

// SystemProperties under the names Azure writes in both the Avro and the JSON encoding
// (connectionDeviceId, connectionModuleId, connectionAuthMethod, connectionDeviceGenerationId,
// contentType, contentEncoding, messageId, correlationId, userId, enqueuedTime: the routed blobs in
// MicrosoftDocs/azure-docs #11269 and Azure/Industrial-IoT #126, and the names of
// Microsoft.Azure.Devices.Routing.Core.SystemProperties in azure-iotedge). Those are the routing
// query keywords, so keyword_of gives them; names without a keyword pass as they are.
// iothub-message-source is left out, as in every blob Azure writes for telemetry, and
// enqueuedTime always comes last and is always present, as there.
pairs azure_system_properties(const blob_message& m, const std::string& enqueued) {
    pairs out;
    std::string_view enqueued_time = enqueued;
    for (const auto& [k, v] : m.system_properties) {
        if (k == "iothub-message-source") continue;
        if (k == "iothub-enqueuedtime") {
            enqueued_time = v;
            continue;
        }
        out.emplace_back(keyword_of(k), v);
    }
    out.emplace_back("enqueuedTime", enqueued_time);
    return out;
}

// --- Avro binary encoding (Avro 1.11 specification, "Binary Encoding") ---

void put_long(std::string& out, std::int64_t v) {
    auto z = (static_cast<std::uint64_t>(v) << 1) ^ static_cast<std::uint64_t>(v >> 63);
    while (z >= 0x80) {
        out.push_back(static_cast<char>((z & 0x7f) | 0x80));
        z >>= 7;
    }
    out.push_back(static_cast<char>(z));
}

void put_bytes(std::string& out, std::string_view s) {
    put_long(out, static_cast<std::int64_t>(s.size()));
    out.append(s);
}

template <class Pairs>
void put_map(std::string& out, const Pairs& entries) {
    if (!entries.empty()) {
        put_long(out, static_cast<std::int64_t>(entries.size()));
        for (const auto& [k, v] : entries) {
            put_bytes(out, k);
            put_bytes(out, v);
        }
    }
    put_long(out, 0);
}

void put_record(std::string& out, const blob_message& m) {
    auto enqueued = format_iso8601(m.enqueued_time);
    put_bytes(out, enqueued);
    put_map(out, m.properties);
    put_map(out, azure_system_properties(m, enqueued));
    put_long(out, 1);  // the union's "bytes" branch
    put_bytes(out, m.body);
}

// RFC 1951 with no zlib header or checksum: what Avro's deflate codec means.
std::string raw_deflate(std::string_view in) {
    z_stream z{};
    int rc = deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY);
    if (rc == Z_MEM_ERROR) throw std::bad_alloc();
    if (rc != Z_OK) throw error_exception(error(errc::server_error, "deflateInit2 refused"));
    // Room for the worst case, so one Z_FINISH call ends the stream. A block is block_bytes plus
    // at most one message, far below what zlib's 32-bit counts hold.
    std::string out(deflateBound(&z, in.size()), '\0');
    z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
    z.avail_in = static_cast<uInt>(in.size());
    z.next_out = reinterpret_cast<Bytef*>(out.data());
    z.avail_out = static_cast<uInt>(out.size());
    rc = deflate(&z, Z_FINISH);
    out.resize(z.total_out);
    deflateEnd(&z);
    if (rc != Z_STREAM_END) throw error_exception(error(errc::server_error, "deflate failed"));
    return out;
}

std::string avro_container(std::span<const blob_message> messages, bool deflate) {
    std::string out = "Obj\x01";
    // Metadata in the order Azure writes it.
    put_long(out, 2);
    put_bytes(out, "avro.codec");
    put_bytes(out, deflate ? "deflate" : "null");
    put_bytes(out, "avro.schema");
    put_bytes(out, message_schema);
    put_long(out, 0);
    const std::string sync = random_bytes(16);
    out += sync;

    std::string block;
    std::int64_t count = 0;
    auto close_block = [&] {
        if (count == 0) return;
        std::string data = deflate ? raw_deflate(block) : std::move(block);
        put_long(out, count);
        put_long(out, static_cast<std::int64_t>(data.size()));
        out += data;
        out += sync;
        block.clear();
        count = 0;
    };
    for (const auto& m : messages) {
        put_record(block, m);
        ++count;
        if (block.size() >= block_bytes) close_block();
    }
    close_block();
    return out;
}

// --- JSON ---

// Azure writes the body as JSON only when the message says it is JSON in UTF-8 (a UTF-16 or -32
// body would need transcoding first).
bool utf8_json(const blob_message& m) {
    std::string_view type, encoding;
    for (const auto& [k, v] : m.system_properties) {
        if (k == "content-type") type = v;
        if (k == "content-encoding") encoding = v;
    }
    return iequals(encoding, "utf-8") && body_is_json(type, encoding);
}

// The body's own text with whitespace outside strings removed. Re-serializing a parsed value
// would rewrite the device's numbers (Boost.JSON prints 49.9 as 4.99E1), and a pretty-printed
// body must not break the one-record-per-line layout. Only for text that parsed as JSON, so
// strings hold no raw line breaks and every quote inside one is escaped.
std::string minified(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    bool in_string = false, escaped = false;
    for (char c : text) {
        if (in_string) {
            if (escaped)
                escaped = false;
            else if (c == '\\')
                escaped = true;
            else if (c == '"')
                in_string = false;
        } else if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
            continue;
        } else if (c == '"') {
            in_string = true;
        }
        out.push_back(c);
    }
    return out;
}

std::string json_body(const blob_message& m) {
    if (utf8_json(m)) {
        boost::system::error_code ec;
        (void)json::parse(m.body, ec);  // validation only; the text itself is kept
        if (!ec) return minified(m.body);
    }
    return json::serialize(json::string(base64_encode(m.body)));
}

std::string json_lines(std::span<const blob_message> messages) {
    std::string out;
    for (const auto& m : messages) {
        auto enqueued = format_iso8601(m.enqueued_time);
        json::object properties, system;
        for (const auto& [k, v] : m.properties) properties[k] = v;
        for (const auto& [k, v] : azure_system_properties(m, enqueued)) system[k] = v;
        json::object record;
        record["EnqueuedTimeUtc"] = enqueued;
        record["Properties"] = std::move(properties);
        record["SystemProperties"] = std::move(system);
        if (!out.empty()) out += '\n';
        // Body is spliced in as text (see minified): the record is closed by hand.
        auto head = json::serialize(record);
        head.pop_back();
        out += head;
        out += R"(,"Body":)";
        out += json_body(m);
        out += '}';
    }
    return out;
}

}  // namespace

std::string encode_blob(std::span<const blob_message> messages, blob_encoding encoding) {
    switch (encoding) {
        case blob_encoding::avro:
            return avro_container(messages, false);
        case blob_encoding::avro_deflate:
            return avro_container(messages, true);
        case blob_encoding::json:
            return json_lines(messages);
    }
    return {};
}

}  // namespace iothub::endpoints
