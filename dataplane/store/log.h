// The custody log: an append-only log of records in segment files, one log per north bridge
// with the store on, owned by that bridge's worker. A record is durable once a group commit
// has written it (and, with fsync = "batch" or "always", fdatasync'd it); the worker then
// acknowledges its publisher. A record the upstream has acknowledged is released: a release
// record says so, and a segment whose records are all released is deleted (oldest first).
// On open the log is recovered: every record is checked against its CRC32C (Intel ISA-L), a
// torn or corrupted tail is cut and counted, never replayed.
//
// Threads: every method is called on the owning worker's thread. File I/O (write,
// fdatasync, segment creation and deletion) happens on a committer thread of the log's own,
// handed one batch at a time through an atomic state word (no locks: appends and commits
// never make the worker wait for the disk). While one batch is being committed the next one
// fills: group commit. Three calls do block on the disk, by their nature: Open (recovery),
// Read (a record read back, usually from the page cache) and Flush (shutdown, removal).
// A segment that failed a write or a sync is never written again.
//
// On disk (docs/store.md): `<dir>/<number, 20 digits>.seg`, each a 16-byte header
// ("QBSTORE1", the segment number) and records:
//   u32 crc32c of bytes 4.. of the record | u32 payload length | u8 kind | 3 zero bytes |
//   u32 meta | u64 seq | payload
// kind 1 (data): seq is the record's number, meta the caller's. kind 2 (release): the
// payload is a list of u64 seqs released; seq and meta are 0.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"

namespace qbridge::store {

enum class Fsync : uint8_t {
  kBatch,   // one fdatasync per group commit (the default)
  kAlways,  // one fdatasync per record: the slow, per-message baseline
  kOff,     // write() only: survives a kill of the process, not a power cut
};

struct LogOptions {
  std::string dir;  // created when missing; one log per directory
  Fsync fsync = Fsync::kBatch;
  // How long the first record of a batch may wait for more before the batch is handed to
  // an idle committer (a busy committer makes batches wait anyway).
  uint64_t commit_delay_ns = 1'000'000;
  uint64_t segment_bytes = 64ull << 20;  // a new segment starts past this size
  size_t max_batch_bytes = 4u << 20;     // a batch this large goes without waiting
};

// What Open found on disk.
struct RecoveryStats {
  uint64_t segments = 0;          // segment files read
  uint64_t records = 0;           // valid data records
  uint64_t live = 0;              // ... not released: handed to the caller
  uint64_t live_bytes = 0;
  uint64_t truncated_bytes = 0;   // a torn or corrupted tail cut off
  uint64_t corrupt_segments = 0;  // segments with such a tail (the last one is torn by a crash)
};

// One group commit, as Poll reports it when it has completed.
struct Commit {
  uint64_t first_seq = 0, last_seq = 0;  // the data records it carried (none: first > last)
  int error = 0;                         // errno of a failed write or sync: not durable
  uint64_t bytes = 0;
  uint64_t latency_ns = 0;  // first append of the batch to completion seen
};

// Where a data record lies: its segment and the offset of its record header there. Valid
// while the record is live (a segment goes only when nothing in it is).
struct Location {
  uint64_t segment = 0;
  uint64_t offset = 0;
  uint32_t length = 0;  // the payload's
};

// Commit latencies in quarter-octave buckets of nanoseconds (within 25 % of the true value),
// written by the worker, read by anyone.
class LatencyHistogram {
 public:
  void Add(uint64_t ns);
  uint64_t Percentile(double p) const;  // an upper bound of the bucket, in ns (0: empty)
  uint64_t count() const { return count_.load(std::memory_order_relaxed); }

 private:
  static constexpr size_t kBuckets = 4 * 40;  // up to ~1100 s
  std::array<std::atomic<uint64_t>, kBuckets> b_{};
  std::atomic<uint64_t> count_{0};
};

// Counters the worker publishes (read by REST from other threads: relaxed atomics).
struct LogStats {
  std::atomic<uint64_t> appended{0}, appended_bytes{0}, released{0}, commits{0}, syncs{0},
      written_bytes{0}, io_errors{0}, segments_deleted{0};
  LatencyHistogram commit_latency;
};

class Log {
 public:
  using RecordFn = absl::FunctionRef<void(uint64_t seq, uint32_t meta, std::span<const uint8_t>)>;
  using LocatedRecordFn =
      absl::FunctionRef<void(uint64_t seq, uint32_t meta, std::span<const uint8_t>, const Location&)>;
  // Opens `o.dir` (creating it; one process and one Log at a time: `<dir>/LOCK` is
  // flock'ed, a second open fails as "in use"), recovers it, calls `on_live` for every record not released,
  // in sequence order, and starts the committer thread.
  static absl::StatusOr<std::unique_ptr<Log>> Open(const LogOptions& o, RecordFn on_live,
                                                   RecoveryStats* stats = nullptr);
  // The same, with each live record's location (for callers that read records back later
  // instead of keeping them in memory).
  static absl::StatusOr<std::unique_ptr<Log>> Open(const LogOptions& o, LocatedRecordFn on_live,
                                                   RecoveryStats* stats = nullptr);
  ~Log();  // commits what was appended, then stops the committer
  Log(const Log&) = delete;
  Log& operator=(const Log&) = delete;

