#include "config/settings.hpp"

#include "common/crypto.hpp"
#include "common/encoding.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

namespace iothub::config {
namespace {

class Settings : public ::testing::Test {
  protected:
    void SetUp() override { std::filesystem::create_directories(dir_); }
    void TearDown() override { std::filesystem::remove_all(dir_); }

    env_lookup env(std::map<std::string, std::string> vars) {
        return [vars](const std::string& k) -> std::optional<std::string> {
            auto it = vars.find(k);
            if (it == vars.end()) return std::nullopt;
            return it->second;
        };
    }
    std::filesystem::path write(std::string_view name, std::string_view text) {
        auto p = dir_ / name;
        std::ofstream(p) << text;
        return p;
    }

    std::filesystem::path dir_ =
        std::filesystem::temp_directory_path() / ("iothub-cfg-" + hex_encode(random_bytes(6)));
};

TEST_F(Settings, DefaultsAreAzuresPorts) {
    auto s = load(std::nullopt, {{"data_dir", dir_.string()}}, env({}));
    ASSERT_TRUE(s) << s.error().message();
    EXPECT_EQ(s->https_port, 443);
    EXPECT_EQ(s->mqtt_port, 8883);
    EXPECT_EQ(s->amqp_port, 5671);
    EXPECT_FALSE(s->mqtt_plain_enabled);
    EXPECT_FALSE(s->hostname.has_value());
    EXPECT_EQ(s->storage_engine, "rocksdb");
}

TEST_F(Settings, FlagsBeatEnvironmentWhichBeatsTheFile) {
    auto file = write("hub.toml", R"(
hostname = "file.example"
aliases = ["a.example", "b.example"]
[listen]
https_port = 1443
mqtt_port = 1883
[storage]
sync = false
)");
    auto s = load(file, {{"listen.https_port", "3443"}},
                  env({{"IOTHUB_HTTPS_PORT", "2443"}, {"IOTHUB_MQTT_PORT", "2883"}}));
    ASSERT_TRUE(s) << s.error().message();
    EXPECT_EQ(s->hostname, "file.example");
    EXPECT_EQ(s->aliases, (std::vector<std::string>{"a.example", "b.example"}));
    EXPECT_EQ(s->https_port, 3443);
    EXPECT_EQ(s->mqtt_port, 2883);
    EXPECT_FALSE(s->storage_sync);
}

TEST_F(Settings, TheRoutingTableCarriesTheDocumentBesideItsSettings) {
    auto file = write("hub.toml", R"(
[routing]
max_routes = 20
decide_on_append = false
[[routing.endpoints.eventHubs]]
name = "hot"
[[routing.routes]]
name = "critical"
source = "DeviceMessages"
condition = "level = 'critical'"
endpointNames = ["hot"]
isEnabled = true
)");
    auto s = load(file, {}, env({}));
    ASSERT_TRUE(s) << s.error().message();
    EXPECT_EQ(s->routing_max_routes, 20u);
    EXPECT_FALSE(s->routing_decide_on_append);
    EXPECT_EQ(s->routing_document.find("decide_on_append"), std::string::npos);
    EXPECT_NE(s->routing_document.find("\"critical\""), std::string::npos) << s->routing_document;
    EXPECT_NE(s->routing_document.find("\"eventHubs\""), std::string::npos);
    EXPECT_EQ(s->routing_document.find("max_routes"), std::string::npos);
    auto unknown = load(write("bad.toml", "[routing]\nnosuch = 1\n"), {}, env({}));
    EXPECT_FALSE(unknown) << "other keys of [routing] are still settings";
}

TEST_F(Settings, RetentionTakesDurationsWithUnits) {
    for (auto [text, seconds] :
         {std::pair{"90s", 90}, {"30m", 1800}, {"24h", 86400}, {"7d", 604800}}) {
        auto s =
            load(std::nullopt, {{"data_dir", dir_.string()}, {"events.retention", text}}, env({}));
        ASSERT_TRUE(s) << s.error().message();
        EXPECT_EQ(s->retention.count(), seconds) << text;
    }
    for (auto bad : {"24", "0h", "5y", "h", "400d"})
        EXPECT_FALSE(
            load(std::nullopt, {{"data_dir", dir_.string()}, {"events.retention", bad}}, env({})))
            << bad;
}

TEST_F(Settings, ConsumerGroupLimitComesFromTheTelemetryTable) {
    auto plain = load(std::nullopt, {{"data_dir", dir_.string()}}, env({}));
    ASSERT_TRUE(plain) << plain.error().message();
    EXPECT_EQ(plain->max_consumer_groups, 20u);
    write("cg.toml", "[telemetry]\nmax_consumer_groups = 5\n");
    auto s = load(dir_ / "cg.toml", {{"data_dir", dir_.string()}}, env({}));
    ASSERT_TRUE(s) << s.error().message();
    EXPECT_EQ(s->max_consumer_groups, 5u);
    auto e = load(std::nullopt, {{"data_dir", dir_.string()}},
                  env({{"IOTHUB_MAX_CONSUMER_GROUPS", "7"}}));
    ASSERT_TRUE(e) << e.error().message();
    EXPECT_EQ(e->max_consumer_groups, 7u);
    for (const char* bad : {"0", "501", "x"})
        EXPECT_FALSE(load(std::nullopt,
                          {{"data_dir", dir_.string()}, {"telemetry.max_consumer_groups", bad}},
                          env({})))
            << bad;
}

TEST_F(Settings, RoutingTrustsAnExtraCaFileFromTheRoutingTable) {
    auto plain = load(std::nullopt, {{"data_dir", dir_.string()}}, env({}));
    ASSERT_TRUE(plain) << plain.error().message();
    EXPECT_TRUE(plain->routing_trusted_ca_file.empty());
    write("ca.toml", "[routing]\ntrusted_ca_file = \"/etc/receivers/ca.pem\"\n");
    auto s = load(dir_ / "ca.toml", {{"data_dir", dir_.string()}}, env({}));
    ASSERT_TRUE(s) << s.error().message();
    EXPECT_EQ(s->routing_trusted_ca_file, "/etc/receivers/ca.pem");
    auto e = load(std::nullopt, {{"data_dir", dir_.string()}},
                  env({{"IOTHUB_ROUTING_TRUSTED_CA_FILE", "/tmp/env-ca.pem"}}));
    ASSERT_TRUE(e) << e.error().message();
    EXPECT_EQ(e->routing_trusted_ca_file, "/tmp/env-ca.pem");
    auto f = load(dir_ / "ca.toml",
                  {{"data_dir", dir_.string()}, {"routing.trusted_ca_file", "/tmp/flag-ca.pem"}},
                  env({}));
    ASSERT_TRUE(f) << f.error().message();
    EXPECT_EQ(f->routing_trusted_ca_file, "/tmp/flag-ca.pem");
}

TEST_F(Settings, C2dLimitsComeFromTheC2dTable) {
    write("c2d.toml", "[c2d]\nmax_depth = 200\nlock_timeout_seconds = 30\n");
    auto s = load(dir_ / "c2d.toml", {{"data_dir", dir_.string()}},
                  env({{"IOTHUB_C2D_MAX_DELIVERY_COUNT", "3"}}));
    ASSERT_TRUE(s) << s.error().message();
    EXPECT_EQ(s->c2d_max_depth, 200u);
    EXPECT_EQ(s->c2d_lock_timeout.count(), 30);
    EXPECT_EQ(s->c2d_max_delivery_count, 3u);
    EXPECT_EQ(s->c2d_default_ttl.count(), 3600);
    EXPECT_EQ(s->c2d_max_message_bytes, 65536u);
    for (auto [key, bad] : {std::pair{"c2d.max_depth", "0"},
                            {"c2d.max_depth", "5001"},
                            {"c2d.max_delivery_count", "101"},
                            {"c2d.default_ttl_seconds", "59"},
                            {"c2d.max_message_bytes", "0"}})
        EXPECT_FALSE(load(std::nullopt, {{"data_dir", dir_.string()}, {key, bad}}, env({})))
            << key << " = " << bad;
    auto inverted = load(std::nullopt,
                         {{"data_dir", dir_.string()},
                          {"c2d.default_ttl_seconds", "7200"},
                          {"c2d.max_ttl_seconds", "3600"}},
                         env({}));
    ASSERT_FALSE(inverted);
    EXPECT_NE(inverted.error().message().find("max_ttl"), std::string::npos);
}

TEST_F(Settings, TheDeviceConnectRateComesFromTheLimitsTable) {
    auto plain = load(std::nullopt, {{"data_dir", dir_.string()}}, env({}));
    ASSERT_TRUE(plain) << plain.error().message();
    EXPECT_EQ(plain->device_connects_per_second, 0u) << "unlimited unless asked";
    EXPECT_EQ(plain->device_connects_burst, 0u);
    write("rate.toml", "[limits]\ndevice_connects_per_second = 100\n");
    auto s = load(dir_ / "rate.toml", {{"data_dir", dir_.string()}},
                  env({{"IOTHUB_DEVICE_CONNECTS_BURST", "500"}}));
    ASSERT_TRUE(s) << s.error().message();
    EXPECT_EQ(s->device_connects_per_second, 100u);
    EXPECT_EQ(s->device_connects_burst, 500u);
    for (const char* bad : {"-1", "1000001", "x"})
        EXPECT_FALSE(load(std::nullopt,
                          {{"data_dir", dir_.string()}, {"limits.device_connects_per_second", bad}},
                          env({})))
            << bad;
}

TEST_F(Settings, ReadsTheDataDirectorysFileWhenNoneIsNamed) {
    write("iothub.toml", "hostname = \"dir.example\"\n");
    auto s = load(std::nullopt, {{"data_dir", dir_.string()}}, env({}));
    ASSERT_TRUE(s) << s.error().message();
    EXPECT_EQ(s->hostname, "dir.example");
}

TEST_F(Settings, RejectsWhatItCannotUse) {
    auto fails = [&](std::optional<std::filesystem::path> file, overrides flags,
                     std::map<std::string, std::string> vars, std::string_view needle) {
        flags.emplace("data_dir", dir_.string());
        auto s = load(file, flags, env(vars));
        ASSERT_FALSE(s);
        EXPECT_NE(s.error().message().find(needle), std::string::npos) << s.error().message();
    };
    fails(std::nullopt, {{"listen.https_port", "70000"}}, {}, "65535");
    fails(std::nullopt, {}, {{"IOTHUB_STORAGE", "postgres"}}, "rocksdb");
    fails(std::nullopt, {}, {{"IOTHUB_STORAGE_SYNC", "maybe"}}, "true or false");
    fails(write("typo.toml", "[listen]\nhttps_prot = 1\n"), {}, {},
          "unknown setting 'listen.https_prot'");
    fails(write("broken.toml", "hostname = \n"), {}, {}, "line");
    fails(dir_ / "missing.toml", {}, {}, "not found");
    fails(std::nullopt, {{"tls.cert", "/x.pem"}}, {}, "together");
}

TEST_F(Settings, EverySettingHasAFlagAndAnEnvironmentVariable) {
    for (const auto& s : all_settings()) {
        EXPECT_EQ(s.flag.rfind("--", 0), 0u) << s.key;
        EXPECT_EQ(s.env.rfind("IOTHUB_", 0), 0u) << s.key;
        EXPECT_FALSE(s.help.empty()) << s.key;
    }
}

}  // namespace
}  // namespace iothub::config
