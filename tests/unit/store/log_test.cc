// The custody log on a real file system (a fresh directory per test under the test's temp
// dir): what is committed comes back after a reopen, released records do not, segments go
// once everything in them is released, a torn or corrupted tail is cut and counted, and a
// failed write is reported without losing what was committed before or after it.
#include "dataplane/store/log.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace qbridge::store {
namespace {

namespace fs = std::filesystem;

struct Rec {
  uint64_t seq;
  uint32_t meta;
  std::string data;
};

// While it lives, files this process writes stop growing at `bytes`: a write past it fails
// with EFBIG (SIGXFSZ ignored), as a full disk fails it with ENOSPC.
class FileSizeLimit {
 public:
  explicit FileSizeLimit(rlim_t bytes) {
    ::signal(SIGXFSZ, SIG_IGN);
    ::getrlimit(RLIMIT_FSIZE, &old_);
    rlimit small = old_;
    small.rlim_cur = bytes;
    ok_ = ::setrlimit(RLIMIT_FSIZE, &small) == 0;
  }
  ~FileSizeLimit() { Lift(); }
  void Lift() {
    if (ok_) ::setrlimit(RLIMIT_FSIZE, &old_);
    ok_ = false;
  }
  bool ok() const { return ok_; }

 private:
  rlimit old_;
  bool ok_ = false;
};

class LogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* tmp = std::getenv("TMPDIR");
    char tmpl[256];
    std::snprintf(tmpl, sizeof(tmpl), "%s/qbridge-log-XXXXXX", tmp ? tmp : "/tmp");
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    opt_.dir = dir_ + "/bridge";
    opt_.commit_delay_ns = 0;
  }
  void TearDown() override {
    log_.reset();
    fs::remove_all(dir_);
  }

  // Opens the log and returns what it recovered.
  std::vector<Rec> Open(RecoveryStats* st = nullptr) {
    std::vector<Rec> out;
    auto l = Log::Open(
        opt_,
        [&](uint64_t seq, uint32_t meta, std::span<const uint8_t> d) {
          out.push_back(Rec{seq, meta, std::string(d.begin(), d.end())});
        },
        st);
    EXPECT_TRUE(l.ok()) << l.status();
    if (l.ok()) log_ = std::move(*l);
    return out;
  }
  // Log::Read's bytes as a string.
  absl::StatusOr<std::string> ReadBack(const Location& where, uint64_t seq) {
    auto r = log_->Read(where, seq);
    if (!r.ok()) return r.status();
    return std::string(r->begin(), r->end());
  }
  uint64_t Append(const std::string& s, uint32_t meta = 7) {
    return log_->Append(meta, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()), s.size()), ++now_);
  }
  std::vector<Commit> Flush() {
    std::vector<Commit> out;
    log_->Flush([&](const Commit& c) { out.push_back(c); });
    return out;
  }
  std::vector<fs::path> Segments() const {
    std::vector<fs::path> out;
    for (const auto& e : fs::directory_iterator(opt_.dir))
      if (e.path().extension() == ".seg") out.push_back(e.path());
    std::sort(out.begin(), out.end());
    return out;
  }

  std::string dir_;
  LogOptions opt_;
  std::unique_ptr<Log> log_;
  uint64_t now_ = 1'000'000;
};

TEST_F(LogTest, CommittedRecordsComeBackInOrderAfterReopen) {
  EXPECT_TRUE(Open().empty());
  std::vector<uint64_t> seqs;
  for (int i = 0; i < 1000; ++i) seqs.push_back(Append("message " + std::to_string(i), uint32_t(i)));
  for (size_t i = 1; i < seqs.size(); ++i) EXPECT_GT(seqs[i], seqs[i - 1]);
  uint64_t last = 0;
  for (const Commit& c : Flush()) {
    EXPECT_EQ(c.error, 0);
    if (c.first_seq <= c.last_seq) last = c.last_seq;
  }
  EXPECT_EQ(last, seqs.back());
  EXPECT_EQ(log_->live_records(), 1000u);
  log_.reset();
  RecoveryStats st;
  std::vector<Rec> got = Open(&st);
  ASSERT_EQ(got.size(), 1000u);
  for (int i = 0; i < 1000; ++i) {
    EXPECT_EQ(got[size_t(i)].seq, seqs[size_t(i)]);
    EXPECT_EQ(got[size_t(i)].meta, uint32_t(i));
    EXPECT_EQ(got[size_t(i)].data, "message " + std::to_string(i));
  }
  EXPECT_EQ(st.live, 1000u);
  EXPECT_EQ(st.truncated_bytes, 0u);
  // New records continue the sequence: none reuses a number still on disk.
  EXPECT_GT(Append("after"), seqs.back());
}

