// The blobs of storage-container endpoints: Avro object container files (read back here by a
// reader written from the Avro 1.11 specification, and by Apache's Python reader when it is
// installed) and JSON lines, each against what Azure writes.
#include "endpoints/blob_format.hpp"

#include "common/crypto.hpp"
#include "common/encoding.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>
#include <zlib.h>

namespace iothub::endpoints {
namespace {
namespace json = boost::json;
namespace fs = std::filesystem;

using props = std::vector<std::pair<std::string, std::string>>;

const std::string azure_schema =
    R"({"type":"record","name":"Message","namespace":"Microsoft.Azure.Devices","fields":[)"
    R"({"name":"EnqueuedTimeUtc","type":"string"},)"
    R"({"name":"Properties","type":{"type":"map","values":"string"}},)"
    R"({"name":"SystemProperties","type":{"type":"map","values":"string"}},)"
    R"({"name":"Body","type":["null","bytes"]}]})";

const std::string sas_auth =
    R"({"scope":"device","type":"sas","issuer":"iothub","acceptingIpFilterRule":null})";

sys_time at(std::string_view iso) {
    auto t = parse_iso8601(iso);
    EXPECT_TRUE(t) << iso;
    return t.value_or(sys_time{});
}

// JSON (pretty-printed, with numbers whose text must survive), binary, JSON in a charset
// parameter and mixed-case type, JSON-typed text that is not JSON, and JSON in UTF-16.
std::vector<blob_message> sample_batch() {
    std::vector<blob_message> b(5);
    b[0].enqueued_time = at("2018-07-05T15:11:42.685Z");
    b[0].properties = {{"temperatureAlert", "false"}};
    b[0].system_properties = {{"content-type", "application/json"},
                              {"content-encoding", "utf-8"},
                              {"message-id", "m-1"},
                              {"iothub-connection-device-id", "dev-1"},
                              {"iothub-connection-auth-method", sas_auth},
                              {"iothub-connection-auth-generation-id", "636632159551348090"},
                              {"iothub-message-source", "Telemetry"}};
    b[0].body = "{\n  \"temperature\": 22.50,\n  \"humidity\": 70,\n  \"note\": \"a \\\" b\"\n}";

    b[1].enqueued_time = at("2018-07-05T15:11:43Z");
    b[1].system_properties = {{"iothub-connection-device-id", "dev-2"},
                              {"iothub-connection-module-id", "mod-a"},
                              {"correlation-id", "c-9"}};
    b[1].body = std::string("\x00\x01\xff bin", 7);

    b[2].enqueued_time = at("2018-07-05T15:11:44.1234567Z");
    b[2].properties = {{"level", "storage"}, {"customerID", "6ce345b8"}};
    b[2].system_properties = {{"content-type", "Application/JSON; charset=utf-8"},
                              {"content-encoding", "UTF-8"},
                              {"iothub-connection-device-id", "dev-3"}};
    b[2].body = R"([1, 2.50, "x y"])";

    b[3].enqueued_time = at("2018-07-05T15:11:45Z");
    b[3].system_properties = {{"content-type", "application/json"},
                              {"content-encoding", "utf-8"},
                              {"iothub-connection-device-id", "dev-4"}};
    b[3].body = "{not json";

    b[4].enqueued_time = at("2018-07-05T15:11:46Z");
    b[4].system_properties = {{"content-type", "application/json"},
                              {"content-encoding", "utf-16"},
                              {"iothub-connection-device-id", "dev-5"}};
    b[4].body = R"({"a":1})";
    return b;
}

// What SystemProperties should hold for sample_batch()[0], in order.
props first_system_properties() {
    return {{"contentType", "application/json"},
            {"contentEncoding", "utf-8"},
            {"messageId", "m-1"},
            {"connectionDeviceId", "dev-1"},
            {"connectionAuthMethod", sas_auth},
            {"connectionDeviceGenerationId", "636632159551348090"},
            {"enqueuedTime", "2018-07-05T15:11:42.6850000Z"}};
}

// --- A minimal Avro object container reader, from the specification ---

class cursor {
  public:
    explicit cursor(std::string_view data) : data_(data) {}

