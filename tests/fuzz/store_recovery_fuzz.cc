// Arbitrary bytes as a custody log's segment files (up to three, split at "\n--seg--\n"),
// recovered the way qbridge recovers a bridge's store at start-up. Recovery must never crash,
// must hand back records in increasing sequence order, and must leave a log that is well
// formed: each live record reads back (Log::Read) from where recovery says it lies, and a
// record appended after it and everything recovered come back on the next open.
// Seeds (tests/fuzz/corpus/store_recovery) are real logs: whole, torn, with releases and
// several segments.
#include <sys/stat.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "dataplane/store/log.h"

namespace {

std::string Dir() {
  static const std::string dir = [] {
    const char* base = ::access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    std::string d = std::string(base) + "/qbridge-store-fuzz-" + std::to_string(::getpid());
    return d;
  }();
  return dir;
}

struct Rec {
  uint64_t seq;
  std::string data;
  qbridge::store::Location where;
};

std::vector<Rec> Recover(const qbridge::store::LogOptions& o, std::unique_ptr<qbridge::store::Log>* log) {
  std::vector<Rec> out;
  auto l = qbridge::store::Log::Open(
      o, [&](uint64_t seq, uint32_t, std::span<const uint8_t> d, const qbridge::store::Location& where) {
        out.push_back(Rec{seq, std::string(d.begin(), d.end()), where});
      });
  if (!l.ok()) __builtin_trap();  // the directory exists: damaged contents are no reason to fail
  *log = std::move(*l);
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace fs = std::filesystem;
  const std::string dir = Dir();
  std::error_code ec;
  fs::remove_all(dir, ec);
  fs::create_directories(dir, ec);
  static const std::string kSep = "\n--seg--\n";
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  size_t at = 0;
  for (uint64_t n = 1; n <= 3 && at <= in.size(); ++n) {
    size_t end = n < 3 ? in.find(kSep, at) : std::string_view::npos;
    if (end == std::string_view::npos) end = in.size();
    char name[64];
    std::snprintf(name, sizeof(name), "%s/%020llu.seg", dir.c_str(), static_cast<unsigned long long>(n));
    if (FILE* f = std::fopen(name, "wb")) {
      std::fwrite(in.data() + at, 1, end - at, f);
      std::fclose(f);
    }
    at = end + kSep.size();
  }

  qbridge::store::LogOptions o;
  o.dir = dir;
  o.fsync = qbridge::store::Fsync::kOff;  // the fuzzer is not testing the disk
  o.commit_delay_ns = 0;
  std::unique_ptr<qbridge::store::Log> log;
  const std::vector<Rec> first = Recover(o, &log);
  for (size_t i = 1; i < first.size(); ++i)
    if (first[i].seq <= first[i - 1].seq) __builtin_trap();
  if (log->live_records() != first.size()) __builtin_trap();
  // Every live record reads back from where recovery says it lies, as recovery gave it.
  for (const Rec& r : first) {
    const auto back = log->Read(r.where, r.seq);
    if (!back.ok() || std::string(back->begin(), back->end()) != r.data) __builtin_trap();
  }
  const std::string extra = "appended after recovery";
  const uint64_t seq =
      log->Append(1, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(extra.data()), extra.size()), 1);
  if (!first.empty() && seq <= first.back().seq) __builtin_trap();  // never reuses a number
  log.reset();  // commits the append

  const std::vector<Rec> second = Recover(o, &log);
  if (second.size() != first.size() + 1) __builtin_trap();
  for (size_t i = 0; i < first.size(); ++i)
    if (second[i].seq != first[i].seq || second[i].data != first[i].data) __builtin_trap();
  if (second.back().seq != seq || second.back().data != extra) __builtin_trap();
  log.reset();
  fs::remove_all(dir, ec);
  return 0;
}
