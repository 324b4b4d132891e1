// The storage comparison behind docs/store.md: the custody log against SQLite in WAL mode
// (how NanoMQ keeps its bridge cache) and LMDB, same machine, same run, same workload.
//
// Per engine, size (64 B, 1 KiB) and durability:
//   batch    commits of --batch messages, each made durable (fdatasync / synchronous=FULL /
//            LMDB's sync commit) before the next one starts;
//   message  one durable commit per message (the per-message baseline);
// and for the log alone "pipelined": appends at full speed with the committer thread doing
// group commits behind them (1 ms commit delay), the way a bridge uses it.
// Reported: appends/s, MB/s of payload, p50/p99 commit latency, bytes the process wrote to
// storage per message (/proc/self/io write_bytes), and the drain: read everything back in
// order and delete it, in batches, durably.
//
//   store_bench [--dir DIR] [--messages N] [--sync-messages N] [--batch N] [--smoke]
// DIR must be on the disk under test (default: $TMPDIR or /tmp); its contents are removed.
#include <lmdb.h>
#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "dataplane/store/log.h"

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

uint64_t NowNs() {
  return uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count());
}

uint64_t WriteBytes() {
  std::ifstream f("/proc/self/io");
  std::string k;
  uint64_t v;
  while (f >> k >> v)
    if (k == "write_bytes:") return v;
  return 0;
}

double Pct(std::vector<uint64_t>& v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return double(v[std::min(v.size() - 1, size_t(p * double(v.size())))]) / 1000.0;  // us
}

// One engine behind the same three calls. Commit() makes everything put since the last
// commit durable. Drain(batch) reads all in order and deletes them, `batch` per transaction,
// returning how many it read.
class Engine {
 public:
  virtual ~Engine() = default;
  virtual void Put(uint64_t seq, const std::string& data) = 0;
  virtual void Commit() = 0;
  virtual size_t Drain(size_t batch) = 0;
};

class LogEngine final : public Engine {
 public:
  explicit LogEngine(const std::string& dir) {
    opt_.dir = dir;
    opt_.commit_delay_ns = 0;
    Open();
  }
  void Put(uint64_t, const std::string& d) override {
    log_->Append(0, {reinterpret_cast<const uint8_t*>(d.data()), d.size()}, NowNs());
  }
  void Commit() override {
    log_->Flush([](const qbridge::store::Commit& c) {
      if (c.error) std::fprintf(stderr, "store_bench: log commit failed: %s\n", std::strerror(c.error));
    });
  }
  size_t Drain(size_t batch) override {
    log_.reset();
    std::vector<std::pair<uint64_t, size_t>> live;
    Open(&live);  // recovery reads every segment back, in order
    size_t n = 0;
    for (const auto& [seq, len] : live) {
      log_->Release(seq, len, NowNs());
      if (++n % batch == 0) Commit();
    }
    Commit();
    return live.size();
  }
  qbridge::store::Log& log() { return *log_; }

 private:
  void Open(std::vector<std::pair<uint64_t, size_t>>* live = nullptr) {
    auto l = qbridge::store::Log::Open(opt_, [&](uint64_t seq, uint32_t, std::span<const uint8_t> d) {
      if (live) live->emplace_back(seq, d.size());
    });
    if (!l.ok()) {
      std::fprintf(stderr, "store_bench: %s\n", std::string(l.status().message()).c_str());
      std::exit(1);
    }
    log_ = std::move(*l);
  }
  qbridge::store::LogOptions opt_;
  std::unique_ptr<qbridge::store::Log> log_;
};

