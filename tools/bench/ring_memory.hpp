// tools/bench/ring_memory.hpp — a --capacity whose channels cannot fit, refused up front.
//
// A channel's ring allocates and touches all its slots when it is made, and the library
// refuses only the first ring that does not fit (detail::check_ring_memory), after the
// earlier ones took their memory: --capacity 100M on chain:4 held 21.9 GB for 100 s before
// that error. A bench run in one process and each side of a --cut run count their rings
// and refuse here, with exit 2, before anything is allocated or connected.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>

#include "common/args.hpp"
#include "sluice/detail/ring_buffer.hpp"

namespace sluice::tool::bench {

// Throws usage_error when `rings` rings of `capacity` slots of `slot` bytes need more than
// `free_now` bytes, or, where the system will not say what is free (`free_now` 0), more
// than this process can address. `whose`: "the graph's", "a side's".
inline void refuse_rings_past_free_memory(const std::string& capacity_text, std::uint64_t capacity,
                                          std::uint64_t rings, std::size_t slot, const std::string& whose,
                                          std::uint64_t free_now = sluice::detail::available_memory()) {
  const long double need = static_cast<long double>(rings) * static_cast<long double>(capacity) * slot;
  const long double limit = free_now != 0 ? static_cast<long double>(free_now)
                                          : static_cast<long double>(std::numeric_limits<std::size_t>::max());
  if (need <= limit) return;
  throw usage_error("sluice bench: --capacity " + capacity_text + " is too large: " + whose + " " +
                    std::to_string(rings) + " channels need " + format_size(static_cast<double>(need)) +
                    " for their slots (" + std::to_string(slot) + " bytes each, allocated up front); " +
                    (free_now != 0 ? format_size(static_cast<double>(free_now)) + " is free now"
                                   : std::string("more than this process can address")));
}

}  // namespace sluice::tool::bench
