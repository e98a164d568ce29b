// tools/main.cpp — `sluice SUBCOMMAND [options]`: dispatch, global --help, and the
// one-line error / exit status 2 for a bad command line.
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>
#include <new>
#include <string_view>

#include "common/args.hpp"
#include "common/sys.hpp"
#include "commands.hpp"

namespace {

struct command {
  const char* name;
  int (*run)(int, char**);
  const char* summary;
};

constexpr command kCommands[] = {
    {"demo", sluice::tool::cmd_demo, "the backpressure lesson, measured: unbounded queue vs sluice"},
    {"bench", sluice::tool::cmd_bench, "throughput and latency of synthetic stage graphs"},
    {"stress", sluice::tool::cmd_stress, "random graphs with slow stages and failures, seeded"},
    {"gzip", sluice::tool::cmd_gzip, "compress a file (or stdin) on several threads, bounded memory"},
    {"gunzip", sluice::tool::cmd_gunzip, "decompress a gzip file (or stdin), concatenated members too"},
};

void usage(std::FILE* f) {
  std::fputs(
      "usage: sluice <command> [options]\n"
      "\n"
      "sluice runs stage graphs on threads, joined by bounded channels: a full channel\n"
      "blocks its producer, so memory stays bounded however fast the source is.\n"
      "\n"
      "commands:\n",
      f);
  for (const command& c : kCommands) std::fprintf(f, "  %-8s %s\n", c.name, c.summary);
  std::fputs("\nRun 'sluice <command> --help' for a command's options.\n", f);
}

// What a command printed to stdout must all have arrived: a result written to a full disk
// or a closed pipe (with SIGPIPE ignored) is an error, never a silent exit 0. Returns the
// command's status, or 1 after a one-line error when stdout could not be written.
int check_stdout(const char* name, int status) {
  errno = 0;
  const bool failed = std::fflush(stdout) != 0 || std::ferror(stdout) != 0;
  if (!failed) return status;
  const int err = errno;
  std::fprintf(stderr, "sluice %s: error: cannot write to standard output%s%s\n", name, err != 0 ? ": " : "",
               err != 0 ? std::strerror(err) : "");
  return status != 0 ? status : 1;
}

}  // namespace

int main(int argc, char** argv) {
  sluice::tool::guard_stdio();  // first: nothing may open a descriptor onto a closed 0, 1 or 2
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  std::string_view sub = argv[1];
  const bool asks_help = sub == "--help" || sub == "-h" || sub == "help";
  // "sluice help gzip" is "sluice gzip --help" (it printed the general help, exit 0, and
  // "sluice help bogus" did too).
  char help_flag[] = "--help";
  char* help_argv[] = {nullptr, nullptr, help_flag, nullptr};
  if (asks_help && argc == 3) {
    help_argv[1] = argv[2];
    argc = 3;
    argv = help_argv;
    sub = argv[1];
  } else if (asks_help) {
    if (argc > 3) {
      std::fprintf(stderr, "sluice %s: takes at most one command name (got %d words)\n", argv[1], argc - 2);
      return 2;
    }
    usage(stdout);
    return check_stdout(argv[1], 0);
  }
  for (const command& c : kCommands) {
    if (sub != c.name) continue;
    try {
      return check_stdout(c.name, c.run(argc - 1, argv + 1));
    } catch (const sluice::tool::usage_error& e) {
      // Already "sluice <command>: ...", one line: a control byte in it (from an argument)
      // is shown as \xNN.
      std::fprintf(stderr, "%s\n", sluice::tool::detail::one_line(e.what()).c_str());
      return 2;
    } catch (const std::bad_alloc&) {
      std::fprintf(stderr, "sluice %s: error: out of memory (std::bad_alloc)\n", c.name);
      return 1;
    } catch (const std::exception& e) {
      // One line too: a control byte from an argument (--serve's host) reached the terminal
      // raw, a newline split the message, an escape sequence coloured it (found by a probe).
      std::fprintf(stderr, "sluice %s: error: %s\n", c.name, sluice::tool::detail::one_line(e.what()).c_str());
      return 1;
    }
  }
  std::string names;
  for (const command& c : kCommands) names += std::string(names.empty() ? "" : ", ") + c.name;
  std::fprintf(stderr, "sluice: unknown command '%s' (commands: %s; see sluice --help)\n",
               sluice::tool::detail::one_line(argv[1]).c_str(), names.c_str());
  return 2;
}
