// The channel's cold paths, out of line: the errors a handle or a capacity can raise.
// Nothing here runs on a push or a pop that succeeds.
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <limits>
#include <new>
#include <stdexcept>
#include <string>
#include <string_view>

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

// The first number in the file at `path`, or 0 when it cannot be read or is not a number
// ("max" in a cgroup's limit: no limit).
std::uint64_t read_number(const std::string& path) {
  std::ifstream in(path);
  std::uint64_t v = 0;
  return (in >> v) ? v : 0;
}

// What a cgroup `dir` and the cgroups above it still let this process have: the least of
// limit - usage over them, or 0 when none sets a limit that can be read. v2: memory.max,
// memory.current; v1: memory.limit_in_bytes, memory.usage_in_bytes (an unlimited v1 group
// says 2^63 rounded to a page, which is past any machine and so changes nothing).
std::uint64_t cgroup_room(std::string dir, const char* limit_file, const char* usage_file) {
  std::uint64_t room = 0;
  for (;;) {
    const std::uint64_t limit = read_number(dir + "/" + limit_file);
    if (limit != 0) {
      const std::uint64_t usage = read_number(dir + "/" + usage_file);
      const std::uint64_t left = usage < limit ? limit - usage : 1;
      room = room == 0 ? left : std::min(room, left);
    }
    const std::size_t slash = dir.rfind('/');
    if (slash == std::string::npos || dir.size() <= std::string_view("/sys/fs/cgroup").size()) break;
    dir.resize(slash);
  }
  return room;
}

// "0::/a/b" (v2) or "N:memory:/a/b" (v1) in /proc/self/cgroup.
std::uint64_t cgroup_memory_room() {
  std::ifstream in("/proc/self/cgroup");
  std::string line;
  std::uint64_t room = 0;
  const auto take = [&room](std::uint64_t r) {
    if (r != 0) room = room == 0 ? r : std::min(room, r);
  };
  while (std::getline(in, line)) {
    if (line.rfind("0::", 0) == 0) {
      take(cgroup_room("/sys/fs/cgroup" + line.substr(3), "memory.max", "memory.current"));
    } else if (const std::size_t at = line.find(":memory:"); at != std::string::npos) {
      take(cgroup_room("/sys/fs/cgroup/memory" + line.substr(at + 8), "memory.limit_in_bytes",
                       "memory.usage_in_bytes"));
    }
  }
  return room;
}

// MemAvailable + SwapFree from /proc/meminfo, in bytes; 0 when it cannot be read.
std::uint64_t meminfo_available() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  std::uint64_t kib = 0, sum = 0;
  bool seen = false;
  while (in >> key >> kib) {
    if (key == "MemAvailable:" || key == "SwapFree:") {
      sum += kib * 1024;
      seen = seen || key == "MemAvailable:";
    }
    in.ignore(std::numeric_limits<std::streamsize>::max(), '\n');
  }
  return seen ? sum : 0;
}

// What this process may still map under its own limits (ulimit -v: RLIMIT_AS against its
// address space; ulimit -d: RLIMIT_DATA against its data mappings), in bytes; 0 when
// neither is set. A ring past it fails when it is allocated, but a graph's first rings
// were filled first (a bench of 5 rings of 1.2 GiB under ulimit -v 4 GB spent 19 s on
// four of them before the fifth failed); counted here, a tool's up-front check refuses it.
std::uint64_t rlimit_room() {
  std::ifstream in("/proc/self/statm");
  std::uint64_t size = 0, resident = 0, shared = 0, text = 0, lib = 0, data = 0;
  if (!(in >> size >> resident >> shared >> text >> lib >> data)) return 0;
  const long page = ::sysconf(_SC_PAGESIZE);
  if (page <= 0) return 0;
  std::uint64_t room = 0;
  const auto take = [&](int resource, std::uint64_t used_pages) {
    rlimit rl{};
    if (::getrlimit(resource, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) return;
    const std::uint64_t used = used_pages * static_cast<std::uint64_t>(page);
    const std::uint64_t left = used < rl.rlim_cur ? rl.rlim_cur - used : 1;
    room = room == 0 ? left : std::min(room, left);
  };
  take(RLIMIT_AS, size);
  take(RLIMIT_DATA, data);
  return room;
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

void throw_pop_some_of_none() {
  throw std::invalid_argument(
      "sluice::receiver::pop_some: max must be at least 1 (a 0 returned would read as the end of the channel)");
}

namespace {
void check_ring_addressable(std::size_t capacity, std::size_t slot_size) {
  if (capacity > kMaxRingCapacity || capacity > static_cast<std::size_t>(PTRDIFF_MAX) / slot_size) {
    throw std::invalid_argument(needs(capacity, slot_size) + ", more than this machine can address");
  }
}
}  // namespace

void check_ring_possible(std::size_t capacity, std::size_t slot_size) {
  check_ring_addressable(capacity, slot_size);
  const std::uint64_t bytes = std::uint64_t{capacity} * slot_size;
  if (bytes < kRingMemoryCheckBytes) return;
  check_ring_memory(capacity, slot_size, machine_memory{physical_memory(), 0});
}

void check_ring_size(std::size_t capacity, std::size_t slot_size) {
  check_ring_addressable(capacity, slot_size);
  const std::uint64_t bytes = std::uint64_t{capacity} * slot_size;
  if (bytes < kRingMemoryCheckBytes) return;  // small: let operator new decide
  check_ring_memory(capacity, slot_size, machine_memory{physical_memory(), available_memory()});
}

std::uint64_t available_memory() {
  std::uint64_t room = 0;
  for (const std::uint64_t r : {meminfo_available(), cgroup_memory_room(), rlimit_room()}) {
    if (r != 0) room = room == 0 ? r : std::min(room, r);  // 0: that one does not say
  }
  return room;
}

void check_ring_memory(std::size_t capacity, std::size_t slot_size, machine_memory m) {
  const std::uint64_t bytes = std::uint64_t{capacity} * slot_size;
  if (m.physical != 0 && bytes > m.physical) {
    throw capacity_bad_alloc(needs(capacity, slot_size) + "; that memory cannot be had (this machine has " +
                             human_bytes(static_cast<long double>(m.physical)) + ")");
  }
  if (m.available != 0 && bytes > m.available) {
    throw capacity_bad_alloc(needs(capacity, slot_size) + "; that memory cannot be had (" +
                             human_bytes(static_cast<long double>(m.available)) + " is free now" +
                             (m.physical != 0 ? ", of " + human_bytes(static_cast<long double>(m.physical)) : "") +
                             ")");
  }
}

void throw_ring_bad_alloc(std::size_t capacity, std::size_t slot_size) {
  throw capacity_bad_alloc(needs(capacity, slot_size) + "; that memory cannot be had (allocation failed)");
}

}  // namespace sluice::detail
