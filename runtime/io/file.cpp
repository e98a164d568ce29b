// io::read_file, io::write_file, io::read_fd, io::write_fd.
#include "sluice/io/file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
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

std::string at_offset(const std::string& where, std::uint64_t offset) {
  return where + " at byte offset " + std::to_string(offset);
}

void read_loop(int fd, sender<buffer>& out, const std::stop_token& stop, const read_options& o,
               const char* stage, const std::string& where) {
  const bool regular = detail::is_regular_fd(fd);
  std::optional<detail::stop_waiter> waiter;
  if (!regular) waiter.emplace(stop);
  const std::size_t chunk = std::max<std::size_t>(o.chunk, 1);
  std::uint64_t offset = 0;
  for (;;) {
    if (stop.stop_requested()) return;
    buffer b(chunk);
    bool eof = false;
    while (b.size() < chunk) {
      if (!regular && !b.empty()) break;
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
      offset += b.size();
      // relaxed: a progress counter, read for display only.
      if (o.progress != nullptr) o.progress->fetch_add(b.size(), std::memory_order_relaxed);
      if (!out.push(std::move(b))) return;  // downstream is gone: nobody will read more
    }
    if (eof) return;
    if (waiter && !waiter->wait(fd, POLLIN)) return;
  }
}

std::uint64_t write_loop(int fd, receiver<buffer>& in, const write_options& o,
                         const detail::stop_waiter* waiter, const char* stage,
                         const std::string& where, bool* stopped) {
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
    const int err = detail::write_all(fd, iov.data(), static_cast<int>(n), waiter, stopped);
    if (err != 0) detail::throw_errno(stage, "write", at_offset(where, written), err);
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
  do {
    fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
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

struct file_writer::state {
  std::filesystem::path path;
  std::filesystem::path partial;
  // Written by the stage's thread, read by whoever destroys the last copy, after the
  // graph joined that thread (the join orders them); relaxed is enough.
  std::atomic<bool> created{false};
  std::atomic<bool> committed{false};

  explicit state(std::filesystem::path p) : path(std::move(p)), partial(path) {
    partial += ".partial";
  }
  state(const state&) = delete;
  state& operator=(const state&) = delete;
  ~state() { remove_partial(); }
  void remove_partial() noexcept {
    if (created.exchange(false, std::memory_order_relaxed)) ::unlink(partial.c_str());
  }
};

file_writer::file_writer(std::filesystem::path path, write_options o)
    : state_(std::make_shared<state>(std::move(path))), options_(o) {}

const std::filesystem::path& file_writer::path() const noexcept { return state_->path; }
std::filesystem::path file_writer::partial_path() const { return state_->partial; }
bool file_writer::committed() const noexcept {
  return state_->committed.load(std::memory_order_relaxed);
}

void file_writer::operator()(receiver<buffer>& in, std::stop_token stop) const {
  state& st = *state_;
  st.committed.store(false, std::memory_order_relaxed);
  int fd;
  do {
    fd = ::open(st.partial.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) detail::throw_errno("write_file", "create", st.partial.string(), errno);
  st.created.store(true, std::memory_order_relaxed);
  // Until the rename succeeds, every way out closes the fd and removes the partial file.
  struct rollback {
    int fd;
    state& st;
    bool committed = false;
    ~rollback() {
      if (fd >= 0) ::close(fd);
      if (!committed) st.remove_partial();
    }
  } guard{fd, st};

  bool stopped = false;
  detail::write_loop(fd, in, options_, nullptr, "write_file", st.partial.string(), &stopped);
  // The input ended. Commit only after a close: an abort (cancel, an upstream failure,
  // a teardown stop request) must not leave a truncated file that looks complete.
  if (in.cancelled() || !in.done() || stop.stop_requested()) return;
  if (options_.fsync && ::fsync(fd) != 0) {
    detail::throw_errno("write_file", "fsync", st.partial.string(), errno);
  }
  if (::close(std::exchange(guard.fd, -1)) != 0 && errno != EINTR) {
    detail::throw_errno("write_file", "close", st.partial.string(), errno);
  }
  if (::rename(st.partial.c_str(), st.path.c_str()) != 0) {
    detail::throw_errno("write_file", "rename", st.partial.string() + " to " + st.path.string(), errno);
  }
  guard.committed = true;
  st.created.store(false, std::memory_order_relaxed);
  st.committed.store(true, std::memory_order_relaxed);
  if (options_.fsync) fsync_directory_of(st.path);
}

// ---- fd_writer ------------------------------------------------------------------------

void fd_writer::operator()(receiver<buffer>& in, std::stop_token stop) const {
  detail::sigpipe_guard no_sigpipe;
  std::optional<detail::stop_waiter> waiter;
  if (!detail::is_regular_fd(fd_)) waiter.emplace(stop);
  bool stopped = false;
  detail::write_loop(fd_, in, options_, waiter ? &*waiter : nullptr, "write_fd", fd_name(fd_, where_),
             &stopped);
  if (options_.fsync && !stopped && !in.cancelled() && detail::is_regular_fd(fd_) &&
      ::fsync(fd_) != 0) {
    detail::throw_errno("write_fd", "fsync", fd_name(fd_, where_), errno);
  }
}

// ---- descriptors ------------------------------------------------------------------------

source_stage<buffer, file_reader> read_file(std::filesystem::path path, read_options o,
                                            stage_options s) {
  return from<buffer>(file_reader(std::move(path), o), byte_stage_options(std::move(s), "read_file"));
}

consume_stage<file_writer> write_file(std::filesystem::path path, write_options o, stage_options s) {
  return consume(file_writer(std::move(path), o), byte_stage_options(std::move(s), "write_file"));
}

source_stage<buffer, fd_reader> read_fd(int fd, read_options o, stage_options s, std::string where) {
  return from<buffer>(fd_reader(fd, o, std::move(where)), byte_stage_options(std::move(s), "read_fd"));
}

consume_stage<fd_writer> write_fd(int fd, write_options o, stage_options s, std::string where) {
  return consume(fd_writer(fd, o, std::move(where)), byte_stage_options(std::move(s), "write_fd"));
}

}  // namespace sluice::io
