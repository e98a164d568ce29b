// tools/common/args.hpp — the `sluice` tool's small argument parser.
//
//   sluice::tool::arg_parser p("sluice demo", "The backpressure lesson, measured.");
//   std::uint64_t bytes = 512ULL << 20;
//   p.size("--bytes", &bytes, "bytes the source generates");
//   std::string report;
//   p.text("--report", &report, "FILE.html", "write an HTML report");
//   if (!p.parse(argc, argv)) return 0;   // --help was printed
//
// Accepts `--flag value`, `--flag=value`, flags without a value, and positional arguments
// in order (never empty). Sizes: 512MiB, 1.5GiB, 64KiB, 4096, 10MB (KiB/MiB/GiB/TiB, K/M/G/T:
// powers of 1024; KB/MB/GB/TB: of 1000). Durations: 10ms, 2s, 500us, 1.5m, 250ns, 1h.
// Counts: 1000, 10k, 2M (decimal). Rates: a size, optionally followed by "/s" (100MiB/s).
// Each option at most once. Errors (unknown flag, missing or malformed value, a value out
// of range, an option given twice) throw
// usage_error with one line of text; main() prints it and exits with status 2.
#pragma once

// The runtime's private text helpers: the tool is built with the runtime, in this tree.
#include "../../runtime/text.hpp"

#include <cctype>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sluice::tool {

// A bad command line: one line "sluice <command>: <what>", printed by main() as is, exit status 2.
struct usage_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

namespace detail {

inline std::optional<double> parse_number_prefix(std::string_view s, std::size_t& used) {
  std::string tmp(s);
  const char* begin = tmp.c_str();
  char* end = nullptr;
  if (tmp.empty() || !(std::isdigit(static_cast<unsigned char>(tmp[0])) || tmp[0] == '.')) return std::nullopt;
  const double v = std::strtod(begin, &end);
  if (end == begin || !std::isfinite(v)) return std::nullopt;
  // strtod also reads hex and exponents; accept only plain decimal numbers.
  for (const char* p = begin; p != end; ++p) {
    if (!std::isdigit(static_cast<unsigned char>(*p)) && *p != '.') return std::nullopt;
  }
  used = static_cast<std::size_t>(end - begin);
  return v;
}

// An integer with no fraction ("123" of "123k") times an integer multiplier, exactly:
// a double holds integers exactly only up to 2^53, so 9007199254740993 must not go
// through one. nullopt when `digits` is not all digits or the product does not fit an
// int64 (callers turn sizes into signed offsets and durations).
inline std::optional<std::uint64_t> exact_product(std::string_view digits, std::uint64_t mult) {
  std::uint64_t v = 0;
  if (digits.empty()) return std::nullopt;
  const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), v);
  if (ec != std::errc() || end != digits.data() + digits.size()) return std::nullopt;
  constexpr std::uint64_t kMax = (std::uint64_t{1} << 63) - 1;
  if (mult != 0 && v > kMax / mult) return std::nullopt;
  return v * mult;
}

// A user's argument as shown in a one-line error: one_line() writes control bytes (a
// newline, an escape sequence) as \xNN, so the message stays one line (found by
// tests/fuzz/args_fuzz.cpp). The runtime names stages in its messages the same way.
using sluice::detail::equal_ignoring_case;
using sluice::detail::one_line;

}  // namespace detail

// "512MiB" -> 536870912. nullopt when malformed or at 2^63 or above.
inline std::optional<std::uint64_t> parse_size(std::string_view s) {
  std::size_t used = 0;
  const auto v = detail::parse_number_prefix(s, used);
  if (!v) return std::nullopt;
  const std::string_view unit = s.substr(used);
  double mult = 0;
  struct u {
    const char* name;
    double mult;
  };
  static constexpr u kUnits[] = {
      {"", 1},          {"b", 1},          {"k", 1024.0},        {"kib", 1024.0},       {"kb", 1e3},
      {"m", 1048576.0}, {"mib", 1048576.0}, {"mb", 1e6},          {"g", 1073741824.0},  {"gib", 1073741824.0},
      {"gb", 1e9},      {"t", 1099511627776.0}, {"tib", 1099511627776.0}, {"tb", 1e12},
  };
  for (const u& x : kUnits) {
    if (detail::equal_ignoring_case(unit, x.name)) mult = x.mult;
  }
  // "MB" vs "Mb": we do not do bits; "mb" compares equal case-insensitively on purpose.
  if (mult == 0) return std::nullopt;
  if (s.substr(0, used).find('.') == std::string_view::npos) {  // a whole number: exact
    return detail::exact_product(s.substr(0, used), static_cast<std::uint64_t>(mult));
  }
  const double bytes = *v * mult;
  if (bytes > 9.2e18) return std::nullopt;
  // A fraction of a byte is not a size: "1.5" ran with 2 B items and "0.4" with none.
  // (A fraction of a larger unit, "1.1MiB", is rounded to the byte.)
  if ((mult == 1 && bytes != std::floor(bytes)) || (bytes > 0 && std::llround(bytes) == 0)) return std::nullopt;
  return static_cast<std::uint64_t>(std::llround(bytes));
}

