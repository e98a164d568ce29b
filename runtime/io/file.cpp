// io::read_file, io::write_file, io::read_fd, io::write_fd.
#include "sluice/io/file.hpp"

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <new>
#include <stdexcept>
#include <chrono>
#include <optional>
#include <utility>

#include "fd_util.hpp"

namespace sluice::io {
namespace {

std::string fd_name(int fd, const std::string& where) {
  return where.empty() ? "fd " + std::to_string(fd) : where;
}

void fsync_directory_of(const std::filesystem::path& p) {
  const std::filesystem::path dir = p.has_parent_path() ? p.parent_path() : std::filesystem::path(".");
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) detail::throw_errno("write_file", "open directory", dir.string(), errno);
  const int r = ::fsync(dfd);
  const int err = errno;
  ::close(dfd);
  if (r != 0) detail::throw_errno("write_file", "fsync directory", dir.string(), err);
}

}  // namespace

namespace detail {
// How long a trickle is waited for at a time while the channel still holds items (read_loop).
constexpr auto kGatherWait = std::chrono::milliseconds(1);
constexpr auto kGatherMax = std::chrono::milliseconds(50);  // and at most this long for one buffer

std::string at_offset(const std::string& where, std::uint64_t offset) {
  return where + " at byte offset " + std::to_string(offset);
}

void read_loop(int fd, sender<buffer>& out, const std::stop_token& stop, const read_options& o,
               const char* stage, const std::string& where) {
  // A negative fd is no descriptor (poll() would skip it and the wait never end).
  if (fd < 0) detail::throw_errno(stage, "read", at_offset(where, 0), EBADF);
  // A closed one fails now, before this loop opens descriptors of its own (one could take
  // its number: stdin closed, then "stdin" would be the stop waiter's eventfd).
  if (::fcntl(fd, F_GETFD) < 0) detail::throw_errno(stage, "read", at_offset(where, 0), errno);
  // A regular file's size at the start: one that is smaller at the end was truncated
  // while it was read (copytruncate log rotation), and what was read is not the file.
  // (0 where the size means nothing: /proc files say 0 and hold text; they are not checked.)
  struct stat at_start{};
  const bool regular = ::fstat(fd, &at_start) == 0 && S_ISREG(at_start.st_mode);
  const off_t size_at_start = regular ? at_start.st_size : 0;
  std::optional<detail::stop_waiter> waiter;
  if (!regular) waiter.emplace(stop, stage, where);
  const std::size_t chunk = o.chunk != 0 ? o.chunk : kChunk;  // 0: the default, as the codecs read it
  std::uint64_t offset = 0;
  buffer b;
  for (;;) {
    if (stop.stop_requested()) return;
    if (b.capacity() < chunk) {  // else the previous one, emptied (below)
      try {
        b = buffer(chunk);
      } catch (const std::bad_alloc&) {
        throw error(std::string(stage) + ": cannot allocate a chunk of " + std::to_string(chunk) + " bytes to read " +
                        where + " (read_options::chunk)",
                    ENOMEM);
      }
    }
    bool eof = false;
    while (b.size() < chunk) {
      if (!regular && !b.empty()) break;
      // Not a regular file: wait for data (or the stop request) before each read, so a
      // blocking pipe, terminal or socket never holds the stage past a stop.
      if (waiter && !waiter->wait(fd, POLLIN)) return;
      const ssize_t r = ::read(fd, b.spare().data(), chunk - b.size());
      if (r < 0) {
        if (errno == EINTR) continue;
        if ((errno == EAGAIN || errno == EWOULDBLOCK) && waiter) {
          if (!waiter->wait(fd, POLLIN)) return;  // stop requested
          continue;
        }
        detail::throw_errno(stage, "read", at_offset(where, offset + b.size()), errno);
      }
      if (r == 0) {
        eof = true;
        break;
      }
      b.commit(static_cast<std::size_t>(r));
    }
    if (!b.empty()) {
      // A short read while the channel still holds items (its consumer is behind): more of
      // the trickle joins this buffer before it goes, 1 ms of waiting at a time, until the
      // channel is empty, the buffer a quarter full, or kGatherMax passed. The consumer has
      // work meanwhile. A peer sending one-byte segments made each its own 256 B buffer
      // weighed as 1 byte, and a 64 KiB budget held ~65,000 of them (a probe: 15.5 MB).
      int read_error = 0;
      if (waiter && b.size() < chunk / 4) {
        const auto gather_until = std::chrono::steady_clock::now() + kGatherMax;
        while (b.size() < chunk / 4 && out.stats().size > 0 && std::chrono::steady_clock::now() < gather_until) {
          const auto w = waiter->wait_until(fd, POLLIN, std::chrono::steady_clock::now() + kGatherWait);
          if (w == detail::stop_waiter::waited::stopped) break;  // what was read goes; the loop ends after
          if (w == detail::stop_waiter::waited::timed_out) continue;
          const ssize_t r = ::read(fd, b.spare().data(), chunk - b.size());
          if (r > 0) {
            b.commit(static_cast<std::size_t>(r));
          } else if (r == 0) {
            eof = true;
            break;
          } else if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK) {
            read_error = errno;  // reported after what was read has gone on
            break;
          }
        }
      }
      offset += b.size();
      // relaxed: a progress counter, read for display only.
      if (o.progress != nullptr) o.progress->fetch_add(b.size(), std::memory_order_relaxed);
      // A short read (a pipe or socket that trickles) goes on in a buffer of its own size:
      // a channel's budget weighs a buffer by its content, so chunk-sized buffers holding
      // a few bytes each would let the memory behind one budget grow a thousandfold. The
      // big buffer is kept for the next read.
      if (b.size() < chunk / 4) {
        if (!out.push(buffer::copy_of(b.view()))) return;
        b.clear();
      } else if (!out.push(std::move(b))) {
        return;  // downstream is gone: nobody will read more
      }
      if (read_error != 0) detail::throw_errno(stage, "read", at_offset(where, offset), read_error);
    }
    if (eof) {
      struct stat at_end{};
      if (size_at_start > 0 && ::fstat(fd, &at_end) == 0 && at_end.st_size < size_at_start) {
        throw error(std::string(stage) + ": " + where + " shrank while it was read (from " +
                        std::to_string(size_at_start) + " to " + std::to_string(at_end.st_size) + " bytes; " +
                        std::to_string(offset) + " read): another process truncated it, and what was read is "
                        "not the file",
                    EIO);
      }
      return;
    }
  }
}

