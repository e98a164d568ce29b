// tools/common/write_file.hpp — how the tool writes a file the user named (bench --report,
// demo --report): whole or not at all, and never by replacing something that is not a file.
//
//   sluice::tool::write_whole_file("report.html", html);   // throws std::runtime_error
//
// - A path that names one of the process's descriptors (/dev/stdout, /dev/fd/3, or a
//   symlink leading to one: common/sys.hpp own_fd_named_by), or the very file stdout or
//   stderr is redirected to, is written to that descriptor, as a shell redirection would;
//   a closed standard stream is an error.
// - A character device or a FIFO (also through a symlink: /dev/null) is written in place;
//   a FIFO nobody reads is an error, not a wait.
// - Otherwise (a regular file, a symlink, nothing yet) the content goes to a new file in
//   the same directory, written, synced, and renamed over the path: readers see the old
//   file or the whole new one, a failure leaves the old one (or nothing) and no temporary
//   file. The new file is anonymous (O_TMPFILE) and 0600 while it is written, so a kill
//   leaves nothing and nobody else reads it half-made; it is named just before the
//   rename. A symlink there is replaced, not followed. The new file keeps the mode of the
//   regular file it replaces, else gets 0666 less the umask.
// - A directory, a block device, a regular file the user may not write (as `> file`
//   would refuse it) and a name too long for its directory are refused.
// Errors: std::runtime_error "cannot write <what> <path>: <step>: <strerror>".
//
//   sluice::tool::check_writable("report.html");   // before a long run: throws the same errors
//
// check_writable fails, at once, where write_whole_file would fail at the end of the run
// for the same reason (a missing or read-only directory, a directory, a closed stdout), and
// changes nothing: the path is not created or truncated, a FIFO is not opened (its reader
// would see an end of file).
//
//   sluice::tool::refuse_replacing_other_content("sluice bench", "--report", path);
//
// refuses a report path that names a file holding anything but an earlier report.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>

#include "common/args.hpp"
#include "common/sys.hpp"
#include "sluice/io/file.hpp"