class SqliteEngine final : public Engine {
 public:
  explicit SqliteEngine(const std::string& dir) {
    fs::create_directories(dir);
    Check(sqlite3_open((dir + "/cache.db").c_str(), &db_));
    Exec("PRAGMA journal_mode=WAL");
    Exec("PRAGMA synchronous=FULL");  // WAL synced at every commit: durable, as the log is
    Exec("CREATE TABLE IF NOT EXISTS msg(id INTEGER PRIMARY KEY, data BLOB NOT NULL)");
    Check(sqlite3_prepare_v2(db_, "INSERT INTO msg(id, data) VALUES(?, ?)", -1, &insert_, nullptr));
    Check(sqlite3_prepare_v2(db_, "SELECT id, data FROM msg WHERE id > ? ORDER BY id LIMIT ?", -1, &select_, nullptr));
    Check(sqlite3_prepare_v2(db_, "DELETE FROM msg WHERE id <= ?", -1, &delete_, nullptr));
  }
  ~SqliteEngine() override {
    sqlite3_finalize(insert_);
    sqlite3_finalize(select_);
    sqlite3_finalize(delete_);
    sqlite3_close(db_);
  }
  void Put(uint64_t seq, const std::string& d) override {
    if (!in_txn_) Exec("BEGIN"), in_txn_ = true;
    sqlite3_bind_int64(insert_, 1, int64_t(seq));
    sqlite3_bind_blob(insert_, 2, d.data(), int(d.size()), SQLITE_STATIC);
    if (sqlite3_step(insert_) != SQLITE_DONE) Fail();
    sqlite3_reset(insert_);
  }
  void Commit() override {
    if (in_txn_) Exec("COMMIT"), in_txn_ = false;
  }
  size_t Drain(size_t batch) override {
    int64_t last = 0;
    size_t n = 0;
    for (;;) {
      Exec("BEGIN");
      sqlite3_bind_int64(select_, 1, last);
      sqlite3_bind_int64(select_, 2, int64_t(batch));
      size_t got = 0;
      while (sqlite3_step(select_) == SQLITE_ROW) {
        last = sqlite3_column_int64(select_, 0);
        sink_ += size_t(sqlite3_column_bytes(select_, 1));
        ++got;
      }
      sqlite3_reset(select_);
      sqlite3_bind_int64(delete_, 1, last);
      if (sqlite3_step(delete_) != SQLITE_DONE) Fail();
      sqlite3_reset(delete_);
      Exec("COMMIT");
      n += got;
      if (got < batch) return n;
    }
  }

 private:
  void Exec(const char* sql) {
    if (sqlite3_exec(db_, sql, nullptr, nullptr, nullptr) != SQLITE_OK) Fail();
  }
  void Check(int rc) {
    if (rc != SQLITE_OK) Fail();
  }
  [[noreturn]] void Fail() {
    std::fprintf(stderr, "store_bench: sqlite: %s\n", sqlite3_errmsg(db_));
    std::exit(1);
  }
  sqlite3* db_ = nullptr;
  sqlite3_stmt *insert_ = nullptr, *select_ = nullptr, *delete_ = nullptr;
  bool in_txn_ = false;
  size_t sink_ = 0;
};

class LmdbEngine final : public Engine {
 public:
  explicit LmdbEngine(const std::string& dir) {
    fs::create_directories(dir);
    Check(mdb_env_create(&env_));
    Check(mdb_env_set_mapsize(env_, size_t(8) << 30));
    Check(mdb_env_open(env_, dir.c_str(), 0, 0644));  // synchronous commits (no MDB_NOSYNC)
  }
  ~LmdbEngine() override {
    if (txn_) mdb_txn_abort(txn_);
    mdb_env_close(env_);
  }
  void Put(uint64_t seq, const std::string& d) override {
    Begin();
    uint64_t key = __builtin_bswap64(seq);  // big-endian: byte order is sequence order
    MDB_val k{sizeof(key), &key}, v{d.size(), const_cast<char*>(d.data())};
    Check(mdb_put(txn_, dbi_, &k, &v, MDB_APPEND));
  }
  void Commit() override {
    if (txn_) Check(mdb_txn_commit(txn_)), txn_ = nullptr;
  }
  size_t Drain(size_t batch) override {
    size_t n = 0;
    for (;;) {
      Begin();
      MDB_cursor* c;
      Check(mdb_cursor_open(txn_, dbi_, &c));
      MDB_val k, v;
      size_t got = 0;
      while (got < batch && mdb_cursor_get(c, &k, &v, MDB_FIRST) == 0) {
        sink_ += v.mv_size;
        Check(mdb_cursor_del(c, 0));
        ++got;
      }
      mdb_cursor_close(c);
      Commit();
      n += got;
      if (got < batch) return n;
    }
  }

 private:
  void Begin() {
    if (txn_) return;
    Check(mdb_txn_begin(env_, nullptr, 0, &txn_));
    Check(mdb_dbi_open(txn_, nullptr, 0, &dbi_));
  }
  void Check(int rc) {
    if (rc != 0) {
      std::fprintf(stderr, "store_bench: lmdb: %s\n", mdb_strerror(rc));
      std::exit(1);
    }
  }
  MDB_env* env_ = nullptr;
  MDB_txn* txn_ = nullptr;
  MDB_dbi dbi_ = 0;
  size_t sink_ = 0;
};

struct Result {
  std::string engine, mode;
  size_t size = 0, messages = 0;
  double appends_s = 0, mb_s = 0, p50_us = 0, p99_us = 0, disk_per_msg = 0, drain_s = 0;
};