namespace detail {

// Why parse_duration refused a value: not a duration at all, or a duration out of range.
enum class duration_fault { none, form, too_long, too_short };

inline duration_fault parse_duration_into(std::string_view s, std::chrono::nanoseconds& out) {
  std::size_t used = 0;
  const auto v = parse_number_prefix(s, used);
  if (!v) return duration_fault::form;
  const std::string_view unit = s.substr(used);
  double ns_per = 0;
  if (unit.empty() && *v == 0) ns_per = 1;
  if (unit == "ns") ns_per = 1;
  if (unit == "us" || unit == "\xC2\xB5s") ns_per = 1e3;
  if (unit == "ms") ns_per = 1e6;
  if (unit == "s") ns_per = 1e9;
  if (unit == "m" || unit == "min") ns_per = 60e9;
  if (unit == "h") ns_per = 3600e9;
  if (ns_per == 0) return duration_fault::form;
  const double ns = *v * ns_per;
  if (ns > 9.2e18) return duration_fault::too_long;
  // Not zero, but under half a nanosecond: it would round to 0, which options read as
  // "none" or "no limit" (--duration 0.1ns ran without a time limit).
  if (ns > 0 && ns < 0.5) return duration_fault::too_short;
  out = std::chrono::nanoseconds(static_cast<std::int64_t>(std::llround(ns)));
  return duration_fault::none;
}

}  // namespace detail

// "10ms" -> 10'000'000 ns. A unit is required except for "0". At most 9.2e18 ns (about
// 290 years: a signed 64-bit count of nanoseconds); a value that is not 0 rounds to 1ns
// or more.
inline std::optional<std::chrono::nanoseconds> parse_duration(std::string_view s) {
  std::chrono::nanoseconds d{0};
  if (detail::parse_duration_into(s, d) != detail::duration_fault::none) return std::nullopt;
  return d;
}

namespace detail {

// A count's decimal suffix: "" 1, k/K 1e3, m/M 1e6, g/G 1e9; 0 for anything else.
inline double decimal_multiplier(std::string_view unit) {
  if (unit.empty()) return 1;
  if (unit == "k" || unit == "K") return 1e3;
  if (unit == "m" || unit == "M") return 1e6;
  if (unit == "g" || unit == "G") return 1e9;
  return 0;
}

// A number with a decimal suffix ("2.5k" -> 2500); nullopt when malformed.
inline std::optional<double> parse_decimal(std::string_view s) {
  std::size_t used = 0;
  const auto v = parse_number_prefix(s, used);
  if (!v) return std::nullopt;
  const double mult = decimal_multiplier(s.substr(used));
  if (mult == 0) return std::nullopt;
  return *v * mult;
}

}  // namespace detail

// "10k" -> 10000; plain integers, or k/M/G decimal suffixes (lower or upper case).
inline std::optional<std::uint64_t> parse_count(std::string_view s) {
  std::size_t used = 0;
  if (!detail::parse_number_prefix(s, used)) return std::nullopt;
  if (s.substr(0, used).find('.') == std::string_view::npos) {  // a whole number: exact
    const double mult = detail::decimal_multiplier(s.substr(used));
    if (mult == 0) return std::nullopt;
    return detail::exact_product(s.substr(0, used), static_cast<std::uint64_t>(mult));
  }
  const auto n = detail::parse_decimal(s);
  if (!n || *n > 9.2e18 || *n != std::floor(*n)) return std::nullopt;
  return static_cast<std::uint64_t>(*n);
}

