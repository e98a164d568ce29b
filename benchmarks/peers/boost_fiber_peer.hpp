// peers/boost_fiber_peer.hpp — boost::fibers::buffered_channel used from plain std::threads
// (each thread gets Boost.Fiber's implicit main fiber; a blocked push/pop parks the thread
// on the fiber scheduler's condition variable, and another thread's pop/push wakes it).
//
//   sluice_bench::boost_fiber_peer ch(1024);
//   ch.make_producer().push(1);  item v = ch.make_consumer().pop();
//
// Requires / Guarantees / Lifetime: as peers/peer.hpp.
// Capacity caveat: buffered_channel(n) needs n to be a power of 2 and >= 2, and it holds
//   at most n - 1 items (one slot stays empty to tell full from empty). We construct it
//   with n = max(2, capacity) for a power-of-2 capacity, so it holds capacity - 1 items
//   (15 for 16, 1023 for 1024; a bound one item tighter than the others get), and exactly
//   1 item for capacity 1 (n = 2). A capacity that is not a power of 2 is rounded up.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdlib>

#include <boost/fiber/buffered_channel.hpp>
// Boost.Fiber (boost/fiber/detail/cpu_relax.hpp) defines a function-like macro cpu_relax(),
// which would rewrite sluice::detail::cpu_relax() in any sluice header included after this
// one. Boost's own inline code is already expanded at this point, so dropping it is safe.
#undef cpu_relax

#include "peers/peer.hpp"

namespace sluice_bench {

class boost_fiber_peer {
 public:
  static constexpr const char* kName = "boost_fiber";
  static constexpr bool kMultiProducer = true;
  explicit boost_fiber_peer(std::size_t capacity) : ch_(std::bit_ceil(capacity < 2 ? 2 : capacity)) {}

  struct producer {
    boost::fibers::buffered_channel<item>* ch;
    void push(item v) {
      if (ch->push(v) != boost::fibers::channel_op_status::success) std::abort();
    }
  };
  struct consumer {
    boost::fibers::buffered_channel<item>* ch;
    item pop() {
      item v = 0;
      if (ch->pop(v) != boost::fibers::channel_op_status::success) std::abort();
      return v;
    }
  };
  producer make_producer() { return {&ch_}; }
  consumer make_consumer() { return {&ch_}; }

 private:
  boost::fibers::buffered_channel<item> ch_;
};

}  // namespace sluice_bench