namespace sluice::tool {

namespace write_detail {

// "cannot write <what> <path>: <step>[: <strerror(err)>]"
inline std::runtime_error failure(const std::string& what, const std::string& path, const std::string& step,
                                  int err) {
  return std::runtime_error("cannot write " + what + " " + detail::one_line(path) + ": " + step +
                            (err != 0 ? std::string(": ") + std::strerror(err) : std::string()));
}

// How path is written: to the tool's own descriptor (`own` set), in place (a character
// device or a FIFO), or by replacing what is there (nothing, or a file). Throws for what is
// refused: a closed standard stream, a directory, a block device.
enum class target { own_fd, in_place, replace };
inline target target_of(const std::string& what, const std::string& path, int& own) {
  if (const auto fd = own_fd_named_by(path)) {
    if (*fd <= 2 && stdio_closed()[*fd]) throw failure(what, path, "it names a standard stream that is closed", EBADF);
    own = *fd;
    return target::own_fd;
  }
  struct stat st{};
  if (::stat(path.c_str(), &st) != 0) {
    // A name too long for its directory: said now, not by the rename after the whole run.
    if (errno == ENAMETOOLONG) throw failure(what, path, "its name", ENAMETOOLONG);
    return target::replace;
  }
  if (S_ISDIR(st.st_mode)) throw failure(what, path, "it is a directory", 0);
  // The very file stdout or stderr is redirected to (`--report r.html > r.html`): written
  // through that descriptor, after what was printed there; replaced, the file would have
  // lost the table printed into it.
  for (const int fd : {STDOUT_FILENO, STDERR_FILENO}) {
    struct stat io{};
    if (S_ISREG(st.st_mode) && !stdio_closed()[fd] && ::fstat(fd, &io) == 0 && io.st_dev == st.st_dev &&
        io.st_ino == st.st_ino) {
      own = fd;
      return target::own_fd;
    }
  }
  if (S_ISBLK(st.st_mode)) throw failure(what, path, "it is a block device", 0);
  return S_ISCHR(st.st_mode) || S_ISFIFO(st.st_mode) ? target::in_place : target::replace;
}

// A regular file the user may not write is not replaced, as `> file` would not write it;
// the rename needs only the directory's permission, and overwrote a write-protected report.
inline void refuse_write_protected(const std::string& what, const std::string& path) {
  if (struct stat ls{}; ::lstat(path.c_str(), &ls) == 0 && S_ISREG(ls.st_mode) && ::access(path.c_str(), W_OK) != 0 &&
                        errno == EACCES) {
    throw failure(what, path, "it is write-protected", EACCES);
  }
}

// A temporary name beside path: "<path>.tmp<n>", the name's last component cut so that it
// fits in NAME_MAX (255) whenever the path's own name does.
inline std::string temp_name_beside(const std::string& path, unsigned n) {
  const std::size_t slash = path.rfind('/');
  const std::size_t base_len = path.size() - (slash == std::string::npos ? 0 : slash + 1);
  const std::string stem = path.substr(0, path.size() - base_len + std::min<std::size_t>(base_len, 240));
  return stem + ".tmp" + std::to_string(n % 1000000000U);
}

// A new file beside path: O_EXCL under a random name (mode `mode` less the umask, unlike
// mkstemp's fixed 0600); its name goes to `tmp`.
inline int open_temp_beside(const std::string& what, const std::string& path, mode_t mode, std::string& tmp) {
  std::random_device rd;
  for (int attempt = 0; attempt < 100; ++attempt) {
    tmp = temp_name_beside(path, rd());
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd >= 0) return fd;
    if (errno != EEXIST) throw failure(what, path, "creating a temporary file beside it", errno);
  }
  throw failure(what, path, "creating a temporary file beside it", EEXIST);
}

// The directory path is in.
inline std::string directory_of(const std::string& path) {
  const std::size_t slash = path.rfind('/');
  return slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
}

// An anonymous file (O_TMPFILE, 0600) in path's directory, or -1 where the file system
// or /proc cannot give one (the caller then makes a named one).
inline int open_anonymous_beside(const std::string& path) {
  if (::access("/proc/self/fd", X_OK) != 0) return -1;  // linkat() names it through /proc
  return ::open(directory_of(path).c_str(), O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600);
}

// The process's umask, read without changing it (/proc/self/status), else by setting it
// back at once.
inline mode_t current_umask() {
  if (std::FILE* f = std::fopen("/proc/self/status", "re")) {
    char line[256];
    unsigned m = 0;
    bool found = false;
    while (std::fgets(line, sizeof line, f) != nullptr) {
      if (std::sscanf(line, "Umask: %o", &m) == 1) {
        found = true;
        break;
      }
    }
    std::fclose(f);
    if (found) return static_cast<mode_t>(m & 0777);
  }
  const mode_t m = ::umask(022);
  ::umask(m);
  return m;
}

}  // namespace write_detail

