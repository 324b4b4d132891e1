// The allocator ngtcp2 uses for every connection: blocks of a few size classes kept in a
// cache per thread (like glibc's tcache, but deep enough for loss recovery), so ack ranges,
// out-of-order stream data and retransmission records stop calling malloc once a worker has
// seen its working set. Each cache is bounded (kMaxCachedBytes per class); beyond it, and
// for larger requests, blocks go back to the heap. A block freed on another thread than
// the one that took it simply joins that thread's cache.
#pragma once

#include <ngtcp2/ngtcp2.h>

#include <cstddef>
#include <cstdint>

namespace qbridge::quic {

// The ngtcp2_mem to give ngtcp2_conn_*_new.
const ngtcp2_mem* NgMem();

struct NgMemStats {
  uint64_t reused = 0;  // requests served from this thread's cache
  uint64_t heap = 0;    // requests that went to malloc
  uint64_t cached_bytes = 0;
};
NgMemStats ThreadNgMemStats();

}  // namespace qbridge::quic
