// tools/demo/guard_note.hpp — what `sluice demo` says when its memory guard stops the
// unbounded run (tools/demo/run.cpp). Header only, so that tests/unit/demo_note_test.cpp
// checks each of its three endings without having to make the guard trip at will.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>

#include "../common/args.hpp"  // format_size

namespace sluice::tool::demo {

// total: the bytes the run was to generate; sink_rate: the sink's cap, bytes/s; guard:
// the guard, bytes; generated, sent: where the run stood when the guard stopped it,
// elapsed_s seconds in.
inline std::string guard_note(std::uint64_t total, std::uint64_t sink_rate, std::uint64_t guard,
                              std::uint64_t generated, std::uint64_t sent, double elapsed_s) {
  const double t = elapsed_s > 0 ? elapsed_s : 1e-9;
  const double growth = (static_cast<double>(generated) - static_cast<double>(sent)) / t;
  // The cap is the most the sink sends: a sink slower than its cap (seen under
  // ThreadSanitizer: 5.4 of 20 MiB/s) is projected at the rate it sent.
  const double cap = static_cast<double>(sink_rate);
  const double sent_rate = std::min(cap, static_cast<double>(sent) / t);
  // Were both sides to go on at their average rates to the end of the input, the queue
  // would peak when the last byte is generated: all of it, less what the sink sent meanwhile.
  const double would =
      static_cast<double>(total) - sent_rate * static_cast<double>(total) / std::max(1.0, static_cast<double>(generated) / t);
  std::string note = "stopped by the memory guard (" + format_size(static_cast<double>(guard)) + ") after " +
                     format_size(static_cast<double>(generated)) + " generated and " +
                     format_size(static_cast<double>(sent)) + " sent";
  if (sent_rate < 0.9 * cap) note += " (the sink sent " + format_size(sent_rate) + "/s of its " + format_size(cap) + "/s)";
  note += ": memory was growing by " + format_size(growth) + "/s";
  // The projection holds only while the source outruns the sink: where it does not (the
  // sink had sent all that was generated, and memory not given back tripped the guard),
  // the queue had drained, and the guard stopped a burst rather than a trend.
  if (would > static_cast<double>(guard)) {
    note += " and would have kept growing, to about " + format_size(would) + " for this input";
  } else if (would > 0) {
    note += ", though at this run's average rates the queue would have peaked at about " + format_size(would) +
            ", below the guard";
  } else {
    note += ", though on average the sink kept up with the source (a burst, not a trend)";
  }
  return note;
}

// The source could not get its next chunk of `chunk` bytes (a ulimit, the machine's
// memory) after `generated` bytes, `sent` of them sent; guard: the memory guard (0: none).
inline std::string oom_note(std::uint64_t chunk, std::uint64_t guard, std::uint64_t generated, std::uint64_t sent) {
  std::string note = "stopped: out of memory (the system refused the next chunk of " +
                     format_size(static_cast<double>(chunk)) + ") after " + format_size(static_cast<double>(generated)) +
                     " generated and " + format_size(static_cast<double>(sent)) + " sent";
  if (guard != 0) note += ", before the memory guard (" + format_size(static_cast<double>(guard)) + ") was reached";
  return note;
}

}  // namespace sluice::tool::demo