inline void write_whole_file(const std::string& path, std::string_view content, const std::string& what = "report") {
  auto fail = [&](const std::string& step, int err) { return write_detail::failure(what, path, step, err); };
  auto write_all = [&](int fd) -> int {  // 0, or the errno
    std::size_t off = 0;
    while (off < content.size()) {
      const ssize_t n = ::write(fd, content.data() + off, content.size() - off);
      if (n < 0) {
        if (errno == EINTR) continue;
        return errno;
      }
      off += static_cast<std::size_t>(n);
    }
    return 0;
  };

  int own = -1;
  switch (write_detail::target_of(what, path, own)) {
    case write_detail::target::own_fd: {
      if (own == STDOUT_FILENO || own == STDERR_FILENO) {
        std::fflush(own == STDOUT_FILENO ? stdout : stderr);  // what was printed comes first
      }
      const int err = write_all(own);
      if (err != 0) throw fail("writing", err);
      return;
    }
    case write_detail::target::in_place: {
      // O_NONBLOCK for the open only: a FIFO without a reader fails (ENXIO) instead of
      // blocking for ever.
      const int fd = ::open(path.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
      if (fd < 0) throw fail(errno == ENXIO ? "opening it (a FIFO nobody reads)" : "opening it", errno);
      ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
      int err = write_all(fd);
      if (::close(fd) != 0 && err == 0) err = errno;
      if (err != 0) throw fail("writing", err);
      return;
    }
    case write_detail::target::replace:
      break;
  }

  // A new file beside it, then rename. It is anonymous while it is written (O_TMPFILE:
  // a process killed meanwhile leaves nothing) and private (0600) until it is whole; it
  // gets its final mode before it gets a name.
  write_detail::refuse_write_protected(what, path);
  struct stat old{};
  const bool replaces_file = ::lstat(path.c_str(), &old) == 0 && S_ISREG(old.st_mode);
  // A report the user made private stays private (a rename would give it the umask's mode).
  const mode_t mode = replaces_file ? (old.st_mode & 07777) : (0666 & ~write_detail::current_umask());
  std::string tmp;
  bool anonymous = true;
  int fd = write_detail::open_anonymous_beside(path);
  if (fd < 0) {
    anonymous = false;
    fd = write_detail::open_temp_beside(what, path, 0600, tmp);
  }
  int err = write_all(fd);
  if (err == 0 && ::fchmod(fd, mode) != 0) err = errno;
  if (err == 0 && ::fsync(fd) != 0) err = errno;
  const char* step = "writing";
  if (err == 0 && anonymous) {
    // A name for it: linked under a temporary name, then renamed over the path (link
    // cannot replace). Only this instant has a name that a kill could leave behind.
    const std::string self = "/proc/self/fd/" + std::to_string(fd);
    std::random_device rd;
    for (int attempt = 0; attempt < 100; ++attempt) {
      tmp = write_detail::temp_name_beside(path, rd());
      if (::linkat(AT_FDCWD, self.c_str(), AT_FDCWD, tmp.c_str(), AT_SYMLINK_FOLLOW) == 0) {
        err = 0;
        break;
      }
      err = errno;
      tmp.clear();
      if (err != EEXIST) break;
    }
    if (err != 0) step = "naming the new file beside it";
  }
  if (::close(fd) != 0 && err == 0) err = errno;
  if (err == 0 && ::rename(tmp.c_str(), path.c_str()) != 0) {
    err = errno;
    step = "renaming the temporary file over it";
  }
  if (err != 0) {
    if (!tmp.empty()) ::unlink(tmp.c_str());
    throw fail(step, err);
  }
}

// Does path lead to the file this process's stdout writes to (/dev/stdout, /proc/self/fd/1,
// or the file, FIFO or terminal stdout is redirected to)? /dev/null is nobody's output.
inline bool names_stdout(const std::string& path) {
  struct stat at{}, out{}, null{};
  bool found = false;
  if (const auto fd = own_fd_named_by(path)) {
    if (*fd == STDOUT_FILENO) return true;
    found = ::fstat(*fd, &at) == 0;
  } else {
    found = ::stat(path.c_str(), &at) == 0;
  }
  if (!found || ::fstat(STDOUT_FILENO, &out) != 0) return false;
  if (at.st_dev != out.st_dev || at.st_ino != out.st_ino) return false;
  return !(::stat("/dev/null", &null) == 0 && null.st_dev == at.st_dev && null.st_ino == at.st_ino);
}

// A report's --report FILE as given on a command line: '-' is a usage error (the tool's
// table goes to stdout; a file named '-' would surprise). `tool` names the command. When
// stdout carries a machine-readable format (`stdout_format`: "JSON"), a path that is stdout
// is refused too: the page would be written into that output and spoil it.
inline void check_report_name(const std::string& tool, const std::string& path, const char* stdout_format = nullptr) {
  if (path == "-") {
    throw usage_error(tool + ": --report needs a file name (FILE.html); '-' (stdout) is not supported, the table goes there");
  }
  if (stdout_format != nullptr && !path.empty() && names_stdout(path)) {
    throw usage_error(tool + ": --report " + path + " is this command's stdout, where the " + stdout_format +
                      " goes; name another file");
  }
}

// What write_whole_file(path, ...) will do, checked now without writing (see the top).
// Requires: nothing; safe to call again. Guarantees: returns only if write_whole_file's
// first step would succeed now. Non-guarantees: the directory or path may change later
// (write_whole_file still checks everything); a full disk shows only when writing.
inline void check_writable(const std::string& path, const std::string& what = "report") {
  auto fail = [&](const std::string& step, int err) { return write_detail::failure(what, path, step, err); };
  int own = -1;
  switch (write_detail::target_of(what, path, own)) {
    case write_detail::target::own_fd: {
      const int flags = ::fcntl(own, F_GETFL);
      if (flags == -1 || (flags & O_ACCMODE) == O_RDONLY) throw fail("writing", EBADF);
      return;
    }
    case write_detail::target::in_place:
      if (::access(path.c_str(), W_OK) != 0) throw fail("opening it", errno);
      return;
    case write_detail::target::replace:
      break;
  }
  // A file can be created beside it: an anonymous one (O_TMPFILE: no name ever appears),
  // else a named one, removed at once. This is the step write_whole_file takes first; a
  // permission check alone (access) would pass for root where creating fails (/proc).
  const std::string dir = write_detail::directory_of(path);
  struct stat ds{};
  if (::stat(dir.c_str(), &ds) != 0) throw fail("its directory " + detail::one_line(dir), errno);
  if (!S_ISDIR(ds.st_mode)) throw fail(detail::one_line(dir) + " is not a directory", 0);
  // The final rename would be refused after the whole run (io/file.hpp).
  if (sluice::io::sticky_directory_refuses(path)) {
    throw fail("replacing it (another user's file, in a sticky directory)", EPERM);
  }
  write_detail::refuse_write_protected(what, path);
  int fd = ::open(dir.c_str(), O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600);
  if (fd < 0) {
    if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL) throw fail("creating a temporary file beside it", errno);
    std::string tmp;
    fd = write_detail::open_temp_beside(what, path, 0600, tmp);
    ::unlink(tmp.c_str());
  }
  ::close(fd);
}

