// The custody log's implementation: record encoding, the worker-side batch and segment
// accounting, recovery, and the committer thread (the only code here that touches files
// after Open). The format is in log.h and docs/store.md.

#include "dataplane/store/log.h"

#include <dirent.h>
#include <fcntl.h>
#include <isa-l/crc.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"

namespace qbridge::store {
namespace {

static_assert(std::endian::native == std::endian::little, "the log is written little-endian");

constexpr char kMagic[8] = {'Q', 'B', 'S', 'T', 'O', 'R', 'E', '1'};
constexpr uint8_t kData = 1;
constexpr uint8_t kRelease = 2;
constexpr uint32_t kMaxPayload = 256u << 20;  // beyond it a length field is garbage
constexpr size_t kMaxReleasesPerRecord = 8192;
constexpr uint64_t kReleaseDelayNs = 5'000'000;  // release-only batches wait longer

void Put32(uint8_t* p, uint32_t v) { std::memcpy(p, &v, 4); }
void Put64(uint8_t* p, uint64_t v) { std::memcpy(p, &v, 8); }
uint32_t Get32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
uint64_t Get64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

// Counters with one writer: a relaxed load and store, no locked instruction.
void Bump(std::atomic<uint64_t>& a, uint64_t n = 1) {
  a.store(a.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}

uint64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1'000'000'000 + uint64_t(ts.tv_nsec);
}

std::string SegmentName(uint64_t number) {
  char name[32];
  std::snprintf(name, sizeof(name), "%020" PRIu64 ".seg", number);
  return name;
}

bool ParseSegmentName(const char* name, uint64_t* number) {
  if (std::strlen(name) != 24 || std::strcmp(name + 20, ".seg") != 0) return false;
  uint64_t n = 0;
  for (int i = 0; i < 20; ++i) {
    if (name[i] < '0' || name[i] > '9') return false;
    n = n * 10 + uint64_t(name[i] - '0');
  }
  *number = n;
  return true;
}

// write() until done; errno on failure.
int WriteFull(int fd, const uint8_t* p, size_t n) {
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    p += w;
    n -= size_t(w);
  }
  return 0;
}

// pread() until `n` bytes or the end of the file: the count read, or -1 (errno set).
ssize_t ReadFull(int fd, uint8_t* p, size_t n, uint64_t offset) {
  size_t got = 0;
  while (got < n) {
    const ssize_t r = ::pread(fd, p + got, n - got, off_t(offset + got));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return -1;
    if (r == 0) break;
    got += size_t(r);
  }
  return ssize_t(got);
}

}  // namespace

uint32_t Crc32c(std::span<const uint8_t> bytes, uint32_t crc) {
  // ISA-L's iSCSI CRC is CRC-32C without the final inversion.
  return ~crc32_iscsi(const_cast<uint8_t*>(bytes.data()), int(bytes.size()), ~crc);
}

