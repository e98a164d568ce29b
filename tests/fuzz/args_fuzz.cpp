// tests/fuzz/args_fuzz.cpp — the `sluice` tool's argument parser (tools/common/args.hpp),
// parse only: no command runs.
//
// Input: the argument list, NUL-separated (at most 64 arguments); argv[0] is the
// subcommand. The parser has one option of every kind the tool uses, two positionals
// (one required) and "--" handling.
//
// Properties:
//   - parse() returns (true, or false after --help) or throws usage_error, whose what()
//     is one non-empty line starting with the program name; nothing else escapes.
//   - The same argument list parsed twice gives the same result (no hidden state).
//   - On success every positional holds one of the
//     arguments, and each value option holds what its last occurrence said.
//   - The value parsers agree with plain integer arithmetic: a string of digits is
//     that number as a size, a count and (with "ms") a duration; "/s" changes nothing
//     for a rate; a size with a binary unit is the number times 1024^k.
#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/args.hpp"
#include "fuzz_support.hpp"

namespace {

namespace tool = sluice::tool;
using sluice::fuzz::printable;

struct result {
  int status = 0;  // 1 parsed, 0 --help, -1 usage_error
  std::string error;
  bool flag = false;
  std::uint64_t size = 7, rate = 9, count = 11;
  std::chrono::nanoseconds duration{13};
  std::string text = "t", custom = "c", in, out;
};

result parse(std::vector<std::string>& args) {
  result r;
  tool::arg_parser p("sluice fuzz", "fuzzing the parser");
  p.flag("--flag", &r.flag, "a flag");
  p.size("--size", &r.size, "a size");
  p.rate("--rate", &r.rate, "a rate");
  p.count("--count", &r.count, "a count");
  p.duration("--duration", &r.duration, "a duration");
  p.text("--text", &r.text, "TEXT", "some text");
  p.custom("--custom", "ENGINE", "one of sluice|tbb", "sluice",
           [&r](std::string_view v) {
             if (v != "sluice" && v != "tbb") return false;
             r.custom = std::string(v);
             return true;
           },
           "sluice or tbb");
  p.positional("IN", &r.in, "input");
  p.positional("OUT", &r.out, "output", false);
  p.epilog("an epilog");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  try {
    r.status = p.parse(static_cast<int>(args.size()), argv.data()) ? 1 : 0;
  } catch (const tool::usage_error& e) {
    r.status = -1;
    r.error = e.what();
  }
  const std::string h = p.help();
  for (const char* name : {"--flag", "--size", "--rate", "--count", "--duration", "--text", "--custom", "--help", "IN", "OUT"}) {
    SLUICE_FUZZ_CHECK(h.find(name) != std::string::npos, std::string("help lacks ") + name);
  }
  return r;
}

std::optional<std::uint64_t> digits(std::string_view s) {
  if (s.empty() || s.size() > 19) return std::nullopt;  // up to 2^63 (checked below)
  std::uint64_t v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || v > (std::uint64_t{1} << 63)) return std::nullopt;
  return v;
}

void check_value_parsers(const std::string& s) {
  if (const auto n = digits(s)) {
    SLUICE_FUZZ_CHECK(tool::parse_size(s) == *n, "size of " + s);
    SLUICE_FUZZ_CHECK(tool::parse_count(s) == *n, "count of " + s);
    SLUICE_FUZZ_CHECK(tool::parse_rate(s + "/s") == *n, "rate of " + s + "/s");
    if (*n < (std::uint64_t{1} << 32)) {
      const auto d = tool::parse_duration(s + "ms");
      SLUICE_FUZZ_CHECK(d && d->count() == static_cast<std::int64_t>(*n) * 1'000'000, "duration of " + s + "ms");
      SLUICE_FUZZ_CHECK(tool::parse_size(s + "KiB") == *n * 1024, "size of " + s + "KiB");
      SLUICE_FUZZ_CHECK(tool::parse_count(s + "k") == *n * 1000, "count of " + s + "k");
    }
  }
  const auto sz = tool::parse_size(s);
  if (sz) SLUICE_FUZZ_CHECK(*sz <= (std::uint64_t{1} << 63), "size over 2^63: " + printable(s));
  SLUICE_FUZZ_CHECK(tool::parse_rate(s + "/s") == sz || s.size() < 1, "rate and size disagree: " + printable(s));
  const auto c = tool::parse_count(s);
  if (c) SLUICE_FUZZ_CHECK(*c <= (std::uint64_t{1} << 63), "count over 2^63: " + printable(s));
  const auto d = tool::parse_duration(s);
  if (d) SLUICE_FUZZ_CHECK(d->count() >= 0, "negative duration: " + printable(s));
  (void)tool::format_size(static_cast<double>(sz.value_or(0)));
  (void)tool::format_duration(d.value_or(std::chrono::nanoseconds(0)));
}

