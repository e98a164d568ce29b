// tests/fuzz/fuzz_support.hpp — what the fuzz targets share.
//
// A target is `extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t*, std::size_t)`.
// It is built twice: with libFuzzer (`./dev fuzz`, clang, -fsanitize=fuzzer) and, in
// every build, with replay_main.cpp, which feeds it each file of its committed corpus
// (tests/fuzz/corpus/<target>/) as a CTest test.
//
// A property that does not hold prints one line to stderr and aborts, so libFuzzer
// saves the input as a crash and a replay test fails.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

namespace sluice::fuzz {

[[noreturn]] inline void fail(const char* file, int line, const char* what, const std::string& detail) {
  std::fprintf(stderr, "%s:%d: fuzz property failed: %s%s%s\n", file, line, what,
               detail.empty() ? "" : ": ", detail.c_str());
  std::fflush(stderr);
  std::abort();
}

// Reads the input front to back: control bytes first, the rest is the payload.
class input {
 public:
  input(const std::uint8_t* data, std::size_t size) noexcept
      : p_(reinterpret_cast<const char*>(data)), n_(size) {}
  // The next byte, or 0 when the input is used up.
  std::uint8_t byte() noexcept {
    if (n_ == 0) return 0;
    --n_;
    return static_cast<std::uint8_t>(*p_++);
  }
  std::uint16_t u16() noexcept {
    const std::uint16_t lo = byte();
    return static_cast<std::uint16_t>(lo | (byte() << 8));
  }
  // Everything not read yet.
  [[nodiscard]] std::string_view rest() const noexcept { return {p_, n_}; }

 private:
  const char* p_;
  std::size_t n_;
};

// A short, printable rendering of bytes for a failure message.
inline std::string printable(std::string_view s, std::size_t max = 64) {
  std::string r;
  for (std::size_t i = 0; i < s.size() && i < max; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      r += static_cast<char>(c);
    } else {
      char b[8];
      std::snprintf(b, sizeof b, "\\x%02x", c);
      r += b;
    }
  }
  if (s.size() > max) r += "...";
  return r;
}

}  // namespace sluice::fuzz

#define SLUICE_FUZZ_CHECK(cond, detail) \
  do {                                  \
    if (!(cond)) ::sluice::fuzz::fail(__FILE__, __LINE__, #cond, (detail)); \
  } while (0)
