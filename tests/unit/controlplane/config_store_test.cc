// The store-and-forward keys: [store], each bridge's store_* keys, and NanoMQ's
// [bridges.sqlite] mapped onto them (docs/store.md).
#include <gtest/gtest.h>

#include <string>

#include "controlplane/config.h"

namespace qbridge::cp {
namespace {

constexpr ConfigChecks kNoFiles{.files = false, .resolve = false};

std::string Bridge(const std::string& name, const std::string& extra = "") {
  return "[bridges.mqtt." + name + "]\nserver = \"mqtt-tcp://127.0.0.1:1883\"\n" + extra + "\n";
}

TEST(ConfigStore, StoreSectionAndBridgeKeys) {
  auto c = ParseConfig(R"([store]
dir = "/var/lib/qbridge"
fsync = "always"
commit_delay = "5ms"
segment_size = "16MB"
)" + Bridge("up", "store = true\nstore_max_bytes = \"256MB\"\nstore_max_messages = 5000\nstore_qos0 = true\nstore_memory = \"1MB\"") +
                           Bridge("other"),
                       "s.toml", kNoFiles);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->runtime.store.dir, "/var/lib/qbridge");
  EXPECT_EQ(c->runtime.store.fsync, "always");
  EXPECT_EQ(c->runtime.store.commit_delay_ns, 5 * dp::kMsNs);
  EXPECT_EQ(c->runtime.store.segment_bytes, 16ull << 20);
  ASSERT_EQ(c->runtime.bridges.size(), 2u);
  // Bridges come in name order (a TOML table's).
  const dp::BridgeDialSettings& up = c->runtime.bridges[1];
  EXPECT_EQ(up.name, "up");
  EXPECT_TRUE(up.store);
  EXPECT_EQ(up.store_max_bytes, 256ull << 20);
  EXPECT_EQ(up.store_max_messages, 5000u);
  EXPECT_TRUE(up.store_qos0);
  EXPECT_EQ(up.store_memory, 1u << 20);
  EXPECT_EQ(c->runtime.bridges[0].name, "other");
  EXPECT_FALSE(c->runtime.bridges[0].store);  // off unless asked for
  EXPECT_TRUE(c->notes.empty());
}

TEST(ConfigStore, NanoMqSqliteBlockMapsOntoTheStore) {
  auto c = ParseConfig(R"([bridges.sqlite]
enable = true
disk_cache_size = 102400
mounted_file_path = "/tmp/cache"
flush_mem_threshold = 100
resend_interval = 5000
)" + Bridge("a") + Bridge("b", "store = false"),
                       "nano.toml", kNoFiles);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->runtime.store.dir, "/tmp/cache");
  ASSERT_EQ(c->runtime.bridges.size(), 2u);
  EXPECT_TRUE(c->runtime.bridges[0].store);  // every bridge, unless it says otherwise
  EXPECT_EQ(c->runtime.bridges[0].store_max_messages, 102400u);
  EXPECT_FALSE(c->runtime.bridges[1].store);
  // What has no counterpart is named, not silently dropped.
  ASSERT_EQ(c->notes.size(), 2u);
  EXPECT_NE(c->notes[0].find("bridges.sqlite.flush_mem_threshold: not used"), std::string::npos) << c->notes[0];
  EXPECT_NE(c->notes[1].find("bridges.sqlite.resend_interval: not used"), std::string::npos) << c->notes[1];
}

TEST(ConfigStore, SqliteZeroCacheSizeMeansNoMessageCap) {
  auto c = ParseConfig("[bridges.sqlite]\ndisk_cache_size = 0\nmounted_file_path = \"/tmp/c\"\n" + Bridge("a"),
                       "z.toml", kNoFiles);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->runtime.bridges[0].store_max_messages, UINT64_MAX);
}

TEST(ConfigStore, StoreDirWinsOverMountedFilePathWithANote) {
  auto c = ParseConfig("[store]\ndir = \"/data/q\"\n[bridges.sqlite]\nmounted_file_path = \"/tmp/c\"\n" + Bridge("a"),
                       "w.toml", kNoFiles);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->runtime.store.dir, "/data/q");
  ASSERT_EQ(c->notes.size(), 1u);
  EXPECT_NE(c->notes[0].find("mounted_file_path"), std::string::npos);
}

TEST(ConfigStore, ProblemsAreReportedByKeyPath) {
  auto c = ParseConfig(R"([store]
fsync = "sometimes"
commit_delay = "5s"
segment_size = "12XB"
colour = 1
)" + Bridge("no-dir", "store = true\nstore_max_bytes = 10\nstore_max_messages = 0") +
                           Bridge("\"a/b\"", "store = true"),
                       "bad.toml", kNoFiles);
  ASSERT_FALSE(c.ok());
  const std::string m(c.status().message());
  for (const char* want :
       {"store.fsync: expected \"batch\"", "store.commit_delay: at most 1s", "store.segment_size: expected a size",
        "store.colour: unknown key", "bridges.mqtt.no-dir.store: needs [store] dir",
        "bridges.mqtt.no-dir.store_max_bytes: expected a size of at least 1024",
        "bridges.mqtt.no-dir.store_max_messages: expected an integer",
        "bridges.mqtt.a/b.store: the bridge's name names its store directory"}) {
    EXPECT_NE(m.find(want), std::string::npos) << "missing: " << want << "\nin:\n" << m;
  }
}

TEST(ConfigStore, SqliteEnabledNeedsADirectory) {
  auto c = ParseConfig("[bridges.sqlite]\nenable = true\n" + Bridge("a"), "d.toml", kNoFiles);
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("bridges.sqlite.mounted_file_path: required"), std::string::npos)
      << c.status();
}

}  // namespace
}  // namespace qbridge::cp