std::unique_ptr<Engine> Make(const std::string& name, const std::string& dir) {
  if (name == "log") return std::make_unique<LogEngine>(dir);
  if (name == "sqlite-wal") return std::make_unique<SqliteEngine>(dir);
  return std::make_unique<LmdbEngine>(dir);
}

Result Run(const std::string& name, const std::string& mode, size_t size, size_t n, size_t batch,
           const std::string& root) {
  const std::string dir = root + "/" + name;
  fs::remove_all(dir);
  auto e = Make(name, dir);
  const std::string payload(size, 'm');
  const size_t per_commit = mode == "message" ? 1 : batch;
  std::vector<uint64_t> lat;
  const uint64_t w0 = WriteBytes();
  const uint64_t t0 = NowNs();
  if (mode == "pipelined") {
    // The bridge's way: Append and Poll in a loop, the committer commits behind.
    auto& log = static_cast<LogEngine&>(*e).log();
    std::vector<uint64_t> appended_at;
    appended_at.reserve(n);
    uint64_t done_to = 0;
    auto collect = [&](const qbridge::store::Commit& c) {
      for (uint64_t s = c.first_seq; s <= c.last_seq; ++s) lat.push_back(NowNs() - appended_at[s - 1]);
      done_to = std::max(done_to, c.last_seq);
    };
    for (size_t i = 0; i < n; ++i) {
      appended_at.push_back(NowNs());
      log.Append(0, {reinterpret_cast<const uint8_t*>(payload.data()), payload.size()}, appended_at.back());
      qbridge::store::Commit c;
      if (log.Poll(NowNs(), &c)) collect(c);
    }
    log.Flush(collect);
  } else {
    for (size_t i = 0; i < n; i += per_commit) {
      const uint64_t c0 = NowNs();
      for (size_t j = i; j < std::min(n, i + per_commit); ++j) e->Put(j + 1, payload);
      e->Commit();
      lat.push_back(NowNs() - c0);
    }
  }
  const uint64_t t1 = NowNs();
  ::sync();  // what the engine left for the kernel to write counts too
  const uint64_t w1 = WriteBytes();
  Result r;
  r.engine = name;
  r.mode = mode;
  r.size = size;
  r.messages = n;
  const double secs = double(t1 - t0) / 1e9;
  r.appends_s = double(n) / secs;
  r.mb_s = double(n * size) / secs / 1e6;
  r.p50_us = Pct(lat, 0.50);
  r.p99_us = Pct(lat, 0.99);
  r.disk_per_msg = double(w1 - w0) / double(n);
  const uint64_t d0 = NowNs();
  const size_t drained = e->Drain(batch);
  const uint64_t d1 = NowNs();
  if (drained != n) std::fprintf(stderr, "store_bench: %s drained %zu of %zu\n", name.c_str(), drained, n);
  r.drain_s = double(drained) / (double(d1 - d0) / 1e9);
  e.reset();
  fs::remove_all(dir);
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  std::string root = std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "/tmp";
  root += "/qbridge-store-bench";
  size_t messages = 200'000, sync_messages = 2'000, batch = 256;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (a == "--dir") root = next();
    else if (a == "--messages") messages = std::stoul(next());
    else if (a == "--sync-messages") sync_messages = std::stoul(next());
    else if (a == "--batch") batch = std::stoul(next());
    else if (a == "--smoke") messages = 2'000, sync_messages = 50;
    else {
      std::fprintf(stderr, "usage: store_bench [--dir DIR] [--messages N] [--sync-messages N] [--batch N] [--smoke]\n");
      return 2;
    }
  }
  fs::create_directories(root);
  std::printf("| engine | durability | size | messages | appends/s | MB/s | commit p50 us | commit p99 us | disk B/msg | drain msg/s |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|---|\n");
  for (size_t size : {size_t(64), size_t(1024)}) {
    std::vector<Result> rows;
    rows.push_back(Run("log", "pipelined", size, messages, batch, root));
    for (const char* engine : {"log", "sqlite-wal", "lmdb"}) {
      rows.push_back(Run(engine, "batch", size, messages, batch, root));
      rows.push_back(Run(engine, "message", size, sync_messages, batch, root));
    }
    for (const Result& r : rows) {
      std::printf("| %s | %s | %zu | %zu | %.0f | %.1f | %.0f | %.0f | %.0f | %.0f |\n", r.engine.c_str(),
                  r.mode.c_str(), r.size, r.messages, r.appends_s, r.mb_s, r.p50_us, r.p99_us, r.disk_per_msg,
                  r.drain_s);
      std::fflush(stdout);
    }
  }
  fs::remove_all(root);
  return 0;
}
