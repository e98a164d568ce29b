// The channel's cold paths, out of line: the errors a handle or a capacity can raise.
// Nothing here runs on a push or a pop that succeeds.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <new>
#include <stdexcept>
#include <string>

#include "capacity_error.hpp"
#include "sluice/channel.hpp"
#include "sluice/detail/ring_buffer.hpp"

namespace sluice::detail {
namespace {

// "16 TiB", "1.5 GiB", "512 bytes": for messages only.
std::string human_bytes(long double bytes) {
  static constexpr const char* kUnits[] = {"bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB"};
  int u = 0;
  while (bytes >= 1024 && u < 7) {
    bytes /= 1024;
    ++u;
  }
  char buf[64];
  if (u == 0 || bytes >= 100 || bytes == static_cast<long double>(static_cast<std::uint64_t>(bytes))) {
    std::snprintf(buf, sizeof buf, "%.0Lf %s", bytes, kUnits[u]);
  } else {
    std::snprintf(buf, sizeof buf, "%.1Lf %s", bytes, kUnits[u]);
  }
  return buf;
}

// Physical memory of this machine in bytes, or 0 when the system will not say.
std::uint64_t physical_memory() noexcept {
  const long pages = ::sysconf(_SC_PHYS_PAGES);
  const long page = ::sysconf(_SC_PAGESIZE);
  if (pages <= 0 || page <= 0) return 0;
  const auto p = static_cast<std::uint64_t>(pages);
  const auto s = static_cast<std::uint64_t>(page);
  return p > std::numeric_limits<std::uint64_t>::max() / s ? std::numeric_limits<std::uint64_t>::max() : p * s;
}

std::string needs(std::size_t capacity, std::size_t slot_size) {
  return "sluice::bounded: capacity " + std::to_string(capacity) + " needs " +
         human_bytes(static_cast<long double>(capacity) * static_cast<long double>(slot_size)) +
         " for its slots (" + std::to_string(slot_size) + " bytes each, allocated up front)";
}

}  // namespace

void throw_empty_handle(const char* call) {
  throw std::logic_error(std::string(call) +
                         " on an empty handle (default-constructed, moved-from or reset)");
}

void check_ring_size(std::size_t capacity, std::size_t slot_size) {
  if (capacity > kMaxRingCapacity || capacity > static_cast<std::size_t>(PTRDIFF_MAX) / slot_size) {
    throw std::invalid_argument(needs(capacity, slot_size) + ", more than this machine can address");
  }
  const std::uint64_t bytes = std::uint64_t{capacity} * slot_size;
  if (bytes < (std::uint64_t{1} << 30)) return;  // below 1 GiB: let operator new decide
  const std::uint64_t phys = physical_memory();
  if (phys != 0 && bytes > phys) {
    throw capacity_bad_alloc(needs(capacity, slot_size) + "; that memory cannot be had (this machine has " +
                             human_bytes(static_cast<long double>(phys)) + ")");
  }
}

void throw_ring_bad_alloc(std::size_t capacity, std::size_t slot_size) {
  throw capacity_bad_alloc(needs(capacity, slot_size) + "; that memory cannot be had (allocation failed)");
}

}  // namespace sluice::detail