    std::int64_t get_long() {
        std::uint64_t z = 0;
        for (int shift = 0;; shift += 7) {
            if (shift > 63) throw std::runtime_error("varint too long");
            auto b = static_cast<std::uint8_t>(take(1)[0]);
            z |= static_cast<std::uint64_t>(b & 0x7f) << shift;
            if (!(b & 0x80)) break;
        }
        return static_cast<std::int64_t>(z >> 1) ^ -static_cast<std::int64_t>(z & 1);
    }
    std::string get_bytes() {
        auto n = get_long();
        if (n < 0) throw std::runtime_error("negative length");
        return std::string(take(static_cast<std::size_t>(n)));
    }
    props get_map() {
        props out;
        for (auto n = get_long(); n != 0; n = get_long()) {
            if (n < 0) {  // a negative count is followed by the block's size in bytes
                n = -n;
                (void)get_long();
            }
            for (std::int64_t i = 0; i < n; ++i) {
                auto k = get_bytes();
                out.emplace_back(k, get_bytes());
            }
        }
        return out;
    }
    std::string_view take(std::size_t n) {
        if (data_.size() - pos_ < n) throw std::runtime_error("truncated");
        auto s = data_.substr(pos_, n);
        pos_ += n;
        return s;
    }
    bool at_end() const { return pos_ == data_.size(); }