// "1000", "50k", "2.5M", "10k/s" -> items per second; above 0, at most 10^12.
inline std::optional<double> parse_count_rate(std::string_view s) {
  if (s.ends_with("/s")) s.remove_suffix(2);
  const auto r = detail::parse_decimal(s);
  if (!r || !(*r > 0) || *r > 1e12) return std::nullopt;
  return r;
}

// "100MiB/s" -> bytes per second.
inline std::optional<std::uint64_t> parse_rate(std::string_view s) {
  if (s.size() > 2 && s.substr(s.size() - 2) == "/s") s.remove_suffix(2);
  return parse_size(s);
}

// Human-readable forms, the inverse of the parsers (for help text and tables).
inline std::string format_size(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  double v = bytes;
  while (std::fabs(v) >= 1024.0 && u < 4) {
    v /= 1024.0;
    ++u;
  }
  char buf[32];
  if (u == 0) {
    std::snprintf(buf, sizeof buf, "%.0f %s", v, units[u]);
  } else {
    std::snprintf(buf, sizeof buf, "%.1f %s", v, units[u]);
  }
  return buf;
}

inline std::string format_duration(std::chrono::nanoseconds d) {
  const double ns = static_cast<double>(d.count());
  char buf[32];
  if (ns < 1e3) {
    std::snprintf(buf, sizeof buf, "%.0f ns", ns);
  } else if (ns < 1e6) {
    std::snprintf(buf, sizeof buf, "%.1f us", ns / 1e3);
  } else if (ns < 1e9) {
    std::snprintf(buf, sizeof buf, "%.1f ms", ns / 1e6);
  } else {
    std::snprintf(buf, sizeof buf, "%.2f s", ns / 1e9);
  }
  return buf;
}

// What a count option takes when that is narrower than any count: from `min` to `max`,
// said as `text` ("a level from 0 to 9"). A value outside it, no count at all, or past
// 9.2e18 is refused with `text` (not with "a whole number up to 9.2e18").
struct count_range {
  std::uint64_t min = 0;
  std::uint64_t max = std::numeric_limits<std::uint64_t>::max();
  std::string text;
};

class arg_parser {
 public:
  arg_parser(std::string prog, std::string summary) : prog_(std::move(prog)), summary_(std::move(summary)) {}

  // A boolean flag (no value): --json.
  void flag(std::string name, bool* out, std::string help) {
    opts_.push_back({std::move(name), "", std::move(help), "", [out](std::string_view) { *out = true; }, true});
  }
  // `range`: see count_range (in bytes); a value past it, or past any size, says the range.
  void size(std::string name, std::uint64_t* out, std::string help, count_range range = {}) {
    add(name, "SIZE", std::move(help), format_size(static_cast<double>(*out)),
        [this, out, n = name, range = std::move(range)](std::string_view v) {
          const auto r = parse_size(v);
          if (!range.text.empty() && (!r || *r < range.min || *r > range.max)) bad(n, v, range.text);
          if (!r) {
            bad(n, v, whole_but_too_large(v) ? "a size up to 9.2e18 bytes (this one is too large)"
                                             : "a size like 512MiB, 64KiB or 4096");
          }
          *out = *r;
        });
  }
  void rate(std::string name, std::uint64_t* out, std::string help) {
    add(name, "RATE", std::move(help), format_size(static_cast<double>(*out)) + "/s",
        [this, out, n = name](std::string_view v) {
          const auto r = parse_rate(v);
          if (!r || *r == 0) bad(n, v, "a positive rate like 100MiB/s");
          *out = *r;
        });
  }
  void duration(std::string name, std::chrono::nanoseconds* out, std::string help) {
    add(name, "DURATION", std::move(help), format_duration(*out),
        [this, out, n = name](std::string_view v) {
          switch (detail::parse_duration_into(v, *out)) {
            case detail::duration_fault::none:
              return;
            case detail::duration_fault::too_long:
              bad(n, v, "a duration of at most 9.2e9s (about 290 years)");
            case detail::duration_fault::too_short:
              bad(n, v, "0, or a duration of at least 1ns");
            case detail::duration_fault::form:
              break;
          }
          bad(n, v, "a duration like 10ms, 2s or 500us");
        });
  }
  // What a count wants, said of a value parse_count refused: one too large is told so.
  [[nodiscard]] static std::string count_expected(std::string_view v) {
    return whole_but_too_large(v) ? "a whole number up to 9.2e18 (this one is too large)"
                                  : "a whole number like 1000 or 10k";
  }
  // A whole number (suffixes and exponents as parse_decimal takes them) past 9.2e18: a
  // count or size refused as too large, not as malformed.
  [[nodiscard]] static bool whole_but_too_large(std::string_view v) {
    const auto d = detail::parse_decimal(v);
    return d && *d > 9.2e18 && *d == std::floor(*d);
  }
  // `range`: see count_range.
  void count(std::string name, std::uint64_t* out, std::string help, count_range range = {}) {
    add(name, "N", std::move(help), std::to_string(*out),
        [this, out, n = name, range = std::move(range)](std::string_view v) {
          const auto r = parse_count(v);
          if (!range.text.empty() && (!r || *r < range.min || *r > range.max)) bad(n, v, range.text);
          if (!r) bad(n, v, count_expected(v));
          *out = *r;
        });
  }
  void text(std::string name, std::string* out, std::string metavar, std::string help) {
    add(name, std::move(metavar), std::move(help), *out, [this, out, n = name](std::string_view v) {
      if (v.empty()) bad(n, v, "a non-empty value");
      *out = std::string(v);
    });
  }
  // A value checked by `parse`, which returns false (or throws usage_error) to reject it.
  void custom(std::string name, std::string metavar, std::string help, std::string shown_default,
              std::function<bool(std::string_view)> parse, std::string expected) {
    add(name, std::move(metavar), std::move(help), std::move(shown_default),
        [this, parse = std::move(parse), expected = std::move(expected), n = name](std::string_view v) {
          if (!parse(v)) bad(n, v, expected);
        });
  }
  // A positional argument; `required` ones must be present.
  void positional(std::string name, std::string* out, std::string help, bool required = true) {
    pos_.push_back({std::move(name), out, std::move(help), required});
  }
  // Free-form text after the option list in --help.
  void epilog(std::string text) { epilog_ = std::move(text); }

