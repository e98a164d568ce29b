// tests/unit/io_test_util.hpp — shared helpers of the io tests: temporary directories,
// seeded test data, the gzip program, and a small linear runner that drives io stage
// descriptors on threads with channels (what sluice::pipeline does, minus metrics), so
// the stages are tested without depending on the graph.
#pragma once

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <iterator>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "sluice/buffer.hpp"
#include "sluice/channel.hpp"
#include "sluice/io/all.hpp"
#include "sluice/stage.hpp"
#include "support/watchdog.hpp"

namespace io_test {

namespace fs = std::filesystem;

// A fresh directory under $TMPDIR (or /tmp), removed with everything in it.
class temp_dir {
 public:
  temp_dir() {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base != nullptr && *base != '\0' ? base : "/tmp") + "/sluice-io-XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  ~temp_dir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  [[nodiscard]] const fs::path& path() const noexcept { return path_; }
  [[nodiscard]] fs::path operator/(const std::string& name) const { return path_ / name; }
  // Names of the entries in the directory, sorted.
  [[nodiscard]] std::vector<std::string> list() const {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(path_)) names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
  }

 private:
  fs::path path_;
};

// xorshift64*: fast, seeded, the same on every platform.
struct rng {
  std::uint64_t s;
  explicit rng(std::uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull + 0x2545F4914F6CDD1Dull) {}
  std::uint64_t next() {
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return s * 0x2545F4914F6CDD1Dull;
  }
};

// Log-like text of exactly n bytes (lines of 40..160 bytes; the last may be cut).
inline std::string log_text(std::size_t n, std::uint64_t seed) {
  static const char* const kWords[] = {"GET", "POST", "/api/v1/items", "status=200", "status=500",
                                       "user=alice", "user=bob", "latency_ms=12", "INFO", "WARN",
                                       "ERROR", "worker-7", "request", "done"};
  rng r(seed);
  std::string s;
  s.reserve(n + 200);
  std::uint64_t t = 1714560000000;
  while (s.size() < n) {
    t += r.next() % 50;
    s += std::to_string(t);
    const int words = 3 + static_cast<int>(r.next() % 12);
    for (int i = 0; i < words; ++i) {
      s += ' ';
      s += kWords[r.next() % std::size(kWords)];
    }
    s += " id=";
    s += std::to_string(r.next() % 1000000);
    s += '\n';
  }
  s.resize(n);
  return s;
}

// n bytes of incompressible data.
inline std::string random_bytes(std::size_t n, std::uint64_t seed) {
  rng r(seed);
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>(r.next() >> 56);
  return s;
}

inline void write_string(const fs::path& p, std::string_view data) {
  std::FILE* f = std::fopen(p.c_str(), "wb");
  if (f == nullptr) throw std::runtime_error("cannot create " + p.string());
  const std::size_t n = std::fwrite(data.data(), 1, data.size(), f);
  if (std::fclose(f) != 0 || n != data.size()) throw std::runtime_error("cannot write " + p.string());
}

inline std::string read_string(const fs::path& p) {
  std::FILE* f = std::fopen(p.c_str(), "rb");
  if (f == nullptr) throw std::runtime_error("cannot open " + p.string());
  std::string s;
  char buf[1 << 16];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) s.append(buf, n);
  std::fclose(f);
  return s;
}

// Runs a shell command; returns its exit status (-1 if it did not exit normally).
inline int shell(const std::string& cmd) {
  const int r = std::system(cmd.c_str());
  if (r == -1 || !WIFEXITED(r)) return -1;
  return WEXITSTATUS(r);
}

// p in single quotes for the shell. (Built with append: GCC 12 at -O3 warns falsely
// about "'" + s + "'", -Wrestrict.)
inline std::string quoted(const fs::path& p) {
  std::string q;
  q.reserve(p.native().size() + 2);
  q.push_back('\'');
  q.append(p.native());
  q.push_back('\'');
  return q;
}

// The message of the exception inside p (or "" when p is null).
inline std::string message_of(std::exception_ptr p) {
  if (!p) return {};
  try {
    std::rethrow_exception(p);
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "(non-std exception)";
  }
}

