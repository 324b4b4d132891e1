// Buffer (shared bytes), BufferPool (recycled by size class), Fifo (the send queue's ring)
// and NgMem (ngtcp2's allocations cached per thread).
#include <gtest/gtest.h>

#include <string>
#include <thread>

#include "quic/buffer.h"
#include "quic/fifo.h"
#include "quic/mem_pool.h"

namespace qbridge::quic {
namespace {

TEST(BufferTest, CopySharesAndCountsReferences) {
  const std::vector<uint8_t> bytes = {1, 2, 3};
  Buffer a = Buffer::Copy(bytes);
  EXPECT_TRUE(a.unique());
  Buffer b = a;
  EXPECT_FALSE(a.unique());
  EXPECT_EQ(b.data(), a.data());
  EXPECT_EQ(std::vector<uint8_t>(b.begin(), b.end()), bytes);
  b = nullptr;
  EXPECT_TRUE(a.unique());
  Buffer c = std::move(a);
  EXPECT_FALSE(a);
  EXPECT_EQ(a.size(), 0u);
  EXPECT_EQ(c[2], 3);
  EXPECT_TRUE(Buffer().empty());
  EXPECT_TRUE(Buffer::Copy(std::span<const uint8_t>()).empty());
}

TEST(BufferTest, PoolReusesBlocksOfAClass) {
  BufferPool pool;
  const uint8_t* first;
  {
    Buffer a = pool.Get(100);
    first = a.data();
    EXPECT_EQ(a.size(), 100u);
    EXPECT_EQ(pool.stats().outstanding, 1u);
  }
  EXPECT_EQ(pool.stats().outstanding, 0u);
  Buffer b = pool.Get(128);  // the same 128-byte class
  EXPECT_EQ(b.data(), first);
  EXPECT_EQ(pool.stats().reused, 1u);
  EXPECT_EQ(pool.stats().allocated, 1u);
  Buffer c = pool.Get(129);  // the next class: a new block
  EXPECT_NE(c.data(), first);
  EXPECT_EQ(pool.stats().allocated, 2u);
  Buffer big = pool.Get(1 << 20);  // beyond the classes: the heap
  EXPECT_EQ(big.size(), 1u << 20);
  EXPECT_EQ(pool.stats().allocated, 3u);
}

TEST(BufferTest, PoolKeepsABoundedFreeList) {
  BufferPool pool(/*max_cached_bytes_per_class=*/64 * 1024);  // 16 blocks of 4 KiB
  std::vector<Buffer> held;
  for (int i = 0; i < 100; ++i) held.push_back(pool.Get(4096));
  held.clear();  // 16 stay cached, the rest go back to the heap
  for (int i = 0; i < 100; ++i) held.push_back(pool.Get(4096));
  EXPECT_EQ(pool.stats().reused, 16u);
  EXPECT_EQ(pool.stats().allocated, 184u);
}

TEST(BufferTest, BuffersOutliveTheirPool) {
  Buffer kept;
  {
    BufferPool pool;
    kept = pool.Copy(std::vector<uint8_t>{7, 8, 9});
  }
  EXPECT_EQ(kept[1], 8);  // still valid; freed with its last reference (ASan checks)
  kept = nullptr;
}

TEST(BufferTest, HeapBuffersMayBeSharedAcrossThreads) {
  const Buffer shared = Buffer::Copy(std::vector<uint8_t>(64, 1));
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) {
        Buffer copy = shared;
        (void)copy;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_TRUE(shared.unique());
}

TEST(FifoTest, WrapsAndGrowsInOrder) {
  Fifo<std::string> f;
  int next_in = 0, next_out = 0;
  for (int round = 0; round < 50; ++round) {
    for (int i = 0; i < round % 7 + 3; ++i) f.push_back(std::to_string(next_in++));
    for (int i = 0; i < round % 5 + 1 && !f.empty(); ++i) {
      ASSERT_EQ(f.front(), std::to_string(next_out++));
      f.pop_front();
    }
    for (size_t i = 0; i < f.size(); ++i) ASSERT_EQ(f[i], std::to_string(next_out + int(i)));
  }
  Fifo<std::string> moved = std::move(f);
  EXPECT_TRUE(f.empty());
  EXPECT_EQ(moved.size(), size_t(next_in - next_out));
  EXPECT_EQ(moved.back(), std::to_string(next_in - 1));
}

TEST(NgMemTest, ReusesFreedBlocksAndReallocKeepsBytes) {
  const ngtcp2_mem* mem = NgMem();
  void* a = mem->malloc(40, mem->user_data);
  const NgMemStats before = ThreadNgMemStats();
  mem->free(a, mem->user_data);
  void* b = mem->malloc(44, mem->user_data);  // the same class (48 bytes)
  EXPECT_EQ(a, b);
  EXPECT_EQ(ThreadNgMemStats().reused, before.reused + 1);
  auto* z = static_cast<uint8_t*>(mem->calloc(10, 10, mem->user_data));
  for (int i = 0; i < 100; ++i) ASSERT_EQ(z[i], 0);
  for (int i = 0; i < 100; ++i) z[i] = uint8_t(i);
  auto* r = static_cast<uint8_t*>(mem->realloc(z, 5000, mem->user_data));
  for (int i = 0; i < 100; ++i) ASSERT_EQ(r[i], i);
  mem->free(r, mem->user_data);
  mem->free(b, mem->user_data);
  auto* huge = static_cast<uint8_t*>(mem->calloc(1, 1 << 20, mem->user_data));  // beyond the classes
  ASSERT_NE(huge, nullptr);
  EXPECT_EQ(huge[12345], 0);
  mem->free(huge, mem->user_data);
  EXPECT_EQ(mem->calloc(SIZE_MAX / 2, 4, mem->user_data), nullptr);  // overflow refused
}

// A block holds what its class does: realloc within it keeps the block. The classes stay
// close to what ngtcp2 keeps per connection (an idle one holds about 20 blocks).
TEST(NgMemTest, ClassesFitNgtcp2sLongLivedBlocksClosely) {
  const ngtcp2_mem* mem = NgMem();
  struct Case {
    size_t size, capacity;
  };
  // Multiples of 16 up to 128; four steps per power of two; a power of two plus 64.
  for (const Case c : {Case{1, 16}, Case{108, 112}, Case{129, 160}, Case{348, 384}, Case{544, 576},
                       Case{784, 896}, Case{2064, 2112}, Case{3344, 3584}, Case{8200, 8256}}) {
    void* p = mem->malloc(c.size, mem->user_data);
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(mem->realloc(p, c.capacity, mem->user_data), p) << c.size;
    void* q = mem->realloc(p, c.capacity + 1, mem->user_data);
    EXPECT_NE(q, p) << c.size;
    mem->free(q, mem->user_data);
  }
}

TEST(NgMemTest, BlocksMayBeFreedOnAnotherThreadAndTheCacheIsBounded) {
  const ngtcp2_mem* mem = NgMem();
  std::vector<void*> blocks;
  for (int i = 0; i < 1000; ++i) blocks.push_back(mem->malloc(8216, mem->user_data));
  std::thread([&] {
    for (void* p : blocks) mem->free(p, mem->user_data);
    // 1 MiB of 8 KiB blocks at most stays cached on this thread; the rest went to the heap.
    EXPECT_LE(ThreadNgMemStats().cached_bytes, 1u << 20);
    EXPECT_GT(ThreadNgMemStats().cached_bytes, 0u);
  }).join();
}

}  // namespace
}  // namespace qbridge::quic
