// io::line_splitter and the lines stage.
#include "sluice/io/lines.hpp"

#include <cstring>
#include <limits>
#include <string>

namespace sluice::io {
namespace {

// A chunk's block starts with this many references, far more than it can have lines;
// lines made from it each own one, and the splitter gives back the surplus at the end.
// A line destroyed early (a failed push_back) can therefore never free the block
// under the splitter's feet.
constexpr std::size_t kBias = std::numeric_limits<std::size_t>::max() / 2;

// n > max_line + 1 (room for a '\r' that a '\n' may still strip), without overflow when
// max_line is SIZE_MAX (no limit): found by tests/fuzz/lines_fuzz.cpp.
constexpr bool over_limit_with_cr(std::size_t n, std::size_t max_line) noexcept {
  return n > max_line && n - 1 > max_line;
}

}  // namespace

void line_splitter::too_long(std::uint64_t start) const {
  throw error("lines: line " + std::to_string(count_ + 1) + " (starting at byte " + std::to_string(start) +
              " of the input) is longer than the limit of " + std::to_string(max_line_) + " bytes");
}

void line_splitter::emit_carry(std::vector<line>& out) {
  std::size_t len = carry_.size();
  if (len != 0 && carry_.data()[len - 1] == '\r') --len;
  if (len > max_line_) too_long(carry_at_);
  auto* b = new detail::line_block(1, std::move(carry_));
  carry_ = buffer();
  const line l(b, b->storage.data(), len, ++count_);  // owns b's one reference
  out.push_back(l);                                   // a copy: on a throw, l still frees b
}

void line_splitter::feed(buffer chunk, std::vector<line>& out) {
  if (chunk.empty()) return;
  const char* p = chunk.data();
  const char* const begin = p;
  const char* const end = p + chunk.size();
  // Where a line starting at q begins in the whole input.
  const std::uint64_t base = fed_;
  auto at = [&](const char* q) { return base + static_cast<std::uint64_t>(q - begin); };
  fed_ += chunk.size();
  if (!carry_.empty()) {
    const void* hit = std::memchr(p, '\n', static_cast<std::size_t>(end - p));
    const char* nl = static_cast<const char*>(hit);
    const std::size_t take = static_cast<std::size_t>((nl != nullptr ? nl : end) - p);
    // One byte more than max_line: a '\r' that the '\n' may still strip.
    if (over_limit_with_cr(carry_.size() + take, max_line_)) too_long(carry_at_);
    carry_.append(p, take);
    if (nl == nullptr) return;  // the whole chunk continues the carried line
    p = nl + 1;
    emit_carry(out);
  }
  if (p == end) return;
  // Moving the buffer keeps its storage where it is, so p and end stay valid.
  auto* block = new detail::line_block(kBias, std::move(chunk));
  std::size_t made = 0;  // lines that took a reference to block
  struct settle {
    detail::line_block* b;
    const std::size_t& made;
    ~settle() {
      const std::size_t surplus = kBias - made;
      // acq_rel: as in release_block(); zero means every line is already gone.
      if (b->refs.fetch_sub(surplus, std::memory_order_acq_rel) == surplus) delete b;
    }
  } guard{block, made};

  const char* s = p;
  for (;;) {
    const void* hit = std::memchr(s, '\n', static_cast<std::size_t>(end - s));
    if (hit == nullptr) break;
    const char* nl = static_cast<const char*>(hit);
    std::size_t len = static_cast<std::size_t>(nl - s);
    if (len != 0 && nl[-1] == '\r') --len;
    if (len > max_line_) too_long(at(s));
    ++made;
    out.push_back(line(block, s, len, ++count_));
    s = nl + 1;
  }
  if (s != end) {
    const auto tail = static_cast<std::size_t>(end - s);
    if (over_limit_with_cr(tail, max_line_)) too_long(at(s));
    carry_at_ = at(s);
    carry_ = buffer(std::max<std::size_t>(tail * 2, 256));
    carry_.append(s, tail);
  }
}

void line_splitter::finish(std::vector<line>& out) {
  if (!carry_.empty()) emit_carry(out);
}

void lines_stage::operator()(receiver<buffer>& in, sender<line>& out, std::stop_token stop) const {
  line_splitter split(options_.max_line);
  std::vector<line> batch;
  batch.reserve(1024);
  auto push = [&]() -> bool {
    if (batch.empty()) return true;
    const std::size_t n = batch.size();
    // Moves the lines in; one wake-up of the consumer per run of pushes.
    const bool all = out.push_all(std::move(batch)) == n;
    batch.clear();
    return all;
  };
  while (std::optional<buffer> b = in.pop()) {
    try {
      split.feed(std::move(*b), batch);
    } catch (...) {
      // A line over the limit: the lines before it (in batch) go on before the stage
      // fails. They were dropped, without a dead letter, when they shared its chunk.
      (void)push();
      throw;
    }
    if (!push()) return;  // downstream is gone
  }
  if (in.cancelled() || stop.stop_requested()) return;
  split.finish(batch);
  (void)push();
}

through_stage<line, lines_stage> lines(lines_options o, stage_options s) {
  if (s.name.empty()) s.name = "lines";
  if (s.capacity == stage_options{}.capacity) s.capacity = kLinesCapacity;
  single_thread_stage(s);
  return through<line>(lines_stage(o), std::move(s));
}

}  // namespace sluice::io