// ---- a linear runner over stage descriptors ---------------------------------------
//
// run(source, through..., sink): each stage on its own thread, joined by channels with
// the stage's capacity (weighted when channel_traits says so). A stage that throws
// requests stop on every stage, then cancels its own input and output channels (with the
// exception as the cause; in that order, so a stage that sees the cancel sees the stop); the others see a cancelled channel or a failed push and
// end. run() joins every thread, then rethrows the first failure.
class runner {
 public:
  template <class... Stages>
  static void run(Stages&&... stages) {
    // On the heap: GCC 12 warns (maybe-uninitialized, a false positive) about
    // std::stop_source's constructor inside a local object.
    const auto r = std::make_unique<runner>();
    r->start(stages...);
    r->threads_.clear();  // joins
    if (r->first_) std::rethrow_exception(r->first_);
  }

 private:
  template <class T>
  static std::pair<sluice::sender<T>, sluice::receiver<T>> channel(const sluice::stage_options& o) {
    sluice::channel_options<T> co;
    co.capacity = o.capacity;
    if constexpr (sluice::channel_traits<T>::weighted) {
      co.weigh = [](const T& v) { return sluice::channel_traits<T>::weigh(v); };
    }
    return sluice::bounded<T>(std::move(co));
  }

  // Calls f(args..., stop token) if it takes one, else f(args...).
  template <class F, class... Args>
  void call(F& f, Args&... args) {
    if constexpr (std::is_invocable_v<F&, Args&..., std::stop_token>) {
      f(args..., stop_.get_token());
    } else {
      f(args...);
    }
  }

  void fail(std::exception_ptr e) {
    {
      std::lock_guard lock(mu_);
      if (!first_) first_ = e;
    }
    stop_.request_stop();
  }

  template <class T, class F, class... Rest>
  void start(sluice::source_stage<T, F>& s, Rest&... rest) {
    auto [tx, rx] = channel<T>(s.options);
    threads_.emplace_back([this, fn = s.fn, tx = std::move(tx)]() mutable {
      try {
        call(fn, tx);
      } catch (...) {
        fail(std::current_exception());  // stop first: a stage that sees the cancel must see the stop too
        tx.cancel(std::current_exception());
      }
    });
    chain(std::move(rx), rest...);
  }

  template <class T, class U, class F, class... Rest>
  void chain(sluice::receiver<T> rx, sluice::through_stage<U, F>& s, Rest&... rest) {
    auto [tx, next] = channel<U>(s.options);
    threads_.emplace_back([this, fn = s.fn, rx = std::move(rx), tx = std::move(tx)]() mutable {
      try {
        call(fn, rx, tx);
      } catch (...) {
        fail(std::current_exception());
        rx.cancel(std::current_exception());
        tx.cancel(std::current_exception());
      }
    });
    chain(std::move(next), rest...);
  }

  template <class T, class F>
  void chain(sluice::receiver<T> rx, sluice::consume_stage<F>& s) {
    threads_.emplace_back([this, fn = s.fn, rx = std::move(rx)]() mutable {
      try {
        call(fn, rx);
      } catch (...) {
        fail(std::current_exception());
        rx.cancel(std::current_exception());
      }
    });
  }

  template <class T, class F>
  void chain(sluice::receiver<T> rx, sluice::into_stage<F>& s) {
    threads_.emplace_back([this, fn = s.fn, rx = std::move(rx)]() mutable {
      try {
        for (T& v : rx) {
          if constexpr (std::is_same_v<decltype(fn(std::move(v))), bool>) {
            if (!fn(std::move(v))) return;
          } else {
            fn(std::move(v));
          }
        }
      } catch (...) {
        fail(std::current_exception());
        rx.cancel(std::current_exception());
      }
    });
  }

  std::mutex mu_;
  std::exception_ptr first_;
  std::stop_source stop_;
  std::vector<std::jthread> threads_;
};

// A source descriptor that pushes the given chunks as buffers.
inline auto chunks_source(std::vector<std::string> chunks) {
  return sluice::from<sluice::buffer>(
      [chunks = std::move(chunks)](sluice::sender<sluice::buffer>& out) {
        for (const auto& c : chunks) {
          if (!out.push(sluice::buffer::copy_of(c))) return;
        }
      },
      sluice::io::byte_stage_options({}, "chunks"));
}

// A source descriptor that pushes `data` in pieces of `piece` bytes.
inline auto string_source(std::string data, std::size_t piece = 64 << 10) {
  std::vector<std::string> chunks;
  for (std::size_t i = 0; i < data.size(); i += piece) chunks.push_back(data.substr(i, piece));
  return chunks_source(std::move(chunks));
}

// A sink descriptor that appends every buffer to *out.
inline auto string_sink(std::string* out) {
  return sluice::into([out](sluice::buffer b) { out->append(b.view()); });
}

}  // namespace io_test