TEST_F(LogTest, PollCommitsAGroupAndReportsItsRange) {
  Open();
  const uint64_t a = Append("a"), b = Append("b"), c = Append("c");
  Commit done;
  bool got = false;
  for (int i = 0; i < 100000 && !got; ++i) {
    got = log_->Poll(++now_, &done);
    if (!got) ::usleep(10);
  }
  ASSERT_TRUE(got);
  EXPECT_EQ(done.error, 0);
  EXPECT_EQ(done.first_seq, a);
  EXPECT_EQ(done.last_seq, c);
  EXPECT_GT(done.bytes, 3 * kRecordHeaderBytes);
  EXPECT_EQ(log_->stats().commits.load(), 1u);
  EXPECT_EQ(log_->stats().syncs.load(), 1u);  // one fdatasync for the group
  (void)b;
}

TEST_F(LogTest, CommitDelayHoldsTheFirstRecordForMore) {
  opt_.commit_delay_ns = 1'000'000;
  Open();
  const uint64_t t0 = now_;
  Append("x");
  Commit c;
  EXPECT_FALSE(log_->Poll(t0 + 500'000, &c));  // not due: nothing handed off
  EXPECT_EQ(log_->NextDeadline(), t0 + 1 + 1'000'000);
  EXPECT_FALSE(log_->Poll(t0 + 1'000'001, &c));  // handed off now
  EXPECT_EQ(log_->NextDeadline(), 0u);           // a commit in flight: poll again soon
}

TEST_F(LogTest, ReleasedRecordsDoNotComeBack) {
  Open();
  std::vector<uint64_t> seqs;
  for (int i = 0; i < 10; ++i) seqs.push_back(Append(std::to_string(i)));
  for (int i = 0; i < 10; i += 2) log_->Release(seqs[size_t(i)], 1, ++now_);
  EXPECT_EQ(log_->live_records(), 5u);
  Flush();
  log_.reset();
  std::vector<Rec> got = Open();
  ASSERT_EQ(got.size(), 5u);
  for (size_t i = 0; i < 5; ++i) EXPECT_EQ(got[i].data, std::to_string(2 * i + 1));
}

TEST_F(LogTest, SegmentsRotateAndGoOldestFirstWhenReleased) {
  opt_.segment_bytes = 4096;
  Open();
  const std::string payload(200, 'p');
  std::vector<uint64_t> seqs;
  for (int i = 0; i < 200; ++i) seqs.push_back(Append(payload));
  Flush();
  const size_t segments = Segments().size();
  EXPECT_GT(segments, 8u);
  EXPECT_EQ(log_->segments(), segments);
  // Releasing a later segment's records deletes nothing while an earlier one holds a record.
  for (size_t i = 1; i < seqs.size(); ++i) log_->Release(seqs[i], payload.size(), ++now_);
  Flush();
  EXPECT_EQ(Segments().size(), segments);
  log_.reset();
  std::vector<Rec> got = Open();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].seq, seqs[0]);
  log_->Release(seqs[0], payload.size(), ++now_);
  Flush();
  EXPECT_EQ(log_->live_records(), 0u);
  EXPECT_LE(Segments().size(), 1u);  // at most the one now written to
  log_.reset();
  EXPECT_TRUE(Open().empty());
}

TEST_F(LogTest, TornTailIsCutAndCounted) {
  Open();
  for (int i = 0; i < 20; ++i) Append("record " + std::to_string(i));
  Flush();
  log_.reset();
  const fs::path seg = Segments().back();
  const uintmax_t size = fs::file_size(seg);
  fs::resize_file(seg, size - 5);  // the last record loses its last bytes
  RecoveryStats st;
  std::vector<Rec> got = Open(&st);
  ASSERT_EQ(got.size(), 19u);
  EXPECT_EQ(got.back().data, "record 18");
  EXPECT_EQ(st.corrupt_segments, 1u);
  EXPECT_EQ(st.truncated_bytes, kRecordHeaderBytes + std::string("record 19").size() - 5);
  // The cut file is well formed again: appends after it survive the next reopen.
  Append("after");
  Flush();
  log_.reset();
  got = Open(&st);
  ASSERT_EQ(got.size(), 20u);
  EXPECT_EQ(got.back().data, "after");
}