  private:
    std::string_view data_;
    std::size_t pos_ = 0;
};

struct record {
    std::string enqueued_time_utc;
    props properties;
    props system_properties;
    std::int64_t body_branch = -1;
    std::string body;
};

struct container {
    props metadata;
    std::string sync;
    std::vector<std::int64_t> block_counts;
    std::vector<std::string> block_syncs;
    std::vector<record> records;
};

std::string inflate_raw(std::string_view in) {
    z_stream z{};
    if (inflateInit2(&z, -15) != Z_OK) throw std::runtime_error("inflateInit2");
    std::string out;
    char buf[16384];
    z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
    z.avail_in = static_cast<uInt>(in.size());
    int rc = Z_OK;
    while (rc != Z_STREAM_END) {
        z.next_out = reinterpret_cast<Bytef*>(buf);
        z.avail_out = sizeof buf;
        rc = inflate(&z, Z_NO_FLUSH);
        if (rc != Z_OK && rc != Z_STREAM_END) {
            inflateEnd(&z);
            throw std::runtime_error("not raw deflate");
        }
        out.append(buf, sizeof buf - z.avail_out);
    }
    bool rest = z.avail_in != 0;
    inflateEnd(&z);
    if (rest) throw std::runtime_error("bytes after the deflate stream");
    return out;
}

container read_container(std::string_view blob) {
    cursor c(blob);
    if (c.take(4) != std::string_view("Obj\x01", 4)) throw std::runtime_error("no magic");
    container f;
    f.metadata = c.get_map();
    f.sync = std::string(c.take(16));
    std::string codec;
    for (const auto& [k, v] : f.metadata)
        if (k == "avro.codec") codec = v;
    while (!c.at_end()) {
        f.block_counts.push_back(c.get_long());
        auto size = c.get_long();
        std::string data(c.take(static_cast<std::size_t>(size)));
        f.block_syncs.emplace_back(c.take(16));
        if (codec == "deflate") data = inflate_raw(data);
        cursor r(data);
        for (std::int64_t i = 0; i < f.block_counts.back(); ++i) {
            record rec;
            rec.enqueued_time_utc = r.get_bytes();
            rec.properties = r.get_map();
            rec.system_properties = r.get_map();
            rec.body_branch = r.get_long();
            if (rec.body_branch == 1) rec.body = r.get_bytes();
            f.records.push_back(std::move(rec));
        }
        if (!r.at_end()) throw std::runtime_error("block longer than its records");
    }
    return f;
}

void expect_sample_records(const std::vector<record>& records) {
    auto batch = sample_batch();
    ASSERT_EQ(records.size(), 5u);
    for (const auto& r : records) EXPECT_EQ(r.body_branch, 1);  // "bytes", never null
    for (std::size_t i = 0; i < 5; ++i) EXPECT_EQ(records[i].body, batch[i].body) << i;

    EXPECT_EQ(records[0].enqueued_time_utc, "2018-07-05T15:11:42.6850000Z");
    EXPECT_EQ(records[0].properties, (props{{"temperatureAlert", "false"}}));
    EXPECT_EQ(records[0].system_properties, first_system_properties());

    EXPECT_EQ(records[1].enqueued_time_utc, "2018-07-05T15:11:43.0000000Z");
    EXPECT_TRUE(records[1].properties.empty());
    EXPECT_EQ(records[1].system_properties,
              (props{{"connectionDeviceId", "dev-2"},
                     {"connectionModuleId", "mod-a"},
                     {"correlationId", "c-9"},
                     {"enqueuedTime", "2018-07-05T15:11:43.0000000Z"}}));

    EXPECT_EQ(records[2].enqueued_time_utc, "2018-07-05T15:11:44.1234567Z");
    EXPECT_EQ(records[2].properties, (props{{"level", "storage"}, {"customerID", "6ce345b8"}}));
}

TEST(blob_format, avro_is_azures_container_with_one_block_of_records) {
    auto batch = sample_batch();
    auto blob = encode_blob(batch, blob_encoding::avro);
    ASSERT_EQ(blob.substr(0, 4), std::string("Obj\x01", 4));
    auto f = read_container(blob);
    EXPECT_EQ(f.metadata, (props{{"avro.codec", "null"}, {"avro.schema", azure_schema}}));
    EXPECT_EQ(f.sync.size(), 16u);
    EXPECT_EQ(f.block_counts, (std::vector<std::int64_t>{5}));
    EXPECT_EQ(f.block_syncs, (std::vector<std::string>{f.sync}));
    EXPECT_EQ(blob.substr(blob.size() - 16), f.sync);
    expect_sample_records(f.records);

    // Each blob has its own marker, so a marker cannot appear by chance across blobs joined.
    EXPECT_NE(read_container(encode_blob(batch, blob_encoding::avro)).sync, f.sync);
}

TEST(blob_format, avro_deflate_compresses_each_block_raw) {
    auto batch = sample_batch();
    for (int i = 0; i < 20; ++i) batch.push_back(batch[0]);  // compressible
    auto plain = encode_blob(batch, blob_encoding::avro);
    auto blob = encode_blob(batch, blob_encoding::avro_deflate);
    auto f = read_container(blob);
    EXPECT_EQ(f.metadata, (props{{"avro.codec", "deflate"}, {"avro.schema", azure_schema}}));
    EXPECT_EQ(f.block_counts, (std::vector<std::int64_t>{25}));
    EXPECT_EQ(f.block_syncs, (std::vector<std::string>{f.sync}));
    EXPECT_LT(blob.size(), plain.size() / 2);
    f.records.resize(5);
    expect_sample_records(f.records);
}

TEST(blob_format, large_batches_split_into_blocks_each_ending_with_the_sync_marker) {
    std::vector<blob_message> batch(10);
    for (std::size_t i = 0; i < batch.size(); ++i) {
        batch[i].enqueued_time = at("2024-01-01T00:00:00Z");
        batch[i].body = std::string(20000, static_cast<char>('a' + i));
    }
    for (auto encoding : {blob_encoding::avro, blob_encoding::avro_deflate}) {
        auto f = read_container(encode_blob(batch, encoding));
        // A block closes once its records pass 64 KiB: four 20 KB records, four, then two.
        EXPECT_EQ(f.block_counts, (std::vector<std::int64_t>{4, 4, 2}));
        EXPECT_EQ(f.block_syncs, (std::vector<std::string>(3, f.sync)));
        ASSERT_EQ(f.records.size(), 10u);
        for (std::size_t i = 0; i < 10; ++i) EXPECT_EQ(f.records[i].body, batch[i].body);
        EXPECT_EQ(f.records[9].system_properties,
                  (props{{"enqueuedTime", "2024-01-01T00:00:00.0000000Z"}}));
    }
}

TEST(blob_format, enqueued_time_of_the_message_wins_and_message_source_is_left_out) {
    std::vector<blob_message> batch(1);
    batch[0].enqueued_time = at("2024-01-01T00:00:00Z");
    batch[0].system_properties = {{"iothub-enqueuedtime", "2024-01-01T00:00:01.0000000Z"},
                                  {"iothub-message-source", "twinChangeEvents"},
                                  {"user-id", "u"},
                                  {"dt-dataschema", "dtmi:x;1"}};
    auto f = read_container(encode_blob(batch, blob_encoding::avro));
    ASSERT_EQ(f.records.size(), 1u);
    EXPECT_EQ(f.records[0].system_properties,
              (props{{"userId", "u"},
                     {"dt-dataschema", "dtmi:x;1"},
                     {"enqueuedTime", "2024-01-01T00:00:01.0000000Z"}}));
}

std::vector<std::string> split_lines(const std::string& s) {
    std::vector<std::string> lines;
    std::size_t start = 0;
    for (auto nl = s.find('\n'); nl != std::string::npos; nl = s.find('\n', start)) {
        lines.push_back(s.substr(start, nl - start));
        start = nl + 1;
    }
    lines.push_back(s.substr(start));
    return lines;
}

json::object object_of(const props& p) {
    json::object o;
    for (const auto& [k, v] : p) o[k] = v;
    return o;
}

TEST(blob_format, json_is_one_record_per_line_with_json_bodies_inline) {
    auto batch = sample_batch();
    auto blob = encode_blob(batch, blob_encoding::json);
    ASSERT_FALSE(blob.empty());
    EXPECT_NE(blob.back(), '\n');
    auto lines = split_lines(blob);
    ASSERT_EQ(lines.size(), 5u);
    std::vector<json::object> records;
    for (const auto& line : lines) {
        boost::system::error_code ec;
        auto v = json::parse(line, ec);
        ASSERT_FALSE(ec) << line;
        ASSERT_TRUE(v.is_object()) << line;
        records.push_back(v.as_object());
    }

    // Azure's field order, and the device's own number text kept (22.50, not 2.25E1).
    EXPECT_EQ(lines[0],
              R"({"EnqueuedTimeUtc":"2018-07-05T15:11:42.6850000Z",)"
              R"("Properties":{"temperatureAlert":"false"},)"
              R"("SystemProperties":{"contentType":"application/json","contentEncoding":"utf-8",)"
              R"("messageId":"m-1","connectionDeviceId":"dev-1","connectionAuthMethod":)" +
                  json::serialize(json::string(sas_auth)) +
                  R"(,"connectionDeviceGenerationId":"636632159551348090",)"
                  R"("enqueuedTime":"2018-07-05T15:11:42.6850000Z"},)"
                  R"("Body":{"temperature":22.50,"humidity":70,"note":"a \" b"}})");
    EXPECT_EQ(records[0]["SystemProperties"], object_of(first_system_properties()));
    ASSERT_TRUE(records[0]["Body"].is_object());
    EXPECT_EQ(records[0]["Body"].at("temperature").as_double(), 22.5);
    EXPECT_EQ(records[0]["Body"].at("humidity").as_int64(), 70);
    EXPECT_EQ(records[0]["Body"].at("note").as_string(), "a \" b");

