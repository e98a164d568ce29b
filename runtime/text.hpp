// Text helpers the runtime shares (private: not installed).
//   - utf8_clean(s): s as valid UTF-8, each byte that does not begin a valid sequence
//     replaced by U+FFFD. The exporters (JSON, Prometheus) write names through it, and
//     the graph compares stage names through it, so two names that export alike are
//     refused as duplicates.
//   - one_line(s): s with each control byte (below 0x20, and 0x7f) written \xNN, so that a
//     name with a newline in it cannot break a message promised to be one line.
//   - equal_ignoring_case(a, b): a and b equal but for ASCII case (HTTP tokens, units).
//   - duration_text(d): d exactly, in the largest of s, ms, us, ns that divides it ("100
//     ms", "1500 us", "1 ns"): a message never says 0 ms for a deadline of 1 ns.
// The tool (tools/) uses these too, so its messages and the runtime's write names alike.
#pragma once

#include <chrono>
#include <cstddef>
#include <string>
#include <string_view>

namespace sluice::detail {

// The length of the valid UTF-8 sequence at s[i] (1 to 4 bytes), or 0 when the bytes there
// are not one.
std::size_t utf8_sequence(std::string_view s, std::size_t i);
std::string utf8_clean(std::string_view s);
std::string one_line(std::string_view s);
bool equal_ignoring_case(std::string_view a, std::string_view b);
std::string duration_text(std::chrono::nanoseconds d);

}  // namespace sluice::detail