  // Appends a data record; returns its sequence number (increasing, never reused while a
  // record with it can still be on disk). Durable once a Commit with last_seq >= it and no
  // error has been reported.
  // `where`, when given, is told where the record will lie (for Read).
  uint64_t Append(uint32_t meta, std::span<const uint8_t> data, uint64_t now_ns, Location* where = nullptr) {
    return Append(meta, data, {}, now_ns, where);
  }
  // The same with the payload in two parts (a small header of the caller's, then the data).
  uint64_t Append(uint32_t meta, std::span<const uint8_t> head, std::span<const uint8_t> data,
                  uint64_t now_ns, Location* where = nullptr);
  // Reads a live record's payload back, checking its CRC32C; the bytes stay valid until the
  // next Read. Only for a record whose commit completed without error. A blocking pread on
  // the caller's thread: records recently written are usually in the page cache.
  absl::StatusOr<std::span<const uint8_t>> Read(const Location& where, uint64_t seq);
  // The record is no longer needed (its upstream acknowledged it). `bytes` as appended.
  void Release(uint64_t seq, size_t bytes, uint64_t now_ns);
  // Moves the group commit along: collects a finished commit (true, `*done` filled) and
  // hands the next batch to the committer when it is idle and the batch is due.
  bool Poll(uint64_t now_ns, Commit* done);
  // Blocks until everything appended so far is committed; the commits it finishes are
  // reported to `fn` (shutdown, tests, benchmarks).
  void Flush(absl::FunctionRef<void(const Commit&)> fn);
  // When the next batch is due (UINT64_MAX: nothing waits), for a worker about to nap.
  uint64_t NextDeadline() const;

  uint64_t live_records() const { return live_records_; }
  uint64_t live_bytes() const { return live_bytes_; }
  // Bytes of the segments on disk (live or not).
  uint64_t disk_bytes() const { return disk_bytes_; }
  size_t segments() const { return segs_.size(); }
  const LogStats& stats() const { return stats_; }
  const std::string& dir() const { return opt_.dir; }

 private:
  struct Batch {
    std::vector<uint8_t> bytes;
    // Where each segment's bytes begin in `bytes` (a batch may cross into a new segment).
    struct Chunk {
      uint64_t segment;
      size_t begin;
    };
    std::vector<Chunk> chunks;
    std::vector<size_t> record_ends;  // fsync = always: where each data record ends
    std::vector<uint64_t> unlink;     // segments to delete after the write
    uint64_t first_seq = 0, last_seq = 0;
    bool sync = false;     // carries data records (a release-only batch is not synced)
    uint64_t opened_ns = 0;  // first append
    int error = 0;         // the committer's result
    void Clear();
    bool empty() const { return bytes.empty() && unlink.empty(); }
  };
  struct Segment {
    uint64_t number;
    uint64_t first_seq;  // records from here on are in this segment (until the next one)
    uint64_t live = 0;
    uint64_t bytes = 0;  // bytes appended (header included)
  };
  enum State : uint32_t { kIdle, kBusy, kDone, kStop };

  explicit Log(const LogOptions& o);
  absl::Status Recover(LocatedRecordFn on_live, RecoveryStats* stats);
  void EnsureSegment(size_t record_bytes);  // rotates when the active segment is full
  bool Pending() const;                     // anything appended or released not handed off
  void DropReleasedPrefix();                // unlinks segments with nothing live, oldest first
  void AppendRecord(uint8_t kind, uint32_t meta, uint64_t seq, std::span<const uint8_t> head,
                    std::span<const uint8_t> payload);
  void FlushReleases();
  void Handoff();
  bool Collect(uint64_t now_ns, Commit* done);
  // Committer thread.
  void CommitterMain();
  int WriteBatch(Batch& b);
  int OpenSegment(uint64_t number);

  LogOptions opt_;
  // Worker side.
  Batch batches_[2];
  int open_ = 0;  // the batch filling; the other one is the committer's while kBusy
  std::deque<Segment> segs_;  // oldest first; back() receives appends
  uint64_t next_seq_ = 1;
  uint64_t next_number_ = 1;  // the next segment's number
  bool active_ = false;       // segs_.back() is this run's (recovered segments are not appended to)
  uint64_t live_records_ = 0, live_bytes_ = 0;
  uint64_t disk_bytes_ = 0;  // the sum of segs_' bytes
  std::vector<uint64_t> releases_;  // seqs released since the last release record
  int read_fd_ = -1;                // Read's segment (worker side)
  uint64_t read_segment_ = 0;
  std::vector<uint8_t> read_buf_;
  bool rotate_ = false;             // the next append starts a new segment (after an error)
  LogStats stats_;
  // Shared: the state word hands the inflight batch back and forth.
  std::atomic<uint32_t> state_{kIdle};
  // Committer side.
  int fd_ = -1;
  int dir_fd_ = -1;
  int lock_fd_ = -1;  // <dir>/LOCK, flock'ed for the log's life
  uint64_t fd_segment_ = 0;
  uint64_t broken_segment_ = 0;  // failed a write or a sync: never written again (0: none)
  std::thread committer_;
};

// Scans one segment's bytes (header included). Calls `data(seq, meta, payload)` for
// each valid data record and `release(seq)` for each released seq, in file order, and returns
// the length of the valid prefix (0 when the header is not ours). Exposed for the fuzz target.
size_t ScanSegment(std::span<const uint8_t> bytes, uint64_t number,
                   absl::FunctionRef<void(uint64_t seq, uint32_t meta, std::span<const uint8_t>)> data,
                   absl::FunctionRef<void(uint64_t seq)> release);

uint32_t Crc32c(std::span<const uint8_t> bytes, uint32_t crc = 0);

inline constexpr size_t kSegmentHeaderBytes = 16;
inline constexpr size_t kRecordHeaderBytes = 24;

}  // namespace qbridge::store