TEST_F(LogTest, CorruptedRecordEndsItsSegmentAndIsNeverReplayed) {
  Open();
  std::vector<uint64_t> seqs;
  for (int i = 0; i < 10; ++i) seqs.push_back(Append("payload-" + std::to_string(i)));
  Flush();
  log_.reset();
  const fs::path seg = Segments().back();
  {
    // Flip one payload byte of the fifth record.
    std::fstream f(seg, std::ios::in | std::ios::out | std::ios::binary);
    const size_t rec = kRecordHeaderBytes + std::string("payload-0").size();
    f.seekp(std::streamoff(kSegmentHeaderBytes + 4 * rec + kRecordHeaderBytes + 2));
    f.put('X');
  }
  RecoveryStats st;
  std::vector<Rec> got = Open(&st);
  ASSERT_EQ(got.size(), 4u);
  for (const Rec& r : got) EXPECT_EQ(r.data.find('X'), std::string::npos);
  EXPECT_EQ(st.corrupt_segments, 1u);
  EXPECT_GT(st.truncated_bytes, 0u);
}

TEST_F(LogTest, ForeignAndEmptyFilesAreHarmless) {
  fs::create_directories(opt_.dir);
  std::ofstream(opt_.dir + "/00000000000000000001.seg") << "not a segment at all";
  std::ofstream(opt_.dir + "/00000000000000000002.seg");  // created, header never written
  std::ofstream(opt_.dir + "/notes.txt") << "left alone";
  RecoveryStats st;
  EXPECT_TRUE(Open(&st).empty());
  EXPECT_EQ(st.corrupt_segments, 1u);  // the empty one is not even that
  Append("ok");
  Flush();
  log_.reset();
  std::vector<Rec> got = Open();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_TRUE(fs::exists(opt_.dir + "/notes.txt"));
}

TEST_F(LogTest, EveryFsyncModeKeepsTheSameRecords) {
  for (Fsync mode : {Fsync::kBatch, Fsync::kAlways, Fsync::kOff}) {
    log_.reset();
    fs::remove_all(opt_.dir);
    opt_.fsync = mode;
    Open();
    for (int i = 0; i < 50; ++i) Append(std::to_string(i));
    Flush();
    const uint64_t syncs = log_->stats().syncs.load();
    if (mode == Fsync::kAlways) {
      EXPECT_EQ(syncs, 50u);
    } else if (mode == Fsync::kOff) {
      EXPECT_EQ(syncs, 0u);
    } else {
      EXPECT_LT(syncs, 50u);
    }
    log_.reset();
    EXPECT_EQ(Open().size(), 50u) << int(mode);
  }
}

TEST_F(LogTest, AFailedWriteIsReportedAndLaterWritesGoToANewSegment) {
  Open();
  Append("before");
  Flush();
  FileSizeLimit limit(64);  // the next write fails
  ASSERT_TRUE(limit.ok());
  Append(std::string(4096, 'f'));
  std::vector<Commit> commits = Flush();
  limit.Lift();
  ASSERT_FALSE(commits.empty());
  EXPECT_NE(commits.back().error, 0);
  EXPECT_EQ(log_->stats().io_errors.load(), 1u);
  Append("after");
  commits = Flush();
  ASSERT_FALSE(commits.empty());
  EXPECT_EQ(commits.back().error, 0);
  log_.reset();
  RecoveryStats st;
  std::vector<Rec> got = Open(&st);
  ASSERT_EQ(got.size(), 2u);  // the failed record is not on disk; nothing else was lost
  EXPECT_EQ(got[0].data, "before");
  EXPECT_EQ(got[1].data, "after");
  EXPECT_EQ(st.truncated_bytes, 0u);  // the failed write was cut back
}

TEST_F(LogTest, OneLogPerDirectory) {
  Open();
  auto second = Log::Open(opt_, [](uint64_t, uint32_t, std::span<const uint8_t>) {});
  ASSERT_FALSE(second.ok());
  EXPECT_NE(second.status().message().find("in use"), std::string_view::npos) << second.status();
  log_.reset();  // closing releases it
  EXPECT_TRUE(Log::Open(opt_, [](uint64_t, uint32_t, std::span<const uint8_t>) {}).ok());
}

TEST_F(LogTest, TwoPartPayloadsComeBackWhole) {
  Open();
  const std::string head = "HEAD", body = "body";
  log_->Append(1, {reinterpret_cast<const uint8_t*>(head.data()), head.size()},
               {reinterpret_cast<const uint8_t*>(body.data()), body.size()}, ++now_);
  EXPECT_EQ(log_->live_bytes(), 8u);
  Flush();
  log_.reset();
  std::vector<Rec> got = Open();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].data, "HEADbody");
}