// A --report path that names a regular file holding anything but a page the tool wrote
// (an HTML page whose first KiB holds <meta name="generator" content="sluice ...">, as
// both writers put in their head): replacing it would lose the user's file. (Any HTML
// page naming sluice in its first KiB passed, and a user's own notes on sluice were
// replaced; a report written before the tag, 2026-12-06, is refused now.) A data file given by mistake was replaced by the report without a word, where
// gzip refuses to overwrite anything without --force. An empty file, a symlink (replaced,
// its target untouched), a FIFO or a device, and the file stdout or stderr goes to pass.
// Throws usage_error naming the tool, the option and the path.
inline void refuse_replacing_other_content(const std::string& tool, const std::string& option, const std::string& path) {
  int own = -1;
  // Only a file the report would replace: one of our descriptors (the file stdout is
  // redirected to, even with >>) is written to, as a shell would.
  if (write_detail::target_of("report", path, own) != write_detail::target::replace) return;
  struct stat ls{};
  if (::lstat(path.c_str(), &ls) != 0 || !S_ISREG(ls.st_mode) || ls.st_size == 0) return;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return;  // unreadable: the write's own checks speak for it
  char head[1024];
  ssize_t n;
  do {
    n = ::read(fd, head, sizeof head);
  } while (n < 0 && errno == EINTR);
  ::close(fd);
  std::string text(head, n > 0 ? static_cast<std::size_t>(n) : 0);
  std::transform(text.begin(), text.end(), text.begin(), [](char ch) {
    return static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  });
  const std::size_t start = text.find_first_not_of(" \t\r\n");
  if (start != std::string::npos && text.compare(start, 14, "<!doctype html") == 0 &&
      text.find("<meta name=\"generator\" content=\"sluice ") != std::string::npos) {
    return;  // a report of ours, from an earlier run: replaced
  }
  throw usage_error(tool + ": " + option + " " + detail::one_line(path) +
                    " exists and is not a sluice report; remove it or name another file (it would be replaced)");
}

}  // namespace sluice::tool