  // Parses argv[1..argc) (argv[0] is the subcommand). Returns false when --help was
  // printed (the caller exits 0). Throws usage_error on a bad command line.
  bool parse(int argc, char** argv) {
    // --help anywhere (before "--") shows the help, whatever else the line holds: a
    // malformed value before it ("--bytes lots --help") was the error instead.
    for (int i = 1; i < argc; ++i) {
      const std::string_view a = argv[i];
      if (a == "--") break;
      if (a == "--help" || a == "-h") {
        std::fputs(help().c_str(), stdout);
        return false;
      }
    }
    std::size_t next_pos = 0;
    bool only_positional = false;
    for (int i = 1; i < argc; ++i) {
      std::string_view a = argv[i];
      if (!only_positional && a == "--") {
        only_positional = true;
        continue;
      }
      if (!only_positional && (a == "--help" || a == "-h")) {
        std::fputs(help().c_str(), stdout);
        return false;
      }
      if (!only_positional && a.size() > 1 && a[0] == '-' && !(a.size() > 1 && std::isdigit(static_cast<unsigned char>(a[1])))) {
        std::string_view name = a;
        std::optional<std::string_view> value;
        if (const auto eq = a.find('='); eq != std::string_view::npos) {
          name = a.substr(0, eq);
          value = a.substr(eq + 1);
        }
        // "--help=x": the help is there, only the value is wrong (it was "unknown option --help").
        if (name == "--help" && value) throw usage_error(prog_ + ": --help takes no value");
        const option* o = find(name);
        if (o == nullptr) throw usage_error(prog_ + ": unknown option " + detail::one_line(name) + " (see --help)");
        // Once each: "--capacity 4 ... --capacity 8" would otherwise keep one of the two
        // without a word, and a typo'd second value is easy to miss in a long command.
        if (!seen_.insert(std::string(name)).second) {
          throw usage_error(prog_ + ": " + std::string(name) + " is given more than once (give each option once)");
        }
        if (o->is_flag) {
          if (value) throw usage_error(prog_ + ": " + std::string(name) + " takes no value");
          o->set({});
          continue;
        }
        if (!value) {
          if (i + 1 >= argc) throw usage_error(prog_ + ": " + std::string(name) + " needs a value (" + o->metavar + ")");
          // "--report --json": the value forgotten, the next option taken as a file name
          // (a report named --json was written). A value so named is given with '='.
          const std::string_view next = argv[i + 1];
          if (next.starts_with("--") && find(next.substr(0, next.find('='))) != nullptr) {
            throw usage_error(prog_ + ": " + std::string(name) + " needs a value (" + o->metavar + "), not the option " +
                              detail::one_line(next) + " (a value that starts so is given as " + std::string(name) + "=" +
                              detail::one_line(next) + ")");
          }
          value = std::string_view(argv[++i]);
        }
        given_.insert_or_assign(std::string(name), std::string(*value));
        o->set(*value);
        continue;
      }
      if (next_pos >= pos_.size()) throw usage_error(prog_ + ": unexpected argument '" + detail::one_line(a) + "' (see --help)");
      // An empty argument ('' or "") names nothing; taken as given it would read as "not
      // given" (gzip IN "" wrote IN.gz).
      if (a.empty()) throw usage_error(prog_ + ": " + pos_[next_pos].name + " is empty (see --help)");
      *pos_[next_pos++].out = std::string(a);
    }
    for (std::size_t i = next_pos; i < pos_.size(); ++i) {
      if (pos_[i].required) throw usage_error(prog_ + ": missing argument " + pos_[i].name + " (see --help)");
    }
    return true;
  }

