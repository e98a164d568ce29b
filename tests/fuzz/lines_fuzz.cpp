// tests/fuzz/lines_fuzz.cpp — io::line_splitter (what the io::lines stage runs) and
// join_lines, against a plain reference split.
//
// Input: bytes 0-1 choose max_line (little-endian u16 v: 0xffff is SIZE_MAX, 0xfffe is
// SIZE_MAX - 1, anything else v % 1024), byte 2 the size of the chunks the text is fed
// in (0: one chunk); the rest is the text.
//
// Properties:
//   - Reference: split at '\n', drop one '\r' before it; a last line without '\n' counts
//     if it is not empty, and loses one '\r' at its very end.
//   - Where no reference line is longer than max_line: the splitter gives exactly the
//     reference lines, numbered 1..n, and never throws; join_lines writes them back as
//     the input with CRLF turned into LF and a final '\n'.
//   - Otherwise it throws io::error (nothing else), one line naming the first long
//     line's number, after giving exactly the lines before that one.
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_support.hpp"
#include "sluice/buffer.hpp"
#include "sluice/channel.hpp"
#include "sluice/io/error.hpp"
#include "sluice/io/lines.hpp"

namespace {

using sluice::fuzz::printable;

std::vector<std::string_view> reference_lines(std::string_view text) {
  std::vector<std::string_view> r;
  std::size_t start = 0;
  for (;;) {
    const std::size_t nl = text.find('\n', start);
    std::string_view l = text.substr(start, nl == std::string_view::npos ? std::string_view::npos : nl - start);
    if (nl == std::string_view::npos && l.empty()) break;
    if (!l.empty() && l.back() == '\r') l.remove_suffix(1);
    r.push_back(l);
    if (nl == std::string_view::npos) break;
    start = nl + 1;
  }
  return r;
}

std::string join(const std::vector<sluice::io::line>& lines, std::size_t chunk) {
  // A channel per side, sized so that nothing ever blocks on this one thread.
  auto [ltx, lrx] = sluice::bounded<sluice::io::line>(lines.size() + 1);
  for (const auto& l : lines) SLUICE_FUZZ_CHECK(ltx.push(l), "push into an open channel");
  ltx.close();
  std::size_t total = 0;
  for (const auto& l : lines) total += l.size() + 1;
  auto [btx, brx] = sluice::bounded<sluice::buffer>(total + 2);  // weighted: bytes, at least 1 per buffer
  sluice::io::join_lines_stage<sluice::io::line>({.chunk = chunk})(lrx, btx, std::stop_token{});
  btx.close();
  std::string out;
  while (auto b = brx.try_pop()) {
    SLUICE_FUZZ_CHECK(!b->empty(), "join_lines pushed an empty buffer");
    out.append(b->view());
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  sluice::fuzz::input in(data, size);
  const std::uint16_t v = in.u16();
  const std::size_t max_line = v == 0xffff   ? std::numeric_limits<std::size_t>::max()
                               : v == 0xfffe ? std::numeric_limits<std::size_t>::max() - 1
                                             : std::size_t{v} % 1024;
  const std::size_t piece = in.byte();
  const std::string_view text = in.rest();
  const std::string where = " (max_line " + std::to_string(max_line) + ", piece " + std::to_string(piece) +
                            ", text " + printable(text) + ")";

  const std::vector<std::string_view> want = reference_lines(text);
  std::size_t first_long = want.size();
  for (std::size_t i = 0; i < want.size(); ++i) {
    if (want[i].size() > max_line) {
      first_long = i;
      break;
    }
  }

  sluice::io::line_splitter split(max_line);
  std::vector<sluice::io::line> got;
  std::string error;
  try {
    std::string_view rest = text;
    while (!rest.empty()) {
      const std::string_view c = rest.substr(0, piece == 0 ? rest.size() : piece);
      rest.remove_prefix(c.size());
      split.feed(sluice::buffer::copy_of(c), got);
    }
    split.finish(got);
  } catch (const sluice::io::error& e) {
    error = e.what();
  }

  if (first_long == want.size()) {
    SLUICE_FUZZ_CHECK(error.empty(), "no line is over the limit, yet: " + error + where);
    SLUICE_FUZZ_CHECK(got.size() == want.size(),
                      std::to_string(got.size()) + " lines, want " + std::to_string(want.size()) + where);
    SLUICE_FUZZ_CHECK(split.count() == want.size(), std::to_string(split.count()) + where);
  } else {
    SLUICE_FUZZ_CHECK(!error.empty(), "line " + std::to_string(first_long + 1) + " is over the limit, no error" + where);
    SLUICE_FUZZ_CHECK(error.find('\n') == std::string::npos, error);
    SLUICE_FUZZ_CHECK(error.find("line " + std::to_string(first_long + 1) + " ") != std::string::npos,
                      "the error names another line: " + error + where);
    SLUICE_FUZZ_CHECK(got.size() == first_long,
                      std::to_string(got.size()) + " lines before the error, want " + std::to_string(first_long) + where);
  }
  for (std::size_t i = 0; i < got.size(); ++i) {
    SLUICE_FUZZ_CHECK(got[i].view() == want[i], "line " + std::to_string(i + 1) + " is '" +
                                                    printable(got[i].view()) + "', want '" + printable(want[i]) +
                                                    "'" + where);
    SLUICE_FUZZ_CHECK(got[i].number() == i + 1, std::to_string(got[i].number()) + where);
  }

  if (error.empty()) {
    std::string expect;
    for (const auto l : want) {
      expect.append(l);
      expect += '\n';
    }
    // Lines are "joined back": the input with CRLF as LF, and a newline at the end in
    // place of a lone '\r' there.
    const std::string joined = join(got, piece == 0 ? 1 : piece);
    SLUICE_FUZZ_CHECK(joined == expect, "join_lines gave " + printable(joined) + where);
    std::string normalised;
    for (std::size_t i = 0; i < text.size(); ++i) {
      if (text[i] == '\r' && i + 1 < text.size() && text[i + 1] == '\n') continue;
      normalised += text[i];
    }
    if (!normalised.empty() && normalised.back() != '\n') {
      if (normalised.back() == '\r') normalised.pop_back();
      normalised += '\n';
    }
    SLUICE_FUZZ_CHECK(joined == normalised, "lines joined back differ from the input" + where);
  }
  return 0;
}
