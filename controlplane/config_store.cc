// The config's store-and-forward keys (docs/store.md): [store] (where custody logs live and
// how they commit), each bridge's store_* keys, and NanoMQ's [bridges.sqlite] block mapped
// onto them, with a note for what does not map.
#include "controlplane/config_reader.h"

#include "absl/strings/str_cat.h"

namespace qbridge::cp::config_detail {

void ReadStore(Reader& r, const toml::table& root, AppConfig* cfg, StoreDefaults* defaults) {
  dp::RuntimeConfig::Store& st = cfg->runtime.store;
  if (const toml::table* s = root.get_as<toml::table>("store")) {
    r.Unknown(*s, "store", {"dir", "fsync", "commit_delay", "segment_size"});
    st.dir = PathKey(r, *s, "store", "dir");
    if (auto v = r.Str(*s, "store", "fsync")) {
      if (*v != "batch" && *v != "always" && *v != "off") {
        r.Error("store.fsync", "expected \"batch\" (one fdatasync per group commit), \"always\" "
                               "(one per message) or \"off\" (survives a crash of qbridge, not of the machine)");
      } else {
        st.fsync = *v;
      }
    }
    if (auto v = r.Duration(*s, "store", "commit_delay")) {
      if (*v > dp::kSecNs) {
        r.Error("store.commit_delay", "at most 1s: publishers wait this long for their PUBACK");
      } else {
        st.commit_delay_ns = *v;
      }
    }
    if (auto v = r.Bytes(*s, "store", "segment_size", 64 << 10)) st.segment_bytes = *v;
  }
  // NanoMQ's disk cache for bridges: every bridge keeps a custody log unless it says otherwise.
  const toml::table* bs = root.get_as<toml::table>("bridges");
  const toml::table* sq = bs ? bs->get_as<toml::table>("sqlite") : nullptr;
  if (sq == nullptr) return;
  const std::string path = "bridges.sqlite";
  r.Unknown(*sq, path, {"enable", "disk_cache_size", "mounted_file_path", "flush_mem_threshold",
                        "resend_interval"});
  defaults->store = r.Bool(*sq, path, "enable").value_or(true);
  if (auto v = r.Int(*sq, path, "disk_cache_size", 0, INT64_MAX)) {
    // NanoMQ: the most messages cached; 0 turns the limit off.
    defaults->max_messages = *v == 0 ? UINT64_MAX : uint64_t(*v);
  }
  const std::string mounted = PathKey(r, *sq, path, "mounted_file_path");
  if (!mounted.empty()) {
    if (st.dir.empty()) {
      st.dir = mounted;
    } else if (mounted != st.dir) {
      cfg->notes.push_back(absl::StrCat(path, ".mounted_file_path: [store] dir (", st.dir,
                                        ") is used instead"));
    }
  }
  if (sq->contains("flush_mem_threshold")) {
    (void)r.Int(*sq, path, "flush_mem_threshold", 0, INT64_MAX);
    cfg->notes.push_back(absl::StrCat(
        path, ".flush_mem_threshold: not used; qbridge writes every message to disk within "
              "[store] commit_delay (", st.commit_delay_ns / dp::kMsNs,
        " ms) before acknowledging it, instead of holding a count of messages in memory"));
  }
  if (sq->contains("resend_interval")) {
    (void)r.Int(*sq, path, "resend_interval", 0, INT64_MAX);
    cfg->notes.push_back(absl::StrCat(
        path, ".resend_interval: not used; stored messages are sent as soon as the bridge is up, "
              "as fast as the upstream's Receive Maximum allows"));
  }
  if (defaults->store && st.dir.empty()) {
    r.Error(Reader::Join(path, "mounted_file_path"),
            "required with the cache enabled (or set [store] dir): where the custody logs go");
  }
}

void ReadBridgeStore(Reader& r, const toml::table& t, const std::string& path, const std::string& name,
                     const StoreDefaults& defaults, const AppConfig& cfg, dp::BridgeDialSettings* d) {
  d->store = r.Bool(t, path, "store").value_or(defaults.store);
  if (defaults.max_messages) d->store_max_messages = *defaults.max_messages;
  if (auto v = r.Int(t, path, "store_max_messages", 1, INT64_MAX)) d->store_max_messages = uint64_t(*v);
  if (auto v = r.Bytes(t, path, "store_max_bytes", 1 << 10)) d->store_max_bytes = *v;
  if (auto v = r.Bool(t, path, "store_qos0")) d->store_qos0 = *v;
  if (auto v = r.Bytes(t, path, "store_memory", 64 << 10)) d->store_memory = *v;
  if (!d->store) return;
  if (cfg.runtime.store.dir.empty()) {
    r.Error(Reader::Join(path, "store"), "needs [store] dir: the directory custody logs are kept in");
  }
  // The bridge's log lives in <dir>/<name>: the name must be one plain path component.
  bool plain = !name.empty() && name != "." && name != "..";
  for (char ch : name) {
    plain &= (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
             ch == '-' || ch == '_' || ch == '.';
  }
  if (!plain) {
    r.Error(Reader::Join(path, "store"),
            "the bridge's name names its store directory: use letters, digits, '-', '_' and '.'");
  }
}

}  // namespace qbridge::cp::config_detail