// The value the last `--name V` / `--name=V` before "--" gave, as the parser reads it.
std::optional<std::string> last_value(const std::vector<std::string>& a, std::string_view name) {
  std::optional<std::string> v;
  for (std::size_t i = 1; i < a.size(); ++i) {
    const std::string_view s = a[i];
    if (s == "--") break;
    if (s == name && i + 1 < a.size()) {
      v = a[++i];
    } else if (s.size() > name.size() && s.substr(0, name.size()) == name && s[name.size()] == '=') {
      v = std::string(s.substr(name.size() + 1));
    } else if (s.size() > 1 && s[0] == '-' && !(s[1] >= '0' && s[1] <= '9') && s.find('=') == std::string_view::npos &&
               s != "--flag" && i + 1 < a.size()) {
      ++i;  // another option's separate value
    }
  }
  return v;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::vector<std::string> args{"fuzz"};
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  std::size_t start = 0;
  while (start <= text.size() && args.size() <= 64) {
    const std::size_t z = text.find('\0', start);
    args.emplace_back(text.substr(start, z == std::string_view::npos ? std::string_view::npos : z - start));
    if (z == std::string_view::npos) break;
    start = z + 1;
  }
  if (size == 0) args.pop_back();  // no arguments at all

  for (const auto& a : args) check_value_parsers(a);

  std::vector<std::string> copy = args;
  const result r = parse(args);
  SLUICE_FUZZ_CHECK(args == copy, "parse() changed its arguments");
  const result again = parse(copy);
  SLUICE_FUZZ_CHECK(r.status == again.status && r.error == again.error && r.in == again.in && r.out == again.out,
                    "two parses of the same arguments differ");

  if (r.status == -1) {
    SLUICE_FUZZ_CHECK(!r.error.empty() && r.error.find('\n') == std::string::npos,
                      "usage_error is one line: " + printable(r.error, 200));
    SLUICE_FUZZ_CHECK(r.error.rfind("sluice fuzz: ", 0) == 0, "usage_error names the program: " + printable(r.error));
    return 0;
  }
  if (r.status == 0) return 0;  // --help

  auto is_arg = [&](const std::string& v) { return std::find(args.begin() + 1, args.end(), v) != args.end(); };
  SLUICE_FUZZ_CHECK(is_arg(r.in), "IN is not one of the arguments: " + printable(r.in));
  SLUICE_FUZZ_CHECK(r.out.empty() || is_arg(r.out), "OUT is not one of the arguments: " + printable(r.out));
  if (const auto v = last_value(args, "--text")) SLUICE_FUZZ_CHECK(r.text == *v, "--text " + printable(r.text));
  if (const auto v = last_value(args, "--size")) SLUICE_FUZZ_CHECK(tool::parse_size(*v) == r.size, "--size " + printable(*v));
  if (const auto v = last_value(args, "--count")) SLUICE_FUZZ_CHECK(tool::parse_count(*v) == r.count, "--count " + printable(*v));
  if (const auto v = last_value(args, "--rate")) SLUICE_FUZZ_CHECK(tool::parse_rate(*v) == r.rate, "--rate " + printable(*v));
  if (const auto v = last_value(args, "--duration")) {
    SLUICE_FUZZ_CHECK(tool::parse_duration(*v) == r.duration, "--duration " + printable(*v));
  }
  if (const auto v = last_value(args, "--custom")) SLUICE_FUZZ_CHECK(r.custom == *v, "--custom " + printable(*v));
  return 0;
}