    EXPECT_EQ(records[1]["Body"], json::value(base64_encode(batch[1].body)));
    EXPECT_EQ(records[1]["Body"], json::value("AAH/IGJpbg=="));
    EXPECT_EQ(records[1]["Properties"], json::object{});

    ASSERT_TRUE(records[2]["Body"].is_array());
    EXPECT_EQ(json::serialize(records[2]["Body"].as_array()[2]), R"("x y")");
    EXPECT_NE(lines[2].find(R"("Body":[1,2.50,"x y"]})"), std::string::npos) << lines[2];
    EXPECT_EQ(records[2]["Properties"],
              object_of({{"level", "storage"}, {"customerID", "6ce345b8"}}));

    EXPECT_EQ(records[3]["Body"], json::value(base64_encode("{not json")));
    EXPECT_EQ(records[4]["Body"], json::value(base64_encode(R"({"a":1})")));
    EXPECT_EQ(records[4]["EnqueuedTimeUtc"], json::value("2018-07-05T15:11:46.0000000Z"));
}

TEST(blob_format, empty_batch_is_a_header_only_container_or_an_empty_blob) {
    for (auto [encoding, codec] : {std::pair{blob_encoding::avro, "null"},
                                   std::pair{blob_encoding::avro_deflate, "deflate"}}) {
        auto blob = encode_blob({}, encoding);
        auto f = read_container(blob);
        EXPECT_EQ(f.metadata, (props{{"avro.codec", codec}, {"avro.schema", azure_schema}}));
        EXPECT_TRUE(f.block_counts.empty());
        EXPECT_TRUE(f.records.empty());
        // Magic, the map (count, two keys and values, end), the marker.
        EXPECT_EQ(blob.size(), 4 + 1 + (1 + 10 + 1 + std::string_view(codec).size()) +
                                   (1 + 11 + 2 + azure_schema.size()) + 1 + 16);
    }
    EXPECT_EQ(encode_blob({}, blob_encoding::json), "");
}

// --- Apache Avro's own reader ---

// Debian's python3-avro belongs to /usr/bin/python3, which may not be the first python3 found.
std::string python_with_avro() {
    for (const char* py : {"python3", "/usr/bin/python3"}) {
        auto probe = std::string(py) + " -c 'import avro.datafile, avro.io' >/dev/null 2>&1";
        if (std::system(probe.c_str()) == 0) return py;
    }
    return {};
}

