// tools/gzip/cmd_gzip.cpp — `sluice gzip IN [OUT]` and `sluice gunzip IN [OUT]`.
//
//   read_file(IN) ─► parallel_gzip(level, jobs, block) ─► write_file(OUT)   (sluice gzip)
//   read_file(IN) ─► gunzip ─────────────────────────────► write_file(OUT)   (sluice gunzip)
//
// `-` is stdin (IN) or stdout (OUT). A regular OUT is written to a temporary file of its
// own in OUT's directory (write_file: O_TMPFILE, or OUT.XXXXXXXX.partial), fsync'ed and
// renamed only when everything succeeded, so a missing or corrupt input, a full disk, a
// closed pipe or Ctrl-C leaves no output behind; it gets IN's permission bits (never
// more, at any moment), group and times, as gzip(1) gives them. An OUT that is a
// character device or a FIFO (also through a symlink, like /dev/stdout) is written in
// place; a directory is refused; an existing file or symlink is replaced (the link
// itself, never what it points to) only with --force. As gzip(1), compressed data is
// neither written to nor read from a terminal without --force.
// Exit status: 0 done; 1 failed (one line on stderr); 2 a bad command line, or a
// warning (gunzip: trailing garbage ignored, as gzip(1); gzip: a regular IN that grew
// while it was read, "file size changed while zipping" as gzip(1) says, the output of what
// was read kept; one that shrank is an error, nothing kept); 128 + N after signal N (SIGINT,
// SIGTERM, SIGHUP cancel the run at once; a second one ends the process at once). On a
// terminal, a progress line shows bytes in and out and the rate.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <exception>
#include <filesystem>
#include <functional>
#include <new>
#include <string>
#include <system_error>
#include <thread>
#include <optional>
#include <utility>

#include "common/args.hpp"
#include "commands.hpp"
#include "common/progress.hpp"
#include "common/signals.hpp"
#include "common/sys.hpp"
#include "sluice/io/all.hpp"
#include "sluice/pipeline.hpp"