  [[nodiscard]] std::string help() const {
    std::string h = "usage: " + prog_ + " [options]";
    for (const auto& p : pos_) h += p.required ? " " + p.name : " [" + p.name + "]";
    h += "\n\n" + summary_ + "\n";
    if (!pos_.empty()) {
      h += "\narguments:\n";
      for (const auto& p : pos_) h += line(p.name, p.help, "");
    }
    h += "\noptions:\n";
    for (const auto& o : opts_) {
      h += line(o.is_flag ? o.name : o.name + " " + o.metavar, o.help, o.shown_default);
    }
    h += line("--help", "show this help and exit", "");
    if (!epilog_.empty()) h += "\n" + epilog_ + "\n";
    return h;
  }

  // Throws the standard one-line error for option `name`.
  [[noreturn]] void bad(const std::string& name, std::string_view value, const std::string& expected) const {
    throw usage_error(prog_ + ": bad value '" + detail::one_line(value) + "' for " + name + ": expected " + expected);
  }
  // Option `name`'s value as typed ("1k", not 1000), or nullopt.
  [[nodiscard]] std::optional<std::string> given(const std::string& name) const {
    const auto it = given_.find(name);
    if (it == given_.end()) return std::nullopt;
    return it->second;
  }
  // bad() for a value that parsed but fails a check made after parse() (out of range):
  // the error quotes what the user typed, not the parsed number ("--level 1k" said '1000').
  [[noreturn]] void reject(const std::string& name, const std::string& expected) const {
    const auto typed = given(name);
    const option* o = find(name);
    bad(name, typed ? *typed : o != nullptr ? o->shown_default : std::string(), expected);
  }

 private:
  struct option {
    std::string name;
    std::string metavar;
    std::string help;
    std::string shown_default;
    std::function<void(std::string_view)> set;
    bool is_flag = false;
  };
  struct positional_arg {
    std::string name;
    std::string* out;
    std::string help;
    bool required;
  };

  void add(std::string name, std::string metavar, std::string help, std::string shown_default,
           std::function<void(std::string_view)> set) {
    opts_.push_back({std::move(name), std::move(metavar), std::move(help), std::move(shown_default), std::move(set), false});
  }
  const option* find(std::string_view name) const {
    for (const auto& o : opts_)
      if (o.name == name) return &o;
    return nullptr;
  }
  static std::string line(const std::string& left, const std::string& help, const std::string& def) {
    std::string l = "  " + left;
    if (l.size() < 26) {
      l.append(26 - l.size(), ' ');
    } else {
      l += "\n" + std::string(26, ' ');
    }
    l += help;
    if (!def.empty()) l += " (default " + def + ")";
    return l + "\n";
  }

  std::string prog_;
  std::string summary_;
  std::string epilog_;
  std::vector<option> opts_;
  std::vector<positional_arg> pos_;
  std::map<std::string, std::string, std::less<>> given_;  // option name -> value as typed
  std::set<std::string, std::less<>> seen_;                // options given (flags too)
};

}  // namespace sluice::tool
