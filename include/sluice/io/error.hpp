// sluice/io/error.hpp — what every io stage throws, and the defaults byte stages share.
//
//   try {
//     sluice::pipeline(io::read_file("in.log"), io::gzip(), io::write_file("in.log.gz")).run();
//   } catch (const sluice::stage_error& e) {
//     try { std::rethrow_exception(e.cause()); }
//     catch (const sluice::io::error& io) { std::fprintf(stderr, "%s\n", io.what()); }
//   }
//   // "read_file: cannot open in.log: No such file or directory"
//
// Requires: nothing.
// Guarantees: an io::error's what() is one line naming the stage, the operation, the
//   place (a path, a byte offset, a line number) and, for a failed system call, the
//   system's message; errno_value() keeps the errno (0 when none applies).
// Non-guarantees: message wording may change; match on errno_value(), not on text.
// Lifetime: a plain value.
#pragma once

#include <cstddef>
#include <stdexcept>
#include <string>

#include "sluice/stage.hpp"

namespace sluice::io {

class error : public std::runtime_error {
 public:
  explicit error(const std::string& what, int errno_value = 0)
      : std::runtime_error(what), errno_(errno_value) {}
  [[nodiscard]] int errno_value() const noexcept { return errno_; }

 private:
  int errno_;
};

// The default budget of a byte stage's output channel (bytes), as Node's file streams.
inline constexpr std::size_t kByteBudget = std::size_t{64} << 10;
// The default chunk a reader fills before pushing it.
inline constexpr std::size_t kChunk = std::size_t{64} << 10;
// The largest output chunk a codec or join_lines takes (its options' chunk): past it,
// std::invalid_argument naming the option when the stage is made. A huge one failed the
// stage later with a bare "std::bad_alloc" or "bad_array_new_length".
inline constexpr std::size_t kMaxChunk = std::size_t{1} << 30;
inline void check_chunk(std::size_t chunk, const char* option) {
  if (chunk > kMaxChunk) {
    throw std::invalid_argument(std::string("sluice::io: ") + option + " must be at most 1 GiB (got " +
                                std::to_string(chunk) + " bytes)");
  }
}

// A byte stream is one sequence: replicas would split it between threads (a reader's two
// copies each read the whole file, a writer's two copies share one temporary, a codec's
// two copies each see half the stream). std::invalid_argument naming the stage for
// replicas above 1 (parallel_gzip compresses on several threads in order).
inline void single_thread_stage(const stage_options& s) {
  if (s.replicas > 1) {
    throw std::invalid_argument("sluice::io: stage '" + s.name + "' cannot have replicas (" +
                                std::to_string(s.replicas) +
                                "): a byte stream is one sequence, split between threads it would be "
                                "wrong; for compression on several threads use io::parallel_gzip");
  }
}

// Stage options for a byte stage: a capacity left at stage_options' default (1024 items)
// becomes kByteBudget bytes, and an empty name becomes `name`. Replicas are refused
// (single_thread_stage).
inline stage_options byte_stage_options(stage_options s, const char* name) {
  if (s.capacity == stage_options{}.capacity) s.capacity = kByteBudget;
  if (s.name.empty()) s.name = name;
  single_thread_stage(s);
  return s;
}

}  // namespace sluice::io