namespace sluice::tool {
namespace {

namespace fs = std::filesystem;

constexpr std::size_t kReadBudget = std::size_t{1} << 20;  // bytes between the reader and the codec

struct codec_args {
  bool compress = true;
  std::string in;
  std::string out;
  std::uint64_t level = 6;
  std::uint64_t jobs = 0;
  std::uint64_t block = std::uint64_t{128} << 10;
  bool force = false;
};

std::string default_output(const codec_args& a, const std::string& prog) {
  if (a.in == "-") return "-";
  if (a.compress) return a.in + ".gz";
  const std::string_view in = a.in;
  const std::string_view base = in.substr(in.rfind('/') == std::string_view::npos ? 0 : in.rfind('/') + 1);
  if (base == ".gz" || base == ".tgz") {
    throw usage_error(prog + ": cannot name the output of '" + a.in + "' (without its suffix no name is left); give OUT");
  }
  if (in.size() > 3 && in.substr(in.size() - 3) == ".gz") return std::string(in.substr(0, in.size() - 3));
  if (in.size() > 4 && in.substr(in.size() - 4) == ".tgz") return std::string(in.substr(0, in.size() - 4)) + ".tar";
  throw usage_error(prog + ": cannot name the output of '" + a.in + "' (no .gz suffix); give OUT");
}

// Thrown to end the run with a one-line message and status 1.
struct failure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The innermost message: a stage_error's cause, else the exception itself, without the
// failing stage's own "STAGE: " prefix (the tool's "sluice gzip: " replaces it). An
// error of the codec itself is given the input's name, as gzip(1) does.
std::string message_of(const std::exception_ptr& p, const std::string& input, const std::string& stage = {}) {
  try {
    std::rethrow_exception(p);
  } catch (const stage_error& e) {
    return message_of(e.cause(), input, e.stage());
  } catch (const std::bad_alloc&) {
    // "std::bad_alloc" alone did not say what ran out, nor what to change.
    return input + ": out of memory" + (stage.empty() ? std::string() : " in stage '" + stage + "'") +
           " (each job holds a few buffers of --block bytes: try a smaller --block or fewer --jobs)";
  } catch (const std::exception& e) {
    std::string m = e.what();
    for (const std::string& prefix : {stage + ": ", std::string("io: ")}) {
      if (prefix.size() > 2 && m.rfind(prefix, 0) == 0) {
        m.erase(0, prefix.size());
        break;
      }
    }
    const bool codec = stage != "read_file" && stage != "read_fd" && stage != "write_file" && stage != "write_fd";
    return codec ? input + ": " + m : m;
  } catch (...) {
    return input + ": unknown error";
  }
}

std::string rate_text(double bytes, double seconds) {
  if (seconds <= 0) return "-";
  return format_size(bytes / seconds) + "/s";  // the units of the sizes beside it (MiB)
}

// Runs source -> codec -> sink; reports progress; turns a signal into a cancel, said on
// stderr with `left_behind` (what the interrupted run leaves of the output).
// Returns the exit status (0, or 128 + the signal); throws failure on an error.
template <class Source, class Codec, class Sink>
int run(const std::string& prog, const std::string& input, Source src, Codec codec, Sink sink,
        const std::atomic<std::uint64_t>& in_bytes, const std::atomic<std::uint64_t>& out_bytes,
        std::uint64_t total, const std::string& left_behind, int out_fd = -1,
        const std::function<bool()>& kept = {}) {
  const signal_block signals;  // before the pipeline's threads start: they inherit the mask
  progress bar(prog);
  bar.not_over_output_on(out_fd);
  sluice::pipeline p(std::move(src), std::move(codec), std::move(sink));
  std::atomic<bool> done{false};
  std::atomic<int> interrupted{0};
  const auto t0 = std::chrono::steady_clock::now();
  p.start();
  std::thread watcher;
  try {
    watcher = start_thread("watches for signals", [&] {
      // acquire: pairs with the release store after wait() returns.
      while (!done.load(std::memory_order_acquire)) {
        if (const int sig = signals.take(std::chrono::milliseconds(100)); sig != 0) {
          if (interrupted.load(std::memory_order_relaxed) != 0) {
            // A second signal: the user insists. Nothing of OUT is on disk under its name,
            // and an anonymous temporary vanishes with the process; a named one (the
            // fallback where O_TMPFILE is missing) would not, so the cancel the first signal
            // began gets a moment (it ends in milliseconds) to remove it first.
            write_nowait(STDERR_FILENO, prog + ": interrupted again by " + strsignal(sig) + "; exiting now\n",
                         std::chrono::milliseconds(50));
            const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(500);
            while (!done.load(std::memory_order_acquire) && std::chrono::steady_clock::now() < until) {
              std::this_thread::sleep_for(std::chrono::milliseconds(2));
            }
            std::_Exit(128 + sig);
          }
          interrupted.store(sig, std::memory_order_relaxed);  // read after the join below
          p.cancel();  // every stage's wait (pipe, terminal, socket, channel) ends at once
          continue;
        }
        if (!bar.live() || interrupted.load(std::memory_order_relaxed) != 0) continue;
        const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        // relaxed: progress counters, display only.
        const auto in = static_cast<double>(in_bytes.load(std::memory_order_relaxed));
        const auto out = static_cast<double>(out_bytes.load(std::memory_order_relaxed));
        std::string line = "read " + format_size(in);
        if (total != 0) line += " of " + format_size(static_cast<double>(total)) + " (" +
                                std::to_string(static_cast<int>(100.0 * in / static_cast<double>(total))) + "%)";
        line += ", wrote " + format_size(out) + ", " + rate_text(in, secs);
        bar.update(line);
      }
    });
  } catch (const std::system_error&) {  // a thread limit: the pipeline's threads got theirs, this one none
    p.cancel();
    try {
      p.wait();
    } catch (...) {
    }
    throw;
  }
  std::exception_ptr err;
  try {
    (void)p.wait();
  } catch (...) {
    err = std::current_exception();
  }
  done.store(true, std::memory_order_release);
  signals.wake();
  watcher.join();
  bar.clear();
  // A signal that came after the run had already succeeded changes nothing; nor does one
  // that came after OUT was put in place (`kept`), in the microseconds between the write's
  // last check for a stop and its rename: OUT is whole, and it is there.
  if (const int sig = interrupted.load(std::memory_order_relaxed); sig != 0 && err && kept && kept()) {
    write_nowait(STDERR_FILENO, prog + ": interrupted by " + strsignal(sig) + " after the output was complete; it is kept\n",
                 std::chrono::milliseconds(50));
    return 0;
  }
  if (const int sig = interrupted.load(std::memory_order_relaxed); sig != 0 && err) {
    // Not a blocking fprintf: stderr may be a terminal nobody reads (signals are still
    // blocked here, so a stuck write could not even be interrupted).
    write_nowait(STDERR_FILENO, prog + ": interrupted by " + strsignal(sig) + "; " + left_behind + "\n",
                 std::chrono::milliseconds(50));
    return 128 + sig;
  }
  if (err) throw failure(message_of(err, input));
  return 0;
}

int run_codec(bool compress, int argc, char** argv) {
  codec_args a;
  a.compress = compress;
  const std::string prog = compress ? "sluice gzip" : "sluice gunzip";
  arg_parser p(prog, compress ? "Compress IN to OUT in gzip format: blocks compressed on --jobs threads, written\n"
                                "in order as gzip members (any gzip -d reads them), memory bounded by byte budgets."
                              : "Decompress the gzip file IN (concatenated members too) to OUT; the output is\n"
                                "byte for byte what gzip -d gives.");
  p.positional("IN", &a.in, "input file, or - for stdin");
  p.positional("OUT", &a.out,
               compress ? "output file, or - for stdout (default: IN.gz, for a regular IN that is not a link;\n"
                                  "                          stdout when IN is -)"
                        : "output file, or - for stdout (default: IN without .gz, for a regular IN that is not a\n"
                                  "                          link; stdout when IN is -)",
               false);
  if (compress) {
    p.count("--level", &a.level, "compression level, 0 (store) to 9 (smallest)", {0, 9, "a level from 0 to 9"});
    p.count("--jobs", &a.jobs, "compressing threads (0: one per hardware thread)", {0, 1024, "0 to 1024"});
    p.size("--block", &a.block, "input bytes per compressed block", {1, std::uint64_t{1} << 30, "1 byte to 1 GiB"});
  }
  p.flag("--force", &a.force,
         compress ? "replace an existing OUT (a link to a file is replaced, not followed); write to a block device;\n"
                    "                          write compressed data to a terminal"
                  : "replace an existing OUT (a link to a file is replaced, not followed); write to a block device;\n"
                    "                          read compressed data from a terminal");
  p.epilog(std::string("A failed or interrupted run leaves no OUT (and no temporary file) behind; an existing\n"
                       "OUT is only replaced when the new one is complete (stdout, a pipe or a device keeps\n"
                       "what was written). OUT gets a regular IN's permissions and times (otherwise the umask's\n"
                       "default, now). Messages name the file they are about (IN or OUT).\n") +
           (compress ? "A regular IN that grows while it is read is compressed as read, with a warning; one\n"
                       "that shrinks (truncated by another process) is an error, and no OUT is kept.\n"
                       "Exit status: 0 done, 1 failed, 2 bad arguments or a warning (IN's size changed),\n"
                       "128+N killed by signal N."
                     : "Trailing garbage after the last member is ignored with a warning, as gzip -d does.\n"
                       "Exit status: 0 done, 1 failed, 2 bad arguments or a warning (trailing garbage),\n"
                       "128+N killed by signal N."));
  if (!p.parse(argc, argv)) return 0;
  // Each job holds a block and its compressed copy (up to a block again): --block 1GiB
  // --jobs 8 could ask for 16 GiB and fail (out of memory) once the work had begun.
  if (const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE); pages > 0 && page > 0) {
    const auto ram = static_cast<long double>(pages) * static_cast<long double>(page);
    const unsigned hw = std::thread::hardware_concurrency();
    const std::uint64_t jobs = a.jobs != 0 ? a.jobs : (hw != 0 ? hw : 1);
    if (static_cast<long double>(jobs) * 2 * static_cast<long double>(a.block) > ram) {
      p.reject("--block", "a size whose " + std::to_string(jobs) + " blocks in flight (--jobs), each with its compressed copy, fit in this machine's " +
                              format_size(static_cast<double>(ram)) + ": a smaller --block or fewer --jobs");
    }
  }
  const std::string input = a.in == "-" ? "stdin" : a.in;
  // Every message is one line, whatever bytes the names in it hold: a control byte in a
  // file name (an escape sequence, a newline) is shown as \xNN, not sent to the terminal.
  auto fail = [&](const std::string& what) {
    std::fprintf(stderr, "%s: %s\n", prog.c_str(), detail::one_line(what).c_str());
    return 1;
  };
  if (a.in == "-" && stdio_closed()[0]) return fail("stdin: Bad file descriptor (standard input is closed)");
  // /dev/stdin (or a link to it) when stdin was closed would read guard_stdio's /dev/null:
  // an empty input, silently.
  if (a.in != "-") {
    if (const auto fd = own_fd_named_by(a.in); fd && *fd <= 2 && stdio_closed()[*fd]) {
      return fail(a.in + ": Bad file descriptor (it names a standard stream that is closed)");
    }
  }