void LatencyHistogram::Add(uint64_t ns) {
  size_t i;
  if (ns < 8) {
    i = size_t(ns);
  } else {
    const int lg = std::bit_width(ns) - 1;
    i = 8 + 4 * size_t(lg - 3) + size_t((ns >> (lg - 2)) & 3);
  }
  i = std::min(i, kBuckets - 1);
  b_[i].store(b_[i].load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  count_.store(count_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
}

uint64_t LatencyHistogram::Percentile(double p) const {
  const uint64_t n = count();
  if (n == 0) return 0;
  const uint64_t want = std::max<uint64_t>(1, uint64_t(p * double(n) + 0.999999));
  uint64_t seen = 0;
  for (size_t i = 0; i < kBuckets; ++i) {
    seen += b_[i].load(std::memory_order_relaxed);
    if (seen < want) continue;
    if (i < 8) return i;
    const size_t lg = (i - 8) / 4 + 3, sub = (i - 8) % 4;
    return ((5 + sub) << (lg - 2)) - 1;
  }
  return UINT64_MAX;
}

size_t ScanSegment(std::span<const uint8_t> bytes, uint64_t number,
                   absl::FunctionRef<void(uint64_t, uint32_t, std::span<const uint8_t>)> data,
                   absl::FunctionRef<void(uint64_t)> release) {
  if (bytes.size() < kSegmentHeaderBytes || std::memcmp(bytes.data(), kMagic, 8) != 0 ||
      Get64(bytes.data() + 8) != number) {
    return 0;
  }
  size_t off = kSegmentHeaderBytes;
  while (bytes.size() - off >= kRecordHeaderBytes) {
    const uint8_t* p = bytes.data() + off;
    const uint32_t len = Get32(p + 4);
    const uint8_t kind = p[8];
    if (p[9] != 0 || p[10] != 0 || p[11] != 0) break;
    if (kind != kData && kind != kRelease) break;
    if (len > kMaxPayload || len > bytes.size() - off - kRecordHeaderBytes) break;
    if (Crc32c({p + 4, kRecordHeaderBytes - 4 + len}) != Get32(p)) break;
    const std::span<const uint8_t> payload(p + kRecordHeaderBytes, len);
    // Sequence numbers are 1 .. 2^63: 0 means "none" to callers, and the next one after the
    // largest must not wrap.
    constexpr uint64_t kMaxSeq = uint64_t(1) << 63;
    if (kind == kData) {
      const uint64_t seq = Get64(p + 16);
      if (seq == 0 || seq > kMaxSeq) break;
      data(seq, Get32(p + 12), payload);
    } else {
      if (len % 8 != 0 || Get64(p + 16) != 0) break;
      bool ok = true;
      for (size_t i = 0; i < len; i += 8) ok &= Get64(payload.data() + i) - 1 < kMaxSeq;
      if (!ok) break;
      for (size_t i = 0; i < len; i += 8) release(Get64(payload.data() + i));
    }
    off += kRecordHeaderBytes + len;
  }
  return off;
}

void Log::Batch::Clear() {
  bytes.clear();
  chunks.clear();
  record_ends.clear();
  unlink.clear();
  first_seq = last_seq = 0;
  sync = false;
  opened_ns = 0;
  error = 0;
}

Log::Log(const LogOptions& o) : opt_(o) {}

absl::StatusOr<std::unique_ptr<Log>> Log::Open(const LogOptions& o, RecordFn on_live,
                                               RecoveryStats* stats) {
  return Open(
      o, [&](uint64_t seq, uint32_t meta, std::span<const uint8_t> data, const Location&) { on_live(seq, meta, data); },
      stats);
}

absl::StatusOr<std::unique_ptr<Log>> Log::Open(const LogOptions& o, LocatedRecordFn on_live,
                                               RecoveryStats* stats) {
  if (o.dir.empty()) return absl::InvalidArgumentError("store: no directory");
  std::unique_ptr<Log> log(new Log(o));
  RecoveryStats local;
  if (absl::Status s = log->Recover(on_live, stats ? stats : &local); !s.ok()) return s;
  log->committer_ = std::thread([l = log.get()] { l->CommitterMain(); });
  return log;
}

absl::Status Log::Recover(LocatedRecordFn on_live, RecoveryStats* st) {
  std::error_code ec;
  std::filesystem::create_directories(opt_.dir, ec);
  if (ec) return absl::UnavailableError(absl::StrCat("store: ", opt_.dir, ": ", ec.message()));
  dir_fd_ = ::open(opt_.dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd_ < 0) return absl::ErrnoToStatus(errno, absl::StrCat("store: ", opt_.dir));
  lock_fd_ = ::openat(dir_fd_, "LOCK", O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock_fd_ < 0) return absl::ErrnoToStatus(errno, absl::StrCat("store: ", opt_.dir, "/LOCK"));
  if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    return errno == EWOULDBLOCK
               ? absl::FailedPreconditionError(absl::StrCat("store: ", opt_.dir, " is in use by another log"))
               : absl::ErrnoToStatus(errno, absl::StrCat("store: ", opt_.dir, "/LOCK"));
  }

  std::vector<uint64_t> numbers;
  if (DIR* d = ::fdopendir(::dup(dir_fd_))) {
    while (dirent* e = ::readdir(d)) {
      uint64_t n;
      if (ParseSegmentName(e->d_name, &n)) numbers.push_back(n);
    }
    ::closedir(d);
  } else {
    return absl::ErrnoToStatus(errno, absl::StrCat("store: ", opt_.dir));
  }
  std::sort(numbers.begin(), numbers.end());

  // Two passes, one segment in memory at a time (a log after a long outage can be larger
  // than memory): the first finds every record and every release, the second reads the
  // live records again and hands them over in sequence order.
  struct Rec {
    uint64_t seq;
    uint32_t meta;
    uint32_t seg;  // index into segs_
    uint32_t len;
    uint64_t off;  // of the payload
  };
  std::vector<Rec> recs;
  absl::flat_hash_set<uint64_t> released;
  uint64_t max_seq = 0;
  std::vector<uint8_t> bytes;
  // Reads segment `n`'s first `limit` bytes (all when SIZE_MAX) into `bytes`.
  auto read_segment = [&](uint64_t n, size_t limit) -> absl::Status {
    const std::string name = SegmentName(n);
    const int fd = ::openat(dir_fd_, name.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return absl::ErrnoToStatus(errno, absl::StrCat("store: ", opt_.dir, "/", name));
    struct stat sb;
    if (::fstat(fd, &sb) != 0) {
      ::close(fd);
      return absl::ErrnoToStatus(errno, "store: fstat");
    }
    bytes.resize(std::min(size_t(sb.st_size), limit));
    const ssize_t got = ReadFull(fd, bytes.data(), bytes.size(), 0);
    const int read_errno = errno;
    ::close(fd);
    if (got < 0) return absl::ErrnoToStatus(read_errno, absl::StrCat("store: read ", opt_.dir, "/", name));
    bytes.resize(size_t(got));
    return absl::OkStatus();
  };
  for (uint64_t n : numbers) {
    if (absl::Status s = read_segment(n, SIZE_MAX); !s.ok()) return s;
    ++st->segments;
    const uint32_t index = uint32_t(segs_.size());
    const size_t valid = ScanSegment(
        bytes, n,
        [&](uint64_t seq, uint32_t meta, std::span<const uint8_t> payload) {
          recs.push_back(Rec{seq, meta, index, uint32_t(payload.size()), uint64_t(payload.data() - bytes.data())});
          max_seq = std::max(max_seq, seq);
        },
        [&](uint64_t seq) {
          released.insert(seq);
          max_seq = std::max(max_seq, seq);
        });
    const std::string name = SegmentName(n);
    if (valid < bytes.size()) {
      st->truncated_bytes += bytes.size() - valid;
      ++st->corrupt_segments;
      // A header torn at creation leaves nothing of ours: the file goes. Otherwise the
      // valid prefix stays (its records are recovered) and the rest is cut.
      if (valid == 0) {
        ::unlinkat(dir_fd_, name.c_str(), 0);
        continue;
      }
      const int fd = ::openat(dir_fd_, name.c_str(), O_RDWR | O_CLOEXEC);
      if (fd < 0) return absl::ErrnoToStatus(errno, absl::StrCat("store: ", opt_.dir, "/", name));
      if (::ftruncate(fd, off_t(valid)) == 0) ::fdatasync(fd);
      ::close(fd);
    }
    segs_.push_back(Segment{n, 0, 0, valid});
    next_number_ = n + 1;
  }
  bytes = std::vector<uint8_t>();
  // Sequence order (appends are in order; a damaged log may not be), one record per seq.
  std::stable_sort(recs.begin(), recs.end(), [](const Rec& a, const Rec& b) { return a.seq < b.seq; });
  recs.erase(std::unique(recs.begin(), recs.end(), [](const Rec& a, const Rec& b) { return a.seq == b.seq; }),
             recs.end());
  next_seq_ = max_seq + 1;
  // A segment's first_seq: its first data record's, or (none) the next segment's, so the
  // binary search in Release lands on the segment that holds a seq.
  std::vector<uint64_t> first(segs_.size(), UINT64_MAX);
  for (const Rec& r : recs) first[r.seg] = std::min(first[r.seg], r.seq);
  uint64_t carry = next_seq_;
  for (size_t i = segs_.size(); i-- > 0;) {
    if (first[i] == UINT64_MAX) first[i] = carry;
    segs_[i].first_seq = carry = first[i];
  }
  st->records = recs.size();
  uint32_t loaded = UINT32_MAX;  // the segment in `bytes`
  for (const Rec& r : recs) {
    if (released.contains(r.seq)) continue;
    if (r.seg != loaded) {
      if (absl::Status s = read_segment(segs_[r.seg].number, segs_[r.seg].bytes); !s.ok()) return s;
      loaded = r.seg;
    }
    if (r.off + r.len > bytes.size()) return absl::DataLossError(absl::StrCat("store: ", opt_.dir, " changed while recovering"));
    ++segs_[r.seg].live;
    ++live_records_;
    live_bytes_ += r.len;
    on_live(r.seq, r.meta, std::span<const uint8_t>(bytes.data() + r.off, r.len),
            Location{segs_[r.seg].number, r.off - kRecordHeaderBytes, r.len});
  }
  st->live = live_records_;
  st->live_bytes = live_bytes_;
  // Segments with nothing live at the front go now (the same prefix rule as at run time);
  // new records go to a new segment.
  while (!segs_.empty() && segs_.front().live == 0) {
    ::unlinkat(dir_fd_, SegmentName(segs_.front().number).c_str(), 0);
    segs_.pop_front();
  }
  for (const Segment& g : segs_) disk_bytes_ += g.bytes;
  if (next_number_ == 0) next_number_ = 1;
  return absl::OkStatus();
}

Log::~Log() {
  if (committer_.joinable()) {
    Flush([](const Commit&) {});
    state_.store(kStop, std::memory_order_release);
    state_.notify_one();
    committer_.join();
  }
  if (fd_ >= 0) {
    if (opt_.fsync != Fsync::kOff) ::fdatasync(fd_);
    ::close(fd_);
  }
  if (read_fd_ >= 0) ::close(read_fd_);
  if (dir_fd_ >= 0) ::close(dir_fd_);
  if (lock_fd_ >= 0) ::close(lock_fd_);  // releases the flock
}

void Log::EnsureSegment(size_t record_bytes) {
  if (active_ && !rotate_ &&
      (segs_.back().bytes + record_bytes <= opt_.segment_bytes || segs_.back().bytes <= kSegmentHeaderBytes)) {
    return;
  }
  segs_.push_back(Segment{next_number_++, next_seq_, 0, kSegmentHeaderBytes});
  disk_bytes_ += kSegmentHeaderBytes;
  active_ = true;
  rotate_ = false;
  DropReleasedPrefix();  // a recovered segment with nothing live is not written to again
}

void Log::AppendRecord(uint8_t kind, uint32_t meta, uint64_t seq, std::span<const uint8_t> head,
                       std::span<const uint8_t> payload) {
  Batch& b = batches_[open_];
  const uint64_t segment = segs_.back().number;
  if (b.chunks.empty() || b.chunks.back().segment != segment) b.chunks.push_back({segment, b.bytes.size()});
  const size_t at = b.bytes.size();
  const size_t rec = kRecordHeaderBytes + head.size() + payload.size();
  b.bytes.resize(at + rec);
  uint8_t* p = b.bytes.data() + at;
  Put32(p + 4, uint32_t(head.size() + payload.size()));
  p[8] = kind;
  p[9] = p[10] = p[11] = 0;
  Put32(p + 12, meta);
  Put64(p + 16, seq);
  if (!head.empty()) std::memcpy(p + kRecordHeaderBytes, head.data(), head.size());
  if (!payload.empty()) std::memcpy(p + kRecordHeaderBytes + head.size(), payload.data(), payload.size());
  Put32(p, Crc32c({p + 4, rec - 4}));
  segs_.back().bytes += rec;
  disk_bytes_ += rec;
  if (opt_.fsync == Fsync::kAlways) b.record_ends.push_back(b.bytes.size());
}

uint64_t Log::Append(uint32_t meta, std::span<const uint8_t> head, std::span<const uint8_t> data,
                     uint64_t now_ns, Location* where) {
  if (!Pending()) batches_[open_].opened_ns = now_ns;
  const size_t size = head.size() + data.size();
  EnsureSegment(kRecordHeaderBytes + size);
  if (where) *where = Location{segs_.back().number, segs_.back().bytes, uint32_t(size)};
  const uint64_t seq = next_seq_++;
  Batch& b = batches_[open_];
  if (b.first_seq == 0) b.first_seq = seq;
  b.last_seq = seq;
  b.sync = true;
  AppendRecord(kData, meta, seq, head, data);
  ++segs_.back().live;
  ++live_records_;
  live_bytes_ += size;
  Bump(stats_.appended);
  Bump(stats_.appended_bytes, size);
  return seq;
}

absl::StatusOr<std::span<const uint8_t>> Log::Read(const Location& where, uint64_t seq) {
  if (read_fd_ < 0 || read_segment_ != where.segment) {
    if (read_fd_ >= 0) ::close(read_fd_);
    read_fd_ = ::openat(dir_fd_, SegmentName(where.segment).c_str(), O_RDONLY | O_CLOEXEC);
    if (read_fd_ < 0) {
      return absl::ErrnoToStatus(errno, absl::StrCat("store: ", opt_.dir, "/", SegmentName(where.segment)));
    }
    read_segment_ = where.segment;
  }
  read_buf_.resize(kRecordHeaderBytes + where.length);
  const ssize_t got = ReadFull(read_fd_, read_buf_.data(), read_buf_.size(), where.offset);
  if (got < 0) return absl::ErrnoToStatus(errno, absl::StrCat("store: read ", SegmentName(where.segment)));
  const uint8_t* p = read_buf_.data();
  if (size_t(got) != read_buf_.size() || Get32(p + 4) != where.length || p[8] != kData ||
      Get64(p + 16) != seq || Crc32c({p + 4, read_buf_.size() - 4}) != Get32(p)) {
    return absl::DataLossError(absl::StrCat("store: record ", seq, " in ", opt_.dir, "/",
                                            SegmentName(where.segment), " is missing or fails its checksum"));
  }
  return std::span<const uint8_t>(p + kRecordHeaderBytes, where.length);
}

void Log::Release(uint64_t seq, size_t bytes, uint64_t now_ns) {
  auto it = std::upper_bound(segs_.begin(), segs_.end(), seq,
                             [](uint64_t s, const Segment& g) { return s < g.first_seq; });
  if (it == segs_.begin()) return;  // not (or no longer) in the log
  --it;
  if (it->live == 0) return;
  if (!Pending()) batches_[open_].opened_ns = now_ns;
  --it->live;
  --live_records_;
  live_bytes_ -= std::min<uint64_t>(bytes, live_bytes_);
  releases_.push_back(seq);
  Bump(stats_.released);
  DropReleasedPrefix();
}

// Segments are deleted oldest first only: a release record in a later segment may name
// records of an earlier one, so an earlier segment never outlives a later one. The segment
// written to stays.
void Log::DropReleasedPrefix() {
  while (segs_.size() > 1 && segs_.front().live == 0) {
    batches_[open_].unlink.push_back(segs_.front().number);
    disk_bytes_ -= segs_.front().bytes;
    segs_.pop_front();
  }
}

void Log::FlushReleases() {
  if (releases_.empty()) return;
  for (size_t i = 0; i < releases_.size(); i += kMaxReleasesPerRecord) {
    const size_t n = std::min(kMaxReleasesPerRecord, releases_.size() - i);
    EnsureSegment(kRecordHeaderBytes + 8 * n);
    AppendRecord(kRelease, 0, 0, {},
                 std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(releases_.data() + i), 8 * n));
  }
  releases_.clear();
}

bool Log::Pending() const { return !batches_[open_].empty() || !releases_.empty(); }

void Log::Handoff() {
  FlushReleases();
  if (batches_[open_].empty()) return;
  open_ ^= 1;
  batches_[open_].Clear();
  state_.store(kBusy, std::memory_order_release);
  state_.notify_one();
}

bool Log::Collect(uint64_t now_ns, Commit* done) {
  if (state_.load(std::memory_order_acquire) != kDone) return false;
  Batch& b = batches_[open_ ^ 1];
  Commit c;
  c.first_seq = b.first_seq;
  c.last_seq = b.first_seq ? b.last_seq : 0;
  if (c.first_seq == 0) c.first_seq = 1;  // none: first > last
  c.error = b.error;
  c.bytes = b.bytes.size();
  c.latency_ns = now_ns > b.opened_ns ? now_ns - b.opened_ns : 0;
  Bump(stats_.commits);
  if (b.error) {
    Bump(stats_.io_errors);
    rotate_ = true;  // whatever the failed write left in its segment, the next goes elsewhere
  } else if (b.sync) {
    stats_.commit_latency.Add(c.latency_ns);
  }
  Bump(stats_.segments_deleted, b.unlink.size());
  b.Clear();
  state_.store(kIdle, std::memory_order_release);
  if (done) *done = c;
  return true;
}

bool Log::Poll(uint64_t now_ns, Commit* done) {
  const bool collected = Collect(now_ns, done);
  if (state_.load(std::memory_order_acquire) == kIdle && Pending()) {
    const Batch& b = batches_[open_];
    const uint64_t delay = b.sync ? opt_.commit_delay_ns : std::max(opt_.commit_delay_ns, kReleaseDelayNs);
    if (now_ns - b.opened_ns >= delay || b.bytes.size() >= opt_.max_batch_bytes) Handoff();
  }
  return collected;
}

uint64_t Log::NextDeadline() const {
  if (state_.load(std::memory_order_acquire) != kIdle) return 0;  // a commit to collect soon
  if (!Pending()) return UINT64_MAX;
  const Batch& b = batches_[open_];
  return b.opened_ns + (b.sync ? opt_.commit_delay_ns : std::max(opt_.commit_delay_ns, kReleaseDelayNs));
}

void Log::Flush(absl::FunctionRef<void(const Commit&)> fn) {
  for (;;) {
    while (state_.load(std::memory_order_acquire) == kBusy) ::usleep(20);
    Commit c;
    if (Collect(NowNs(), &c)) fn(c);
    if (!Pending()) return;
    Handoff();
  }
}

// --- the committer thread ------------------------------------------------------------------

void Log::CommitterMain() {
  for (;;) {
    uint32_t s;
    while ((s = state_.load(std::memory_order_acquire)) != kBusy && s != kStop) {
      state_.wait(s, std::memory_order_acquire);
    }
    if (s == kStop) return;
    Batch& b = batches_[open_ ^ 1];  // open_ is not written while kBusy
    b.error = WriteBatch(b);
    state_.store(kDone, std::memory_order_release);
  }
}

int Log::OpenSegment(uint64_t number) {
  if (fd_ >= 0) {
    if (opt_.fsync != Fsync::kOff) ::fdatasync(fd_);
    ::close(fd_);
    fd_ = -1;
  }
  const std::string name = SegmentName(number);
  const int fd = ::openat(dir_fd_, name.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return errno;
  struct stat sb;
  if (::fstat(fd, &sb) != 0) {
    const int e = errno;
    ::close(fd);
    return e;
  }
  if (sb.st_size == 0) {
    uint8_t h[kSegmentHeaderBytes];
    std::memcpy(h, kMagic, 8);
    Put64(h + 8, number);
    if (int e = WriteFull(fd, h, sizeof(h)); e != 0) {
      ::close(fd);
      ::unlinkat(dir_fd_, name.c_str(), 0);
      return e;
    }
    // The new file's name must survive a power cut as its records do.
    if (opt_.fsync != Fsync::kOff) ::fsync(dir_fd_);
  }
  fd_ = fd;
  fd_segment_ = number;
  return 0;
}

int Log::WriteBatch(Batch& b) {
  int err = 0;
  size_t ends = 0;  // next index into record_ends
  for (size_t i = 0; i < b.chunks.size() && err == 0; ++i) {
    const size_t begin = b.chunks[i].begin;
    const size_t end = i + 1 < b.chunks.size() ? b.chunks[i + 1].begin : b.bytes.size();
    // A segment that failed a write or a sync is never written again: what follows a damaged
    // region would be out of reach of recovery (its scan stops there) and of Read (the
    // offsets the appends were told assume the failed bytes). Those records fail too and
    // stay in memory custody; the worker starts a new segment after it sees the error.
    if (b.chunks[i].segment == broken_segment_) {
      err = EIO;
      break;
    }
    if (fd_ < 0 || fd_segment_ != b.chunks[i].segment) {
      if ((err = OpenSegment(b.chunks[i].segment)) != 0) break;
    }
    const off_t before = ::lseek(fd_, 0, SEEK_END);
    if (opt_.fsync == Fsync::kAlways) {
      size_t at = begin;
      while (err == 0 && ends < b.record_ends.size() && b.record_ends[ends] <= end) {
        err = WriteFull(fd_, b.bytes.data() + at, b.record_ends[ends] - at);
        if (err == 0 && ::fdatasync(fd_) != 0) err = errno;
        if (err == 0) Bump(stats_.syncs);
        at = b.record_ends[ends++];
      }
    } else {
      err = WriteFull(fd_, b.bytes.data() + begin, end - begin);
    }
    if (err != 0) {
      // Cut what this write left (best effort: the segment is closed for writing anyway).
      if (before >= 0) (void)::ftruncate(fd_, before);
      broken_segment_ = fd_segment_;
      ::close(fd_);
      fd_ = -1;
      break;
    }
    Bump(stats_.written_bytes, end - begin);
  }
  if (err == 0 && b.sync && opt_.fsync == Fsync::kBatch && fd_ >= 0) {
    if (::fdatasync(fd_) != 0) {
      err = errno;  // what the page cache held for this segment may never reach the disk
      broken_segment_ = fd_segment_;
      ::close(fd_);
      fd_ = -1;
    } else {
      Bump(stats_.syncs);
    }
  }
  for (uint64_t n : b.unlink) {
    if (n == fd_segment_ && fd_ >= 0) {
      ::close(fd_);
      fd_ = -1;
    }
    ::unlinkat(dir_fd_, SegmentName(n).c_str(), 0);
  }
  return err;
}

}  // namespace qbridge::store