std::uint64_t write_loop(int fd, receiver<buffer>& in, const write_options& o,
                         const detail::stop_waiter* waiter, const char* stage,
                         const std::string& where, bool* stopped, write_mode how) {
  constexpr std::size_t kBatch = 16;
  std::array<buffer, kBatch> batch;
  std::array<iovec, kBatch> iov{};
  std::uint64_t written = 0;
  for (;;) {
    const std::size_t n = in.pop_some(batch.begin(), kBatch);
    if (n == 0) return written;
    std::size_t bytes = 0;
    for (std::size_t i = 0; i < n; ++i) {
      iov[i] = {batch[i].data(), batch[i].size()};
      bytes += batch[i].size();
    }
    std::uint64_t part = 0;  // of this batch, before an error (a short write, then EFBIG)
    const int err = detail::write_all(fd, iov.data(), static_cast<int>(n), waiter, stopped, how, &part);
    if (err != 0) detail::throw_errno(stage, "write", at_offset(where, written + part), err);
    for (std::size_t i = 0; i < n; ++i) batch[i].release();
    if (*stopped) return written;
    written += bytes;
    if (o.progress != nullptr) o.progress->fetch_add(bytes, std::memory_order_relaxed);  // relaxed: display only
  }
}

}  // namespace detail

// ---- file_reader / fd_reader ------------------------------------------------------

