// sluice/io/file.hpp — files and file descriptors as byte-stream sources and sinks.
//
//   namespace io = sluice::io;
//   sluice::pipeline(io::read_file("access.log"),          // 64 KiB chunks
//                    io::gzip({.level = 6}),
//                    io::write_file("access.log.gz"))       // access.log.gz.partial, renamed at the end
//       .run();
//   sluice::pipeline(io::read_fd(0), io::gunzip(), io::write_fd(1)).run();   // a filter
//
// Each function returns a pipeline descriptor (stage.hpp); the function object inside
// (file_reader, file_writer, fd_reader, fd_writer) may also be called directly on a
// thread with a channel, which is how the unit tests drive them.
//
// Requires: a descriptor's fd stays open until the stage has ended (read_fd/write_fd
//   borrow it; they never close it).
// Guarantees:
//   - read_file/read_fd push buffers of up to `chunk` bytes (a regular file's chunks
//     are full except the last; a pipe or socket pushes what each read returned) and
//     never an empty buffer. A stop request ends the source after the current chunk;
//     its output is then closed as after end of file.
//   - write_file writes `path.partial` and renames it to `path` only when its input
//     ended by a close (rx.done(), not cancelled, no stop requested) and every write,
//     the optional fsync and the close succeeded. On any other ending (an upstream
//     failure, a cancel, its own write error) it removes `path.partial`; so does the
//     last copy of the function object if the stage never finished. A failed pipeline
//     never leaves a truncated file that looks complete.
//   - write_fd writes everything it receives, in order; with SIGPIPE blocked on its
//     thread, a closed pipe or socket is an io::error (EPIPE), not a killed process.
//   - Failures throw io::error naming the stage, the path (or fd) and the byte offset.
//   - Stage options: a capacity left at its default becomes kByteBudget (64 KiB);
//     the default names are "read_file", "write_file", "read_fd", "write_fd".
// Non-guarantees: a stop request during a read_file leaves write_file committing the
//   prefix it received (request_stop() is a graceful end; use cancel() to abort).
//   Writes to a pipe whose reader never reads can block past a stop request.
// Lifetime: descriptors and function objects are copyable values; copies of one
//   file_writer share its partial-file state.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <stop_token>
#include <string>

#include "sluice/buffer.hpp"
#include "sluice/channel.hpp"
#include "sluice/io/error.hpp"
#include "sluice/stage.hpp"

namespace sluice::io {

struct read_options {
  std::size_t chunk = kChunk;                       // bytes per pushed buffer (at most)
  std::atomic<std::uint64_t>* progress = nullptr;   // if set, bytes read are added as they go
};

struct write_options {
  bool fsync = false;                               // fsync the file (and its directory) before commit
  std::atomic<std::uint64_t>* progress = nullptr;   // if set, bytes written are added as they go
};

// f(sender<buffer>&, std::stop_token): reads a file from the start to its end.
class file_reader {
 public:
  file_reader(std::filesystem::path path, read_options o) : path_(std::move(path)), options_(o) {}
  void operator()(sender<buffer>& out, std::stop_token stop) const;

 private:
  std::filesystem::path path_;
  read_options options_;
};

// f(sender<buffer>&, std::stop_token): reads fd until end of file (or the stop request).
class fd_reader {
 public:
  // `where` names the fd in errors ("stdin"); empty: "fd N".
  fd_reader(int fd, read_options o, std::string where = {})
      : fd_(fd), options_(o), where_(std::move(where)) {}
  void operator()(sender<buffer>& out, std::stop_token stop) const;

 private:
  int fd_;
  read_options options_;
  std::string where_;
};

// f(receiver<buffer>&, std::stop_token): writes path.partial, commits by rename.
class file_writer {
 public:
  file_writer(std::filesystem::path path, write_options o);
  void operator()(receiver<buffer>& in, std::stop_token stop) const;

  [[nodiscard]] const std::filesystem::path& path() const noexcept;
  [[nodiscard]] std::filesystem::path partial_path() const;
  // Committed: the rename to path() happened.
  [[nodiscard]] bool committed() const noexcept;

  struct state;  // shared by copies; its destructor removes an uncommitted partial file

 private:
  std::shared_ptr<state> state_;
  write_options options_;
};

// f(receiver<buffer>&, std::stop_token): writes everything to fd.
class fd_writer {
 public:
  // `where` names the fd in errors ("stdout"); empty: "fd N".
  fd_writer(int fd, write_options o, std::string where = {})
      : fd_(fd), options_(o), where_(std::move(where)) {}
  void operator()(receiver<buffer>& in, std::stop_token stop) const;

 private:
  int fd_;
  write_options options_;
  std::string where_;
};

source_stage<buffer, file_reader> read_file(std::filesystem::path path, read_options o = {},
                                            stage_options s = {});
consume_stage<file_writer> write_file(std::filesystem::path path, write_options o = {},
                                      stage_options s = {});
// `where` names the fd in error messages ("stdin", "stdout"); empty: "fd N".
source_stage<buffer, fd_reader> read_fd(int fd, read_options o = {}, stage_options s = {},
                                        std::string where = {});
consume_stage<fd_writer> write_fd(int fd, write_options o = {}, stage_options s = {},
                                  std::string where = {});

}  // namespace sluice::io
