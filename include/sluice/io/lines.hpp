// sluice/io/lines.hpp — byte streams to lines and back.
//
//   namespace io = sluice::io;
//   std::size_t errors = 0;
//   sluice::pipeline(io::read_file("app.log"),
//                    io::lines({.max_line = 1 << 20}),
//                    sluice::into([&](const io::line& l) { errors += l.view().find("ERROR") != std::string_view::npos; }))
//       .run();
//
//   // Without a graph: split buffers yourself.
//   io::line_splitter split(1 << 20);
//   std::vector<io::line> out;
//   split.feed(sluice::buffer::copy_of("a\r\nb\nc"), out);   // "a", "b"
//   split.finish(out);                                        // "c"
//
// Requires: a line object is used by one thread at a time (copies may live on other
//   threads: the shared storage is reference counted).
// Guarantees:
//   - A line ends at '\n'; a '\r' right before it is dropped too (CRLF). The last line
//     of the input needs no newline (a '\r' ending the input is dropped, as Node's
//     readline does). An empty input gives no lines; "\n" gives one empty line. A lone
//     '\r' elsewhere is kept as a character.
//   - line::number() is 1-based, counted over the whole input.
//   - A line longer than max_line bytes (not counting its terminator) is an io::error
//     naming its line number and the byte offset in the input where it starts; no more
//     than max_line + 1 bytes of one line are ever held (the buffer a line spanning
//     chunks is gathered in grows by doubling, to a pool size class: while it grows, old
//     and new take up to about 3 x max_line of memory). The lines before it are pushed
//     on before the stage fails, however the input was cut into chunks.
//   - No copy of the bytes for a line inside one input buffer: a line refers to the
//     buffer, which goes back to its pool when the last line referring to it is gone.
//     A line that spans buffers is copied once.
//   - join_lines writes each line and a '\n' into buffers of `chunk` bytes (a longer
//     line gets a buffer of its own size).
// Non-guarantees: a line keeps its whole input buffer alive; hold on to line.str() (a
//   copy), not the line, to keep text for long. The lines stage's output channel is
//   counted in lines (kLinesCapacity by default), not bytes: the lines it buffers pin
//   their own bytes plus at most the two partly used chunks at either end, so its
//   memory is bounded by capacity * max_line in the worst case and is about
//   capacity * (average line length) in practice (1 MiB for 128-byte lines).
// Lifetime: a line's view() is valid while the line (or a copy of it) lives.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <stop_token>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "sluice/buffer.hpp"
#include "sluice/channel.hpp"
#include "sluice/io/error.hpp"
#include "sluice/stage.hpp"

namespace sluice::io {

namespace detail {
// The reference-counted storage lines point into.
struct line_block {
  std::atomic<std::size_t> refs;
  buffer storage;
  line_block(std::size_t r, buffer b) noexcept : refs(r), storage(std::move(b)) {}
};
inline void release_block(line_block* b) noexcept {
  // acq_rel: the last owner's delete sees every other owner's reads of the bytes
  // (release by each decrement, acquire by the one that reaches zero).
  if (b != nullptr && b->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) delete b;
}
}  // namespace detail

// One line of text, without its terminator. Cheap to move; a copy shares the storage.
class line {
 public:
  line() noexcept = default;
  line(const line& o) noexcept : block_(o.block_), data_(o.data_), size_(o.size_), number_(o.number_) {
    // relaxed: taking another reference needs no ordering; we already hold one.
    if (block_ != nullptr) block_->refs.fetch_add(1, std::memory_order_relaxed);
  }
  line(line&& o) noexcept
      : block_(std::exchange(o.block_, nullptr)),
        data_(std::exchange(o.data_, nullptr)),
        size_(std::exchange(o.size_, 0)),
        number_(o.number_) {}
  line& operator=(line o) noexcept {
    std::swap(block_, o.block_);
    std::swap(data_, o.data_);
    std::swap(size_, o.size_);
    std::swap(number_, o.number_);
    return *this;
  }
  ~line() { detail::release_block(block_); }

  [[nodiscard]] std::string_view view() const noexcept { return {data_, size_}; }
  operator std::string_view() const noexcept { return view(); }  // NOLINT: implicit on purpose
  [[nodiscard]] const char* data() const noexcept { return data_; }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  [[nodiscard]] bool empty() const noexcept { return size_ == 0; }
  [[nodiscard]] std::string str() const { return std::string(view()); }
  // 1-based position in the input.
  [[nodiscard]] std::uint64_t number() const noexcept { return number_; }