class routing_blob_python : public testing::Test {
  protected:
    void SetUp() override {
        python_ = python_with_avro();
        if (python_.empty()) GTEST_SKIP() << "Python's avro package is not installed";
        dir_ = fs::temp_directory_path() / ("iothub-blob-" + hex_encode(random_bytes(6)));
        fs::create_directories(dir_);
        std::ofstream(dir_ / "read.py") << R"(import base64, json, sys
import avro.datafile, avro.io
with open(sys.argv[1], 'rb') as f:
    reader = avro.datafile.DataFileReader(f, avro.io.DatumReader())
    print(json.dumps({'codec': reader.codec,
                      'schema': reader.datum_reader.writers_schema.fullname}))
    for r in reader:
        r['Body'] = base64.b64encode(r['Body']).decode()
        print(json.dumps(r))
)";
    }
    void TearDown() override {
        if (!dir_.empty()) fs::remove_all(dir_);
    }

    // Apache's reader's view of a blob: its header line, then one JSON object per record.
    std::vector<json::value> read_with_python(const std::string& blob) {
        auto file = dir_ / "blob.avro";
        std::ofstream(file, std::ios::binary) << blob;
        auto command = python_ + " " + (dir_ / "read.py").string() + " " + file.string() + " 2>&1";
        std::FILE* p = ::popen(command.c_str(), "r");
        if (!p) throw std::runtime_error("popen");
        std::string out;
        char buf[4096];
        for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
        int status = ::pclose(p);
        EXPECT_EQ(status, 0) << out;
        std::vector<json::value> lines;
        for (const auto& line : split_lines(out))
            if (!line.empty()) lines.push_back(json::parse(line));
        return lines;
    }

    std::string python_;
    fs::path dir_;
};

TEST_F(routing_blob_python, apache_avro_reads_both_codecs) {
    auto batch = sample_batch();
    for (auto [encoding, codec] : {std::pair{blob_encoding::avro, "null"},
                                   std::pair{blob_encoding::avro_deflate, "deflate"}}) {
        auto lines = read_with_python(encode_blob(batch, encoding));
        ASSERT_EQ(lines.size(), 6u) << codec;
        EXPECT_EQ(lines[0], json::parse(std::string(R"({"codec":")") + codec +
                                        R"(","schema":"Microsoft.Azure.Devices.Message"})"));
        EXPECT_EQ(lines[1], json::parse(R"({"EnqueuedTimeUtc":"2018-07-05T15:11:42.6850000Z",
            "Properties":{"temperatureAlert":"false"},
            "SystemProperties":{"contentType":"application/json","contentEncoding":"utf-8",
              "messageId":"m-1","connectionDeviceId":"dev-1",
              "connectionAuthMethod":"{\"scope\":\"device\",\"type\":\"sas\",\"issuer\":\"iothub\",\"acceptingIpFilterRule\":null}",
              "connectionDeviceGenerationId":"636632159551348090",
              "enqueuedTime":"2018-07-05T15:11:42.6850000Z"},
            "Body":")" + base64_encode(batch[0].body) +
                                        R"("})"));
        EXPECT_EQ(lines[2], json::parse(R"({"EnqueuedTimeUtc":"2018-07-05T15:11:43.0000000Z",
            "Properties":{},
            "SystemProperties":{"connectionDeviceId":"dev-2","connectionModuleId":"mod-a",
              "correlationId":"c-9","enqueuedTime":"2018-07-05T15:11:43.0000000Z"},
            "Body":"AAH/IGJpbg=="})"));
        for (std::size_t i = 2; i < 5; ++i)
            EXPECT_EQ(lines[i + 1].at("Body"), json::value(base64_encode(batch[i].body))) << i;
    }
}

TEST_F(routing_blob_python, apache_avro_reads_many_blocks_and_empty_containers) {
    std::vector<blob_message> batch(10);
    for (std::size_t i = 0; i < batch.size(); ++i) {
        batch[i].enqueued_time = at("2024-01-01T00:00:00Z");
        batch[i].body = std::string(20000, static_cast<char>('a' + i));
    }
    for (auto encoding : {blob_encoding::avro, blob_encoding::avro_deflate}) {
        auto lines = read_with_python(encode_blob(batch, encoding));
        ASSERT_EQ(lines.size(), 11u);
        for (std::size_t i = 0; i < 10; ++i)
            EXPECT_EQ(lines[i + 1].at("Body"), json::value(base64_encode(batch[i].body))) << i;

        auto empty = read_with_python(encode_blob({}, encoding));
        ASSERT_EQ(empty.size(), 1u);  // the header line, no records
        EXPECT_EQ(empty[0].at("schema"), json::value("Microsoft.Azure.Devices.Message"));
    }
}

}  // namespace
}  // namespace iothub::endpoints
