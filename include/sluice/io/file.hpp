// sluice/io/file.hpp — files and file descriptors as byte-stream sources and sinks.
//
//   namespace io = sluice::io;
//   sluice::pipeline(io::read_file("access.log"),          // 64 KiB chunks
//                    io::gzip({.level = 6}),
//                    io::write_file("access.log.gz"))       // a temporary file, renamed at the end
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
//     its output is then closed as after end of file. A regular file is read to its end
//     as it grows; one that is smaller at the end than at the start (truncated by
//     another process while read) is an io::error (EIO) saying so, not a short stream.
//   - write_file writes a temporary file of its own in path's directory and moves it to
//     `path` only when its input ended by a close (rx.done(), not cancelled, no stop
//     requested) and every write, the fsync and the close succeeded. The temporary is
//     created exclusively: an anonymous O_TMPFILE (no name on disk until it is complete;
//     a killed process leaves nothing), or where the file system lacks O_TMPFILE, a new
//     file `path.XXXXXXXX.partial` (random name, O_CREAT|O_EXCL|O_NOFOLLOW). Nothing else
//     on disk is opened, truncated, followed or removed; two writers of one path each
//     write their own temporary, and the last commit wins. On any other ending (an
//     upstream failure, a cancel, its own write error) the temporary is discarded; so
//     it is if the last copy of the function object goes before the stage finished.
//     A failed pipeline never leaves a truncated file that looks complete. A `path` that
//     is a device, FIFO or socket is never replaced: io::error (EEXIST) naming it; one
//     that is a directory is refused at the start (EISDIR).
//   - Byte stages (readers, writers, codecs, lines) refuse replicas above 1
//     (std::invalid_argument): a byte stream split between threads would be wrong.
//   - A reader pushes a short read (under a quarter of its chunk: a trickling pipe or
//     socket) in a buffer of its own size, so a byte budget bounds memory, not just bytes.
//   - The new file never has more permission than asked: with `mode`, it is created
//     with no group/other bits, given `group` (if set and allowed; if refused, its group
//     bits are cut to the other bits: the writer's group gets no more than anyone), then
//     chmod'ed to `mode`, all before the first byte is written.
//     Without `mode`, a file that replaces an existing regular file (or the file a link
//     there names) gets that file's permission bits and group, by the same steps (a
//     private file stays private, as after an editor's save); a new one gets 0666 minus
//     the umask. `atime`/`mtime` (and `owner`, which
//     only root can give away) are set before the commit. A path in a sticky directory
//     that another user owns is refused at the start (EPERM), not at the commit. With `replace` false, the commit fails (EEXIST) rather than replace a path
//     that exists by then (checked atomically by the kernel).
//   - write_fd writes everything it receives, in order; with SIGPIPE blocked on its
//     thread, a closed pipe or socket is an io::error (EPIPE), not a killed process.
//     An fd not open for writing (a pipe's read end) is an io::error (EBADF): the
//     reopening below never gains write access the fd did not have.
//   - Failures throw io::error naming the stage, the path (or fd) and the byte offset.
//   - Stage options: a capacity left at its default becomes kByteBudget (64 KiB);
//     the default names are "read_file", "write_file", "read_fd", "write_fd".
//   - Waits on a pipe, FIFO, terminal or socket (read_fd, write_fd, the tcp stages) end
//     at once on the stage's stop request, also for a blocking descriptor: a reader polls
//     the fd together with the stop eventfd before each read; a writer writes to a
//     non-blocking reopening of a pipe/FIFO/terminal (/proc/self/fd/N: a file description
//     of its own, so the caller's fd keeps its flags), sends to a socket with
//     MSG_DONTWAIT, and waits for room with poll on the fd and the stop eventfd.
// Non-guarantees: a stop request during a read_file leaves write_file committing the
//   prefix it received (request_stop() is a graceful end; use cancel() to abort).
//   Where a pipe or terminal cannot be reopened, writes are cut to PIPE_BUF bytes after
//   poll says writable, which cannot block unless another process writes to it too.
//   The temporary's name (when it has one) and the exact permission bits are Linux's.
// Lifetime: descriptors and function objects are copyable values; copies of one
//   file_writer share its partial-file state.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <ctime>
#include <filesystem>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>

#include "sluice/buffer.hpp"
#include "sluice/channel.hpp"
#include "sluice/io/error.hpp"
#include "sluice/stage.hpp"

namespace sluice::io {

struct read_options {
  std::size_t chunk = kChunk;                       // bytes per pushed buffer (at most; 0: kChunk)
  std::atomic<std::uint64_t>* progress = nullptr;   // if set, bytes read are added as they go
};

struct write_options {
  bool fsync = false;                               // fsync the file (and its directory) before commit
  std::atomic<std::uint64_t>* progress = nullptr;   // if set, bytes written are added as they go
  // write_file only (ignored by write_fd):
  std::optional<mode_t> mode = std::nullopt;        // permission bits of the new file (& 0777)
  std::optional<gid_t> group = std::nullopt;        // its group, if the system allows it
  std::optional<uid_t> owner = std::nullopt;        // its owner (root only; else ignored), set before the commit
  std::optional<timespec> atime = std::nullopt;     // access time set before the commit
  std::optional<timespec> mtime = std::nullopt;     // modification time set before the commit
  bool replace = true;                              // false: never replace an existing path
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

// f(receiver<buffer>&, std::stop_token): writes a temporary file, commits by rename.
class file_writer {
 public:
  file_writer(std::filesystem::path path, write_options o);
  void operator()(receiver<buffer>& in, std::stop_token stop) const;

  [[nodiscard]] const std::filesystem::path& path() const noexcept;
  // The temporary's name while it exists and has one (the fallback to O_TMPFILE), else
  // empty. Read it only when no stage runs this writer (or from the stage's thread).
  [[nodiscard]] std::filesystem::path partial_path() const;
  // The temporary file has been created (the stage is writing); false once it is gone.
  [[nodiscard]] bool writing() const noexcept;
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

// Would the kernel refuse to rename a new file onto `path` because `path` is another
// user's file in a sticky directory (/tmp)? There only the file's owner, the directory's
// owner or root may replace it. Returns the directory when so, else nothing (also when
// `path` or its directory cannot be examined: the write itself reports those).
// write_file checks this at its start; the tool's report writer asks it before a run.
std::optional<std::filesystem::path> sticky_directory_refuses(const std::filesystem::path& path);

}  // namespace sluice::io