void file_reader::operator()(sender<buffer>& out, std::stop_token stop) const {
  int fd;
  // O_NONBLOCK: opening a FIFO does not wait for a writer (read_loop polls it, with the
  // stop request, before each read); a regular file ignores it.
  do {
    fd = ::open(path_.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) detail::throw_errno("read_file", "open", path_.string(), errno);
  struct closer {
    int fd;
    ~closer() { ::close(fd); }
  } guard{fd};
  struct stat st{};
  if (::fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
    throw error("read_file: cannot read " + path_.string() + ": it is a directory", EISDIR);
  }
  if (S_ISREG(st.st_mode)) ::posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
  detail::read_loop(fd, out, stop, options_, "read_file", path_.string());
}

void fd_reader::operator()(sender<buffer>& out, std::stop_token stop) const {
  detail::read_loop(fd_, out, stop, options_, "read_fd", fd_name(fd_, where_));
}

// ---- file_writer --------------------------------------------------------------------

std::optional<std::filesystem::path> sticky_directory_refuses(const std::filesystem::path& path) {
  const uid_t me = ::geteuid();
  if (me == 0) return std::nullopt;
  const std::filesystem::path dir = path.parent_path().empty() ? "." : path.parent_path();
  struct stat target{};
  struct stat ds{};
  if (::lstat(path.c_str(), &target) != 0 || ::stat(dir.c_str(), &ds) != 0) return std::nullopt;
  if ((ds.st_mode & S_ISVTX) == 0 || target.st_uid == me || ds.st_uid == me) return std::nullopt;
  return dir;
}

namespace {

// Eight random characters for a temporary's name (getrandom; the clock if that fails).
std::string random_suffix() {
  static constexpr char kAlphabet[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  std::uint64_t bits = 0;
  if (::getrandom(&bits, sizeof bits, GRND_NONBLOCK) != static_cast<ssize_t>(sizeof bits)) {
    static std::atomic<std::uint64_t> counter{0};  // relaxed: only needs distinct values
    bits = static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) ^
           (counter.fetch_add(1, std::memory_order_relaxed) * 0x9E3779B97F4A7C15ull) ^
           (static_cast<std::uint64_t>(::getpid()) << 40);
  }
  std::string s;
  for (int i = 0; i < 8; ++i) {
    s += kAlphabet[bits % (sizeof kAlphabet - 1)];
    bits /= sizeof kAlphabet - 1;
  }
  return s;
}

std::filesystem::path directory_of(const std::filesystem::path& p) {
  return p.has_parent_path() ? p.parent_path() : std::filesystem::path(".");
}

// A fresh name for a temporary beside `target`: target.XXXXXXXX.partial (or, where that
// name would be too long, DIR/.sluice-XXXXXXXX.partial).
std::filesystem::path temporary_name(const std::filesystem::path& target) {
  const std::string base = target.filename().string();
  // Built with append: GCC 12 at -O3 warns falsely about "." + s, -Wrestrict.
  std::string tail = base.size() + 18 <= NAME_MAX ? base : std::string(".sluice-");
  tail += base.size() + 18 <= NAME_MAX ? "." : "";
  tail.append(random_suffix());
  tail.append(".partial");
  return directory_of(target) / tail;
}

// Opens a new temporary for `target`, exclusively: O_TMPFILE in its directory when the
// file system has it (and /proc/self/fd is there to link it later), else a new file with
// a random name. *name gets the name (empty for an anonymous temporary).
int open_temporary(const std::filesystem::path& target, mode_t mode, std::filesystem::path* name) {
  name->clear();
  const std::filesystem::path dir = directory_of(target);
  if (::access("/proc/self/fd", X_OK) == 0) {
    int fd;
    do {
      fd = ::open(dir.c_str(), O_TMPFILE | O_WRONLY | O_CLOEXEC, mode);
    } while (fd < 0 && errno == EINTR);
    if (fd >= 0) return fd;
    // Older kernels say EISDIR, file systems without it EOPNOTSUPP: fall back to a name.
    if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL) {
      detail::throw_errno("write_file", "create a temporary file in",
                          dir.string() + " (for " + target.filename().string() + ")", errno);
    }
  }
  for (int attempt = 0;; ++attempt) {
    std::filesystem::path p = temporary_name(target);
    const int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
    if (fd >= 0) {
      *name = std::move(p);
      return fd;
    }
    if (errno == EINTR || (errno == EEXIST && attempt < 100)) continue;
    detail::throw_errno("write_file", "create", p.string() + " (for " + target.filename().string() + ")", errno);
  }
}

// Gives an anonymous temporary a fresh name beside `target`; returns it.
std::filesystem::path link_temporary(int fd, const std::filesystem::path& target) {
  const std::string proc = "/proc/self/fd/" + std::to_string(fd);
  for (int attempt = 0;; ++attempt) {
    std::filesystem::path p = temporary_name(target);
    if (::linkat(AT_FDCWD, proc.c_str(), AT_FDCWD, p.c_str(), AT_SYMLINK_FOLLOW) == 0) return p;
    if (errno == EINTR || (errno == EEXIST && attempt < 100)) continue;
    detail::throw_errno("write_file", "give the new file a name in", p.parent_path().string() + " (for " +
                        target.filename().string() + ")", errno);
  }
}

// Moves `from` to `to`; with replace false, fails with EEXIST if `to` exists (atomically).
// What `path` is when it exists and write_file must not replace it: a device, a FIFO or a
// socket (rename() would swap the node itself for a regular file: as root, write_file
// onto /dev/null replaced /dev/null). Empty when it is a regular file, a symlink (the link
// itself is replaced, as documented), absent, or a directory (refused at the start by
// check_replaceable; one that appears later fails the rename with EISDIR).
std::string not_replaceable(const std::filesystem::path& path) {
  struct stat st{};
  if (::lstat(path.c_str(), &st) != 0) return {};
  if (S_ISCHR(st.st_mode)) return "a character device";
  if (S_ISBLK(st.st_mode)) return "a block device";
  if (S_ISFIFO(st.st_mode)) return "a FIFO";
  if (S_ISSOCK(st.st_mode)) return "a socket";
  return {};
}
void check_replaceable(const std::filesystem::path& path) {
  struct stat st{};
  const bool exists = ::lstat(path.c_str(), &st) == 0;
  if (!exists && errno == ENAMETOOLONG) {
    // Refused at the start: the rename after the whole input failed so, naming the temporary.
    throw error("write_file: cannot write " + path.string() + ": its name is too long", ENAMETOOLONG);
  }
  if (exists && S_ISDIR(st.st_mode)) {
    // Refused at the start, not by the rename once the whole input was written.
    throw error("write_file: cannot write " + path.string() + ": it is a directory", EISDIR);
  }
  const std::string what = not_replaceable(path);
  if (!what.empty()) {
    throw error("write_file: " + path.string() + " is " + what +
                ", not a file; it is not replaced (io::write_fd writes to an open descriptor)", EEXIST);
  }
  if (const auto dir = sticky_directory_refuses(path)) {
    throw error("write_file: cannot replace " + path.string() + ": it belongs to another user, in a sticky directory (" +
                    dir->string() + ") where only its owner may replace it",
                EPERM);
  }
}

int move_into_place(const std::filesystem::path& from, const std::filesystem::path& to, bool replace) {
  if (replace) {
    if (!not_replaceable(to).empty()) return EEXIST;  // appeared since the start (checked there)
    return ::rename(from.c_str(), to.c_str()) == 0 ? 0 : errno;
  }
  if (::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE) == 0) return 0;
  if (errno != EINVAL && errno != ENOSYS) return errno;
  // No RENAME_NOREPLACE here: link() refuses an existing name just as atomically.
  if (::link(from.c_str(), to.c_str()) != 0) return errno;
  ::unlink(from.c_str());
  return 0;
}

}  // namespace