TEST_F(LogTest, ReadBringsBackACommittedRecordFromWhereAppendPutIt) {
  Open();
  std::vector<std::pair<uint64_t, Location>> at;
  for (int i = 0; i < 50; ++i) {
    const std::string d = "record-" + std::to_string(i);
    Location where;
    const uint64_t seq =
        log_->Append(1, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(d.data()), d.size()), ++now_, &where);
    at.emplace_back(seq, where);
  }
  Flush();
  for (size_t i = 0; i < at.size(); ++i) {
    auto got = ReadBack(at[i].second, at[i].first);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(*got, "record-" + std::to_string(i));
  }
  // Recovery reports the same locations, and Read works across a reopen.
  log_.reset();
  std::vector<std::pair<uint64_t, Location>> recovered;
  auto l = Log::Open(opt_, [&](uint64_t seq, uint32_t, std::span<const uint8_t>, const Location& where) {
    recovered.emplace_back(seq, where);
  });
  ASSERT_TRUE(l.ok()) << l.status();
  log_ = std::move(*l);
  ASSERT_EQ(recovered.size(), at.size());
  for (size_t i = 0; i < at.size(); ++i) {
    EXPECT_EQ(recovered[i].second.segment, at[i].second.segment);
    EXPECT_EQ(recovered[i].second.offset, at[i].second.offset);
    auto got = ReadBack(recovered[i].second, recovered[i].first);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(*got, "record-" + std::to_string(i));
  }
}

TEST_F(LogTest, ReadRefusesARecordThatFailsItsChecksum) {
  Open();
  Location where;
  const std::string d = "precious";
  const uint64_t seq =
      log_->Append(1, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(d.data()), d.size()), ++now_, &where);
  Flush();
  {
    std::fstream f(Segments().back(), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(std::streamoff(where.offset + kRecordHeaderBytes + 2));
    f.put('X');
  }
  const auto got = ReadBack(where, seq);
  EXPECT_EQ(got.status().code(), absl::StatusCode::kDataLoss) << got.status();
  EXPECT_FALSE(ReadBack(where, seq + 1).ok());  // and a seq that is not there
}

// A batch filled while a write failed is aimed at the segment that failed: it fails too
// (its messages stay in the caller's memory custody) rather than landing behind a damaged
// region, out of reach of recovery and of Read. What follows goes to a new segment.
TEST_F(LogTest, ABatchFilledWhileAWriteFailedFailsTooAndLaterOnesGoElsewhere) {
  opt_.commit_delay_ns = 1'000'000'000;  // batches go only when Flush or Poll hands them over
  Open();
  Append("first");
  Flush();
  FileSizeLimit limit(256);
  ASSERT_TRUE(limit.ok());
  Append(std::string(1024, 'f'));  // fails: past the limit
  log_->Poll(now_ + 2'000'000'000, nullptr);  // handed to the committer
  Append("filled meanwhile");      // the same segment, by the worker's account
  std::vector<Commit> commits;
  while (commits.empty()) {  // the failed write, collected; this batch is not due yet
    Commit c;
    if (log_->Poll(now_, &c)) commits.push_back(c);
  }
  ASSERT_NE(commits[0].error, 0);
  limit.Lift();
  commits = Flush();
  ASSERT_FALSE(commits.empty());
  EXPECT_NE(commits.back().error, 0) << "written behind a failed write";
  const std::string d = "after";
  Location where;
  const uint64_t seq =
      log_->Append(1, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(d.data()), d.size()), ++now_, &where);
  commits = Flush();
  ASSERT_FALSE(commits.empty());
  EXPECT_EQ(commits.back().error, 0);
  const auto back = ReadBack(where, seq);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, d);
  log_.reset();
  std::vector<Rec> got = Open();
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].data, "first");
  EXPECT_EQ(got[1].data, "after");
}

TEST(LatencyHistogramTest, PercentilesBoundTheSamples) {
  LatencyHistogram h;
  EXPECT_EQ(h.Percentile(0.99), 0u);
  for (uint64_t i = 1; i <= 1000; ++i) h.Add(i * 1000);  // 1 us .. 1 ms
  const uint64_t p50 = h.Percentile(0.5), p99 = h.Percentile(0.99);
  EXPECT_GE(p50, 500'000u);
  EXPECT_LE(p50, 500'000u * 5 / 4);
  EXPECT_GE(p99, 990'000u);
  EXPECT_LE(p99, 990'000u * 5 / 4);
  EXPECT_EQ(h.count(), 1000u);
}

TEST(Crc32cTest, MatchesTheStandardCheckValue) {
  const std::string s = "123456789";
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  EXPECT_EQ(Crc32c({p, s.size()}), 0xE3069283u);
  EXPECT_EQ(Crc32c({p + 4, 5}, Crc32c({p, 4})), 0xE3069283u);  // chains
}

}  // namespace
}  // namespace qbridge::store