  friend bool operator==(const line& a, std::string_view b) noexcept { return a.view() == b; }

 private:
  friend class line_splitter;
  // Takes over one reference to b.
  line(detail::line_block* b, const char* d, std::size_t n, std::uint64_t number) noexcept
      : block_(b), data_(d), size_(n), number_(number) {}

  detail::line_block* block_ = nullptr;
  const char* data_ = nullptr;
  std::size_t size_ = 0;
  std::uint64_t number_ = 0;
};

static_assert(std::is_nothrow_move_constructible_v<line>, "lines travel through lock-free slots");

// Splits a stream of buffers into lines.
class line_splitter {
 public:
  explicit line_splitter(std::size_t max_line = std::size_t{1} << 20) : max_line_(max_line) {}

  // Appends the complete lines of `chunk` (and of a line carried over from before) to out.
  // Throws io::error for a line over max_line (lines before it are already in out).
  void feed(buffer chunk, std::vector<line>& out);
  // The input ended: appends the last line if it had no newline.
  void finish(std::vector<line>& out);
  // Lines produced so far.
  [[nodiscard]] std::uint64_t count() const noexcept { return count_; }

 private:
  // The line that starts at byte `start` of the input is too long.
  [[noreturn]] void too_long(std::uint64_t start) const;
  void emit_carry(std::vector<line>& out);

  std::size_t max_line_;
  std::uint64_t count_ = 0;
  std::uint64_t fed_ = 0;      // bytes of input fed so far
  std::uint64_t carry_at_ = 0;  // where the carried line starts in the input
  buffer carry_;  // the start of a line that continues in the next chunk
};

struct lines_options {
  std::size_t max_line = std::size_t{1} << 20;
};
struct join_lines_options {
  std::size_t chunk = kChunk;  // output buffer size
};

// f(receiver<buffer>&, sender<line>&, std::stop_token).
class lines_stage {
 public:
  explicit lines_stage(lines_options o) : options_(o) {}
  void operator()(receiver<buffer>& in, sender<line>& out, std::stop_token stop) const;

 private:
  lines_options options_;
};

// f(receiver<Line>&, sender<buffer>&, std::stop_token) for Line = line, std::string,
// std::string_view or anything with data() and size().
template <class Line>
class join_lines_stage {
 public:
  explicit join_lines_stage(join_lines_options o) : options_(o) { check_chunk(o.chunk, "join_lines_options::chunk"); }
  void operator()(receiver<Line>& in, sender<buffer>& out, std::stop_token stop) const {
    const std::size_t chunk = options_.chunk != 0 ? options_.chunk : kChunk;
    buffer ob(chunk);
    std::vector<Line> batch;
    batch.reserve(256);
    for (;;) {
      batch.clear();
      if (in.pop_some(std::back_inserter(batch), 256) == 0) break;
      for (const Line& l : batch) {
        const std::string_view v(l.data(), l.size());
        if (ob.capacity() - ob.size() < v.size() + 1) {
          if (!ob.empty()) {
            if (!out.push(std::move(ob))) return;  // downstream is gone
          }
          ob = buffer(std::max(chunk, v.size() + 1));
        }
        ob.append(v);
        ob.append("\n", 1);
      }
    }
    if (in.cancelled() || stop.stop_requested()) return;
    if (!ob.empty()) (void)out.push(std::move(ob));
  }

 private:
  join_lines_options options_;
};

// The default capacity of the lines stage's output channel, in lines. Moving lines one
// by one costs a channel slot each; 8192 slots let the splitter and the consumer run a
// few chunks apart instead of waking each other every few hundred lines (a 1024-line
// channel moved about half as many lines per second in benchmarks/io_bench.cpp).
inline constexpr std::size_t kLinesCapacity = 8192;

// Descriptors. lines(): default name "lines", output counted in lines (a capacity left
// at its default becomes kLinesCapacity).
// join_lines<Line>(): default name "join_lines", a capacity left at its default
// becomes kByteBudget bytes.
through_stage<line, lines_stage> lines(lines_options o = {}, stage_options s = {});

template <class Line = line>
through_stage<buffer, join_lines_stage<Line>> join_lines(join_lines_options o = {},
                                                         stage_options s = {}) {
  return through<buffer>(join_lines_stage<Line>(o), byte_stage_options(std::move(s), "join_lines"));
}

}  // namespace sluice::io