struct file_writer::state {
  std::filesystem::path path;
  // The temporary's name while it exists and has one. Written by the stage's thread,
  // read by whoever destroys the last copy, after the graph joined that thread.
  std::filesystem::path partial;
  // Read from any thread (writing()); the join orders the stage's stores before the
  // destructor's loads, so relaxed is enough.
  std::atomic<bool> created{false};
  std::atomic<bool> committed{false};

  explicit state(std::filesystem::path p) : path(std::move(p)) {}
  state(const state&) = delete;
  state& operator=(const state&) = delete;
  ~state() { remove_partial(); }
  void remove_partial() noexcept {
    if (created.exchange(false, std::memory_order_relaxed) && !partial.empty()) {
      ::unlink(partial.c_str());
    }
    partial.clear();
  }
};

file_writer::file_writer(std::filesystem::path path, write_options o)
    : state_(std::make_shared<state>(std::move(path))), options_(o) {}

const std::filesystem::path& file_writer::path() const noexcept { return state_->path; }
std::filesystem::path file_writer::partial_path() const { return state_->partial; }
bool file_writer::writing() const noexcept { return state_->created.load(std::memory_order_relaxed); }
bool file_writer::committed() const noexcept {
  return state_->committed.load(std::memory_order_relaxed);
}

void file_writer::operator()(receiver<buffer>& in, std::stop_token stop) const {
  // Past the file size limit (ulimit -f) a write fails with EFBIG, an io::error naming
  // the path and offset, instead of SIGXFSZ killing the process.
  const detail::write_signals_guard no_write_signals;
  state& st = *state_;
  st.committed.store(false, std::memory_order_relaxed);
  const std::string where = st.path.string();
  check_replaceable(st.path);
  // Without `mode`, a file that replaces another gets its permission bits and group, as
  // an editor's save does: a private file stays private (it became 0666 minus the umask).
  std::optional<mode_t> mode = options_.mode;
  std::optional<gid_t> group = options_.group;
  if (struct stat old{}; !mode && ::stat(st.path.c_str(), &old) == 0 && S_ISREG(old.st_mode)) {
    mode = old.st_mode & 0777;
    if (!group) group = old.st_gid;
  }
  // Created with no more than the owner's bits of `mode`: the group is not settled yet.
  mode_t want = mode ? (*mode & 0777) : 0666;
  const int fd = open_temporary(st.path, mode ? (want & 0700) : want, &st.partial);
  st.created.store(true, std::memory_order_relaxed);
  // Until the commit, every way out closes the fd and discards the temporary.
  struct rollback {
    int fd;
    state& st;
    bool committed = false;
    ~rollback() {
      if (fd >= 0) ::close(fd);
      if (!committed) st.remove_partial();
    }
  } guard{fd, st};
  if (mode) {
    struct stat now{};
    if (group && ::fstat(fd, &now) == 0 && now.st_gid != *group && ::fchown(fd, static_cast<uid_t>(-1), *group) != 0) {
      // The group could not be kept: the file's group (the writer's) gets no more than
      // everyone else does (0644 stays 0644, 0640 becomes 0600, never 0604).
      want = (want & ~static_cast<mode_t>(070)) | (want & ((want & 07) << 3));
    }
    if (::fchmod(fd, want) != 0) detail::throw_errno("write_file", "set the mode of", where, errno);
  } else if (group) {
    (void)::fchown(fd, static_cast<uid_t>(-1), *group);
  }

  bool stopped = false;
  detail::write_loop(fd, in, options_, nullptr, "write_file", where, &stopped);
  // The input ended. Commit only after a close: an abort (cancel, an upstream failure,
  // a teardown stop request) must not leave a truncated file that looks complete.
  if (in.cancelled() || !in.done() || stop.stop_requested()) return;
  if (options_.atime || options_.mtime) {
    const timespec omit{0, UTIME_OMIT};
    const timespec times[2] = {options_.atime.value_or(omit), options_.mtime.value_or(omit)};
    if (::futimens(fd, times) != 0) detail::throw_errno("write_file", "set the times of", where, errno);
  }
  if (options_.fsync && ::fsync(fd) != 0) detail::throw_errno("write_file", "fsync", where, errno);
  // Again after the fsync, which can take long (about 150 ms for 100 MB): an abort that came
  // during it keeps the file out too (sluice gzip named OUT, then said "no output kept").
  if (in.cancelled() || stop.stop_requested()) return;
  // Given to its owner last, once whole: nobody else could touch it while it was written.
  // Only root can; anyone else keeps the file (their own), silently, as gzip(1) does.
  if (options_.owner) (void)::fchown(fd, *options_.owner, static_cast<gid_t>(-1));
  if (st.partial.empty()) st.partial = link_temporary(fd, st.path);
  if (::close(std::exchange(guard.fd, -1)) != 0 && errno != EINTR) {
    detail::throw_errno("write_file", "close", where, errno);
  }
  if (const int err = move_into_place(st.partial, st.path, options_.replace); err != 0) {
    if (err == EEXIST) throw error("write_file: " + where + " already exists; not replaced", err);
    detail::throw_errno("write_file", "rename", st.partial.string() + " to " + where, err);
  }
  guard.committed = true;
  st.created.store(false, std::memory_order_relaxed);
  st.partial.clear();
  st.committed.store(true, std::memory_order_relaxed);
  if (options_.fsync) fsync_directory_of(st.path);
}

