// A first-in first-out queue on one array that grows (doubling) and never shrinks:
// pushing and popping in a steady state allocate nothing, unlike std::deque, which frees
// and allocates a block every few hundred bytes of turnover. Indexable from the front.
#pragma once

#include <cstddef>
#include <memory>
#include <utility>

namespace qbridge::quic {

template <typename T>
class Fifo {
 public:
  Fifo() = default;
  Fifo(Fifo&& o) noexcept { *this = std::move(o); }
  Fifo& operator=(Fifo&& o) noexcept {
    if (this != &o) {
      clear();
      slots_ = std::move(o.slots_);
      mask_ = std::exchange(o.mask_, 0);
      head_ = std::exchange(o.head_, 0);
      size_ = std::exchange(o.size_, 0);
    }
    return *this;
  }
  ~Fifo() { clear(); }

  bool empty() const { return size_ == 0; }
  size_t size() const { return size_; }
  T& front() { return at(0); }
  const T& front() const { return at(0); }
  T& back() { return at(size_ - 1); }
  T& operator[](size_t i) { return at(i); }
  const T& operator[](size_t i) const { return at(i); }

  void push_back(T v) {
    if (size_ == capacity()) Grow();
    new (&slots_[(head_ + size_) & mask_]) T(std::move(v));
    ++size_;
  }
  void pop_front() {
    at(0).~T();
    head_ = (head_ + 1) & mask_;
    --size_;
  }
  void clear() {
    while (size_ > 0) pop_front();
  }

 private:
  union Slot {
    Slot() {}
    ~Slot() {}
    T value;
  };
  size_t capacity() const { return slots_ ? mask_ + 1 : 0; }
  T& at(size_t i) { return slots_[(head_ + i) & mask_].value; }
  const T& at(size_t i) const { return slots_[(head_ + i) & mask_].value; }
  void Grow() {
    const size_t cap = capacity() ? capacity() * 2 : 8;
    std::unique_ptr<Slot[]> next(new Slot[cap]);
    for (size_t i = 0; i < size_; ++i) {
      new (&next[i].value) T(std::move(at(i)));
      at(i).~T();
    }
    slots_ = std::move(next);
    mask_ = cap - 1;
    head_ = 0;
  }

  std::unique_ptr<Slot[]> slots_;
  size_t mask_ = 0, head_ = 0, size_ = 0;
};

}  // namespace qbridge::quic