  // Compressed data is not read from a terminal without --force (as gzip -d): `sluice
  // gunzip - out` at a prompt waited for the user to type gzip bytes, its progress line
  // drawn over what they typed.
  if (!compress && !a.force) {
    bool tty = false;
    if (a.in == "-") {
      tty = ::isatty(STDIN_FILENO) != 0;
    } else if (struct stat cs{}; ::stat(a.in.c_str(), &cs) == 0 && S_ISCHR(cs.st_mode)) {
      const int fd = ::open(a.in.c_str(), O_RDONLY | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
      tty = fd >= 0 && ::isatty(fd) != 0;
      if (fd >= 0) ::close(fd);
    }
    if (tty) {
      return fail("compressed data not read from a terminal (" + input + " is one; use --force, or redirect)");
    }
  }

  // The input first (as gzip(1)): a missing input or a directory is reported as such,
  // whatever OUT is. A regular input's size drives the progress line; its mode, group
  // and times go to OUT.
  std::uint64_t total = 0;
  bool regular_in = false;
  io::write_options wo{.fsync = true, .progress = nullptr};
  struct stat st{};
  if (a.in != "-") {
    if (::stat(a.in.c_str(), &st) != 0) return fail("cannot open " + a.in + ": " + std::strerror(errno));
    if (S_ISDIR(st.st_mode)) return fail(a.in + " is a directory");
    if (S_ISREG(st.st_mode)) {
      regular_in = true;
      total = static_cast<std::uint64_t>(st.st_size);
      wo.mode = st.st_mode & 0777;
      wo.group = st.st_gid;
      wo.owner = st.st_uid;  // as gzip(1): run as root, OUT stays its input's owner's
      wo.atime = st.st_atim;
      wo.mtime = st.st_mtim;
    }
  }
  if (a.out.empty()) {
    // As gzip(1): only a regular file's name makes its output's (/dev/stdin.gz would land
    // in /dev; /dev/zero would fill it).
    // Files of /proc, /sys and the other kernel file systems (cgroup, debugfs, ...) say
    // "regular" and hold no file's data (/proc/self/status.gz would be written in /proc). A symbolic link's name makes no output name either
    // (gzip(1) refuses a link without -f): /dev/stdin < file wrote /dev/stdin.gz.
    struct statfs fs{};
    const bool pseudo = regular_in && ::statfs(a.in.c_str(), &fs) == 0 &&
                        (fs.f_type == PROC_SUPER_MAGIC || fs.f_type == SYSFS_MAGIC || fs.f_type == CGROUP_SUPER_MAGIC ||
                         fs.f_type == CGROUP2_SUPER_MAGIC || fs.f_type == DEBUGFS_MAGIC ||
                         fs.f_type == SECURITYFS_MAGIC || fs.f_type == TRACEFS_MAGIC || fs.f_type == BPF_FS_MAGIC);
    if (a.in != "-" && (!regular_in || pseudo)) {
      throw usage_error(prog + ": " + a.in + " is not a regular file, so no output name comes from it; give OUT (- for stdout)");
    }
    struct stat link{};
    if (a.in != "-" && ::lstat(a.in.c_str(), &link) == 0 && S_ISLNK(link.st_mode)) {
      throw usage_error(prog + ": " + a.in + " is a symbolic link, so no output name comes from it; give OUT (- for stdout)");
    }
    a.out = default_output(a, prog);
  }

  // Reads in blocks (P.split passes a chunk of exactly one block on without a copy), but
  // never in chunks under kChunk: a buffer's storage is at least 256 bytes while the read
  // budget counts the bytes it holds, so --block 1 read a byte per system call and held
  // a million one-byte chunks in the 1 MiB budget (430 MB resident for a 5 MB file).
  const std::size_t chunk = compress ? std::max(static_cast<std::size_t>(a.block), io::kChunk) : io::kChunk;
  std::atomic<std::uint64_t> in_bytes{0};
  std::atomic<std::uint64_t> out_bytes{0};
  wo.progress = &out_bytes;
  wo.replace = a.force;

  // The output: stdout, a character device or FIFO written in place, or a regular file
  // written through write_file's temporary and renamed at the end. lstat: OUT itself,
  // not what a symlink there points to.
  int out_fd = -1;
  bool to_file = false;
  // /dev/stdout, /dev/fd/N (or a link to one) is that descriptor, written as it is, as a
  // shell redirection would: never reopened (a closed stdout would reopen guard_stdio's
  // /dev/null and lose everything) and never replaced (as root, --force would have renamed
  // a regular file over the system's /dev/stdout link).
  const std::optional<int> own_out = a.out == "-" ? std::optional<int>() : own_fd_named_by(a.out);
  if (own_out && *own_out == STDOUT_FILENO) a.out = "-";
  if (own_out && *own_out != STDOUT_FILENO) {
    if (*own_out <= 2 && stdio_closed()[*own_out]) {
      return fail(a.out + ": Bad file descriptor (it names a standard stream that is closed)");
    }
    out_fd = ::fcntl(*own_out, F_DUPFD_CLOEXEC, STDERR_FILENO + 1);  // closed by `closer` below
    if (out_fd < 0) return fail("cannot write " + a.out + ": " + std::strerror(errno));
  } else if (a.out == "-") {
    if (stdio_closed()[1]) return fail("stdout: Bad file descriptor (standard output is closed)");
    out_fd = STDOUT_FILENO;
  } else if (struct stat ls{}; ::lstat(a.out.c_str(), &ls) == 0) {
    struct stat target{};
    const bool link = S_ISLNK(ls.st_mode);
    const bool resolves = !link || ::stat(a.out.c_str(), &target) == 0;
    const mode_t m = link ? (resolves ? target.st_mode : 0) : ls.st_mode;
    if (resolves && S_ISDIR(m)) return fail(a.out + " is a directory");
    // OUT is IN (the same path, or IN a symlink to it, or a hard link): replacing it
    // would swap the input for its own output, --force or not (as cp refuses).
    if (a.in != "-" && ls.st_dev == st.st_dev && ls.st_ino == st.st_ino) {
      return fail(a.out + " is the input " + a.in + " (write the output elsewhere)");
    }
    if (resolves && (S_ISCHR(m) || S_ISFIFO(m) || S_ISBLK(m) || S_ISSOCK(m))) {
      if (S_ISBLK(m) && !a.force) return fail(a.out + " is a block device (use --force to write to it)");
      // A socket file cannot be opened (ENXIO, "No such device or address", said nothing
      // of what it is), and it is not replaced either.
      if (S_ISSOCK(m)) return fail(a.out + " is a socket, not a file; it is not replaced");
      out_fd = ::open(a.out.c_str(), O_WRONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
      if (out_fd < 0 && errno == ENXIO && S_ISFIFO(m)) {
        // A FIFO nobody reads yet: wait for its reader, as cat or gzip do. Nothing exists
        // to clean up, and the stop signals still have their usual effect here (they are
        // blocked only once the run starts), so ^C ends the wait.
        std::fprintf(stderr, "%s: waiting for a reader of %s\n", prog.c_str(), detail::one_line(a.out).c_str());
        do {
          out_fd = ::open(a.out.c_str(), O_WRONLY | O_NOCTTY | O_CLOEXEC);
        } while (out_fd < 0 && errno == EINTR);
      }
      if (out_fd < 0) return fail("cannot open " + a.out + ": " + std::strerror(errno));
    } else {
      // A regular file, or a symlink to one (or dangling): replaced only with --force,
      // and then the link itself is replaced, never followed.
      if (!a.force) return fail(a.out + " already exists (use --force to overwrite)");
      to_file = true;
    }
  } else {
    to_file = true;
  }
  struct closer {
    int fd;
    ~closer() {
      if (fd > STDERR_FILENO) ::close(fd);
    }
  } close_out{out_fd};
  // Any terminal, however named (/dev/tty, /dev/stderr, /dev/pts/N, /dev/fd/2), as stdout.
  if (compress && !a.force && out_fd >= 0 && ::isatty(out_fd) != 0) {
    const std::string where = a.out == "-" ? "stdout" : a.out;
    return fail("compressed data not written to a terminal (" + where + " is one; use --force, or redirect)");
  }
  // A descriptor written in place (stdout, /dev/fd/N) that is the input's own regular file
  // (`sluice gzip x - 1<>x`) would overwrite the input while it is read, as cat refuses.
  if (out_fd >= 0) {
    struct stat in_st{};
    struct stat out_st{};
    const bool have_in = a.in == "-" ? ::fstat(STDIN_FILENO, &in_st) == 0 : ::stat(a.in.c_str(), &in_st) == 0;
    if (have_in && ::fstat(out_fd, &out_st) == 0 && S_ISREG(out_st.st_mode) && S_ISREG(in_st.st_mode) &&
        in_st.st_dev == out_st.st_dev && in_st.st_ino == out_st.st_ino) {
      const std::string where = a.out == "-" ? "stdout" : a.out;
      return fail(where + " is the input " + input + " (write the output elsewhere)");
    }
  }

  const io::read_options ro{.chunk = chunk, .progress = &in_bytes};
  auto with_sink = [&](auto src, auto codec) -> int {
    if (to_file) {
      auto sink = io::write_file(a.out, wo);
      const io::file_writer writer = sink.fn;  // a copy: it shares the commit's state
      return run(prog, input, std::move(src), std::move(codec), std::move(sink), in_bytes, out_bytes, total,
                 "no output kept", -1, [writer] { return writer.committed(); });
    }
    // Written in place: what was written stays there.
    const std::string where = a.out == "-" ? "stdout" : a.out;
    io::write_options fo{.fsync = false, .progress = &out_bytes};
    return run(prog, input, std::move(src), std::move(codec), io::write_fd(out_fd, fo, {}, where), in_bytes,
               out_bytes, total, "the output on " + detail::one_line(where) + " is incomplete", out_fd);
  };
  auto with_source = [&](auto codec) -> int {
    // A deeper read-ahead than the 64 KiB default: the reader then refills several chunks
    // per wake-up, so the compressing threads never wait on a reader that the scheduler
    // is slow to wake (at 128 KiB blocks, 64 KiB left the two cores of the benchmark
    // machine 25% idle; 256 KiB was enough, 1 MiB leaves room for a loaded machine).
    const stage_options read_stage{.capacity = kReadBudget};
    if (a.in == "-") return with_sink(io::read_fd(STDIN_FILENO, ro, read_stage, "stdin"), std::move(codec));
    return with_sink(io::read_file(a.in, ro, read_stage), std::move(codec));
  };
  try {
    if (compress) {
      const int status = with_source(io::parallel_gzip({.level = static_cast<int>(a.level),
                                                        .jobs = static_cast<std::size_t>(a.jobs),
                                                        .block = static_cast<std::size_t>(a.block)}));
      if (status != 0) return status;
      // As gzip(1): a regular file that grew while it was read (or a /proc file, of size
      // 0) is compressed as read and kept, with a warning; exit 2, as any warning. (One that
      // shrank failed the reader: what was read is not the file, and nothing is kept.)
      // relaxed: the reader's thread was joined before run() returned.
      if (regular_in && in_bytes.load(std::memory_order_relaxed) != total) {
        std::fprintf(stderr, "%s: %s: file size changed while zipping\n", prog.c_str(), detail::one_line(input).c_str());
        return 2;
      }
      return 0;
    }
    // As gzip -d: trailing garbage is a warning (exit 2) after the complete output. A
    // writer that cannot take back what it wrote (stdout, a FIFO) gets everything decoded
    // before an error, then the error; a file is not kept at all.
    auto report = std::make_shared<io::gunzip_report>();
    const int status = with_source(
        io::gunzip({.ignore_trailing_garbage = true, .defer_errors = !to_file, .report = report}));
    if (status != 0) return status;
    if (report->error) return fail(message_of(report->error, input, "gunzip"));
    if (report->trailing_garbage_at) {
      std::fprintf(stderr, "%s: %s: decompression OK, trailing garbage ignored (from byte offset %llu)\n",
                   prog.c_str(), detail::one_line(input).c_str(), static_cast<unsigned long long>(*report->trailing_garbage_at));
      return 2;
    }
    return 0;
  } catch (const failure& e) {
    return fail(e.what());
  }
}

}  // namespace

int cmd_gzip(int argc, char** argv) { return run_codec(true, argc, argv); }
int cmd_gunzip(int argc, char** argv) { return run_codec(false, argc, argv); }

}  // namespace sluice::tool