// ---- fd_writer ------------------------------------------------------------------------

void fd_writer::operator()(receiver<buffer>& in, std::stop_token stop) const {
  detail::write_signals_guard no_write_signals;
  const detail::output_fd target(fd_);
  std::optional<detail::stop_waiter> waiter;
  if (target.waits()) waiter.emplace(stop, "write_fd", fd_name(fd_, where_));
  bool stopped = false;
  detail::write_loop(target.fd(), in, options_, waiter ? &*waiter : nullptr, "write_fd", fd_name(fd_, where_),
                     &stopped, target.how());
  if (options_.fsync && !stopped && !in.cancelled() && detail::is_regular_fd(fd_) &&
      ::fsync(fd_) != 0) {
    detail::throw_errno("write_fd", "fsync", fd_name(fd_, where_), errno);
  }
}

// ---- descriptors ------------------------------------------------------------------------

source_stage<buffer, file_reader> read_file(std::filesystem::path path, read_options o,
                                            stage_options s) {
  if (path.empty()) throw std::invalid_argument("sluice::io::read_file: the path is empty");
  return from<buffer>(file_reader(std::move(path), o), byte_stage_options(std::move(s), "read_file"));
}

consume_stage<file_writer> write_file(std::filesystem::path path, write_options o, stage_options s) {
  if (path.empty()) throw std::invalid_argument("sluice::io::write_file: the path is empty");
  return consume(file_writer(std::move(path), o), byte_stage_options(std::move(s), "write_file"));
}

source_stage<buffer, fd_reader> read_fd(int fd, read_options o, stage_options s, std::string where) {
  return from<buffer>(fd_reader(fd, o, std::move(where)), byte_stage_options(std::move(s), "read_fd"));
}

consume_stage<fd_writer> write_fd(int fd, write_options o, stage_options s, std::string where) {
  return consume(fd_writer(fd, o, std::move(where)), byte_stage_options(std::move(s), "write_fd"));
}

}  // namespace sluice::io
