// Unit tests for sluice/metrics.hpp on hand-built snapshots: time shares, the
// bottleneck rule, the JSON and Prometheus exporters (both parsed back), and the
// periodic reporter.
#include "sluice/metrics.hpp"

#include <stdlib.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdlib>
#include <cstdio>
#include <clocale>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "support/mini_json.hpp"

namespace {

using sluice::metrics::channel_snapshot;
using sluice::metrics::find_bottleneck;
using sluice::metrics::snapshot;
using sluice::metrics::stage_snapshot;

constexpr std::uint64_t kSecond = 1'000'000'000ULL;

// "s<i>" (built with append: GCC 12's -Wrestrict misfires on sname(i)).
std::string sname(std::size_t i) {
  std::string n = "s";
  n.append(std::to_string(i));
  return n;
}

stage_snapshot stage(std::string name, double busy, double bp, double starved, std::uint64_t total = kSecond) {
  stage_snapshot st;
  st.name = std::move(name);
  st.busy_ns = static_cast<std::uint64_t>(busy * static_cast<double>(total));
  st.backpressured_ns = static_cast<std::uint64_t>(bp * static_cast<double>(total));
  st.starved_ns = static_cast<std::uint64_t>(starved * static_cast<double>(total));
  st.state = "running";
  return st;
}

channel_snapshot link(const std::string& from, const std::string& to) {
  channel_snapshot c;
  c.name = from + " -> " + to;
  c.from = from;
  c.to = to;
  c.stats.capacity = 64;
  return c;
}

// A 5-stage chain s0 -> s1 -> ... -> s4 whose stage `slow` does 10x the work: the
// stages before it are mostly backpressured, those after it mostly starved.
snapshot chain_with_bottleneck_at(std::size_t slow) {
  snapshot s;
  s.elapsed = std::chrono::seconds(1);
  for (std::size_t i = 0; i < 5; ++i) {
    const std::string name = sname(i);
    if (i < slow) {
      s.stages.push_back(stage(name, 0.10, 0.88, 0.02));
    } else if (i == slow) {
      s.stages.push_back(stage(name, 0.96, 0.02, 0.02));
    } else {
      s.stages.push_back(stage(name, 0.10, 0.01, 0.89));
    }
    if (i > 0) s.channels.push_back(link(sname(i - 1), name));
  }
  return s;
}

TEST(Metrics, SharesAddUpToOne) {
  const stage_snapshot st = stage("x", 0.5, 0.3, 0.2, 3 * kSecond);
  const auto sh = sluice::metrics::shares_of(st);
  EXPECT_NEAR(sh.busy + sh.backpressured + sh.starved, 1.0, 1e-12);
  EXPECT_NEAR(sh.busy, 0.5, 1e-9);
  EXPECT_NEAR(sh.backpressured, 0.3, 1e-9);
  EXPECT_NEAR(sh.starved, 0.2, 1e-9);

  const auto none = sluice::metrics::shares_of(stage_snapshot{});
  EXPECT_EQ(none.busy, 0.0);
  EXPECT_EQ(none.backpressured, 0.0);
  EXPECT_EQ(none.starved, 0.0);
}

// Counters whose sum passes 2^64 (a snapshot built or summed by a user): the sum wrapped,
// and the shares came out as 1.8e19 and 2, or all zero.
TEST(Metrics, SharesOfCountersWhoseSumPassesTwoToThe64AreStillFractions) {
  stage_snapshot st{};
  st.busy_ns = UINT64_MAX;
  st.backpressured_ns = 2;
  auto sh = sluice::metrics::shares_of(st);
  EXPECT_NEAR(sh.busy, 1.0, 1e-12);
  EXPECT_GE(sh.backpressured, 0.0);
  EXPECT_LT(sh.backpressured, 1e-12);
  st.busy_ns = st.backpressured_ns = std::uint64_t{1} << 63;
  sh = sluice::metrics::shares_of(st);
  EXPECT_NEAR(sh.busy, 0.5, 1e-12);
  EXPECT_NEAR(sh.backpressured, 0.5, 1e-12);
  EXPECT_EQ(sh.starved, 0.0);
}

// The same for the bottleneck rule: a stage whose counters add up to 2^64 exactly was
// taken for one with no time at all and skipped (a probe: "(none)").
TEST(Metrics, ABottleneckWhoseCountersSumPastTwoToThe64IsStillFound) {
  snapshot s = chain_with_bottleneck_at(2);
  stage_snapshot& slow = s.stages[2];
  slow.backpressured_ns = slow.starved_ns = std::uint64_t{1} << 60;
  slow.busy_ns = 0 - 2 * (std::uint64_t{1} << 60);  // 2^64 - 2^61: the three wrap to 0
  EXPECT_EQ(find_bottleneck(s), "s2");
}

TEST(Metrics, BottleneckFoundAtEveryPositionOfAFiveStageChain) {
  for (std::size_t slow = 0; slow < 5; ++slow) {
    const snapshot s = chain_with_bottleneck_at(slow);
    const auto b = find_bottleneck(s);
    ASSERT_TRUE(b.has_value()) << "slow stage at " << slow;
    EXPECT_EQ(*b, sname(slow));
  }
}

TEST(Metrics, BottleneckIgnoresChannelOrderAndUnknownStages) {
  snapshot s = chain_with_bottleneck_at(2);
  std::reverse(s.channels.begin(), s.channels.end());
  s.channels.push_back(link("outside", "s0"));  // a producer that is not a listed stage
  EXPECT_EQ(find_bottleneck(s), "s2");
}

TEST(Metrics, NoBottleneckWhenIdle) {
  snapshot s;
  EXPECT_EQ(find_bottleneck(s), std::nullopt);  // no stages at all

  for (std::size_t i = 0; i < 5; ++i) {
    stage_snapshot st;
    st.name = sname(i);
    s.stages.push_back(st);  // nothing accounted yet
    if (i > 0) s.channels.push_back(link(sname(i - 1), st.name));
  }
  EXPECT_EQ(find_bottleneck(s), std::nullopt);

  // Everyone waits (a source that reports its external wait as blocked): nobody is busy.
  for (auto& st : s.stages) st = stage(st.name, 0.02, 0.0, 0.98);
  EXPECT_EQ(find_bottleneck(s), std::nullopt);
}

TEST(Metrics, NoBottleneckWhenBalanced) {
  snapshot s;
  for (std::size_t i = 0; i < 5; ++i) {
    const std::string name = sname(i);
    s.stages.push_back(stage(name, 0.90, 0.05, 0.05));
    if (i > 0) s.channels.push_back(link(sname(i - 1), name));
  }
  EXPECT_EQ(find_bottleneck(s), std::nullopt);
}

TEST(Metrics, BusyStageWithoutWaitingNeighboursIsNotABottleneck) {
  // A lone busy stage with no neighbours, and a busy stage whose neighbours do not wait.
  snapshot s;
  s.stages.push_back(stage("alone", 1.0, 0.0, 0.0));
  EXPECT_EQ(find_bottleneck(s), std::nullopt);
}

TEST(Metrics, BottleneckInAFanOutUsesEveryNeighbour) {
  // src -> {a, b} -> sink; b is slow: src backpressured, sink half starved (it has a fast
  // input too), a starved. b's up = src backpressured, down = sink starved.
  snapshot s;
  s.stages.push_back(stage("src", 0.05, 0.93, 0.02));
  s.stages.push_back(stage("a", 0.10, 0.0, 0.90));
  s.stages.push_back(stage("b", 0.97, 0.02, 0.01));
  s.stages.push_back(stage("sink", 0.05, 0.0, 0.95));
  s.channels = {link("src", "a"), link("src", "b"), link("a", "sink"), link("b", "sink")};
  EXPECT_EQ(find_bottleneck(s), "b");
}

TEST(Metrics, ReplicatedStageSharesAreSummedOverReplicas) {
  snapshot s;
  s.stages.push_back(stage("src", 0.05, 0.95, 0.0));
  stage_snapshot farm = stage("farm", 0.9, 0.05, 0.05, 4 * kSecond);  // 4 replicas x 1 s
  farm.replicas = 4;
  s.stages.push_back(farm);
  s.stages.push_back(stage("sink", 0.05, 0.0, 0.95));
  s.channels = {link("src", "farm"), link("farm", "sink")};
  EXPECT_EQ(find_bottleneck(s), "farm");
}

TEST(Metrics, SlowSinkIsTheBottleneck) {
  // A sink held to a slow rate (sleeping counts as busy): everyone upstream waits on it.
  snapshot s;
  s.stages.push_back(stage("read", 0.02, 0.98, 0.0));
  s.stages.push_back(stage("parse", 0.05, 0.90, 0.05));
  s.stages.push_back(stage("send", 0.99, 0.0, 0.01));
  s.channels = {link("read", "parse"), link("parse", "send")};
  EXPECT_EQ(find_bottleneck(s), "send");
}

// ---- JSON ---------------------------------------------------------------------

snapshot rich_snapshot() {
  snapshot s = chain_with_bottleneck_at(3);
  s.elapsed = std::chrono::nanoseconds(1'234'567'890);
  s.stall_threshold = std::chrono::seconds(7);
  s.stages[0].name = "read \"quoted\" \\ back\nslash\t\x01";
  s.channels[0].from = s.stages[0].name;
  s.channels[0].name = s.stages[0].name + " -> s1";
  s.stages[1].items_in = 41;
  s.stages[1].items_out = 40;
  s.stages[1].errors = 1;
  s.stages[1].restarts = 2;
  s.stages[1].replicas = 3;
  s.stages[2].blocked_on = "s2 -> s3";
  s.stages[2].blocked_op = "push";
  s.stages[4].state = "done";
  s.channels[1].weighted = true;
  s.channels[1].stats = {.size = 100, .capacity = 4096, .pushed = 9, .popped = 7, .discarded = 1,
                         .blocked_push_ns = 55, .blocked_pop_ns = 66, .waiting_push = 1, .waiting_pop = 0};
  s.channels[2].external = true;
  s.bottleneck = find_bottleneck(s);
  return s;
}

// The JSON is the same under a locale that writes a decimal comma (a program's
// setlocale(LC_ALL, "") on a German machine): printf's "%.6f" wrote "busy_share":0,333333
// there, and the live view's /snapshot.json could not be parsed. The locale is built
// for the test (localedef into a temporary directory, found through LOCPATH).
TEST(MetricsJson, IsTheSameUnderALocaleWithADecimalComma) {
  const snapshot s = rich_snapshot();
  const std::string in_c = sluice::metrics::to_json(s);
  ASSERT_NE(in_c.find("_share\":0.") , std::string::npos) << in_c;
  char dir[] = "/tmp/sluice-locale-XXXXXX";
  ASSERT_NE(::mkdtemp(dir), nullptr);
  const std::string where = dir;
  const std::string make = "localedef -i de_DE -f UTF-8 " + where + "/de_DE.UTF-8 >/dev/null 2>&1";
  if (std::system(make.c_str()) != 0) {
    (void)std::system(("rm -rf " + where).c_str());
    GTEST_SKIP() << "cannot build the de_DE locale here (localedef, Debian package locales)";
  }
  ::setenv("LOCPATH", where.c_str(), 1);
  const bool set = std::setlocale(LC_ALL, "de_DE.UTF-8") != nullptr;
  char probe[16];
  std::snprintf(probe, sizeof probe, "%.1f", 0.5);
  const std::string under_de = sluice::metrics::to_json(s);
  std::setlocale(LC_ALL, "C");
  ::unsetenv("LOCPATH");
  (void)std::system(("rm -rf " + where).c_str());
  ASSERT_TRUE(set) << "setlocale(de_DE.UTF-8) failed";
  ASSERT_STREQ(probe, "0,5") << "the locale does not write a decimal comma: the test proves nothing";
  EXPECT_EQ(under_de, in_c);
  (void)mini_json::parse(under_de);  // throws on invalid JSON
}

TEST(MetricsJson, ParsesBackWithEveryField) {
  const snapshot s = rich_snapshot();
  ASSERT_EQ(s.bottleneck, "s3");
  const std::string text = sluice::metrics::to_json(s);
  EXPECT_EQ(text.find('\n'), std::string::npos) << "one line";
  const mini_json::value v = mini_json::parse(text);

  EXPECT_EQ(v["elapsed_ns"].uint(), 1'234'567'890ULL);
  EXPECT_EQ(v["stall_threshold_ns"].uint(), 7'000'000'000ULL);
  EXPECT_EQ(v["bottleneck"].str(), "s3");
  ASSERT_EQ(v["stages"].size(), s.stages.size());
  ASSERT_EQ(v["channels"].size(), s.channels.size());

  for (std::size_t i = 0; i < s.stages.size(); ++i) {
    const auto& j = v["stages"][i];
    const auto& st = s.stages[i];
    EXPECT_EQ(j["name"].str(), st.name);
    EXPECT_EQ(j["replicas"].uint(), st.replicas);
    EXPECT_EQ(j["items_in"].uint(), st.items_in);
    EXPECT_EQ(j["items_out"].uint(), st.items_out);
    EXPECT_EQ(j["errors"].uint(), st.errors);
    EXPECT_EQ(j["restarts"].uint(), st.restarts);
    EXPECT_EQ(j["busy_ns"].uint(), st.busy_ns);
    EXPECT_EQ(j["backpressured_ns"].uint(), st.backpressured_ns);
    EXPECT_EQ(j["starved_ns"].uint(), st.starved_ns);
    EXPECT_EQ(j["state"].str(), st.state);
    EXPECT_EQ(j["blocked_on"].str(), st.blocked_on);
    EXPECT_EQ(j["blocked_op"].str(), st.blocked_op);
    const double sum = j["busy_share"].num() + j["backpressured_share"].num() + j["starved_share"].num();
    EXPECT_NEAR(sum, 1.0, 1e-5);
    EXPECT_NEAR(j["busy_share"].num(), sluice::metrics::shares_of(st).busy, 1e-6);
  }
  for (std::size_t i = 0; i < s.channels.size(); ++i) {
    const auto& j = v["channels"][i];
    const auto& c = s.channels[i];
    EXPECT_EQ(j["name"].str(), c.name);
    EXPECT_EQ(j["from"].str(), c.from);
    EXPECT_EQ(j["to"].str(), c.to);
    EXPECT_EQ(j["weighted"].boolean(), c.weighted);
    EXPECT_EQ(j["size"].uint(), c.stats.size);
    EXPECT_EQ(j["capacity"].uint(), c.stats.capacity);
    EXPECT_EQ(j["pushed"].uint(), c.stats.pushed);
    EXPECT_EQ(j["popped"].uint(), c.stats.popped);
    EXPECT_EQ(j["discarded"].uint(), c.stats.discarded);
    EXPECT_EQ(j["dead_letters"].uint(), c.dead_letters);
    EXPECT_EQ(j["blocked_push_ns"].uint(), c.stats.blocked_push_ns);
    EXPECT_EQ(j["blocked_pop_ns"].uint(), c.stats.blocked_pop_ns);
    EXPECT_EQ(j["waiting_push"].uint(), c.stats.waiting_push);
    EXPECT_EQ(j["waiting_pop"].uint(), c.stats.waiting_pop);
    EXPECT_EQ(j["external"].boolean(), c.external);
  }
}

TEST(MetricsJson, EmptySnapshotAndNullBottleneck) {
  const mini_json::value v = mini_json::parse(sluice::metrics::to_json(snapshot{}));
  EXPECT_TRUE(v["bottleneck"].is_null());
  EXPECT_EQ(v["stages"].size(), 0U);
  EXPECT_EQ(v["channels"].size(), 0U);
  EXPECT_EQ(v["elapsed_ns"].uint(), 0U);
  EXPECT_EQ(v["stall_threshold_ns"].uint(), 0U);
}

// A stage name is any std::string; both formats promise UTF-8. Bytes that are not valid
// UTF-8 become U+FFFD (they went out raw: a strict decoder refused the whole document);
// valid multi-byte names pass unchanged.
TEST(MetricsJson, NamesThatAreNotUtf8BecomeReplacementCharacters) {
  snapshot s;
  s.stages.resize(3);
  s.stages[0].name = std::string("bad\xff\xfe");
  s.stages[1].name = "caf\xc3\xa9 \xf0\x9f\x9a\x80";          // valid: kept as it is
  s.stages[2].name = std::string("cut\xe2\x82") + "|\xc0\x80|\xed\xa0\x80";  // truncated, overlong, surrogate
  const std::string replacement = "\xef\xbf\xbd";
  for (const std::string& text : {sluice::metrics::to_json(s), sluice::metrics::to_prometheus(s)}) {
    EXPECT_NE(text.find("bad" + replacement + replacement), std::string::npos) << text;
    EXPECT_NE(text.find("caf\xc3\xa9 \xf0\x9f\x9a\x80"), std::string::npos) << text;
    EXPECT_NE(text.find("cut" + replacement + replacement + "|" + replacement + replacement + "|" + replacement +
                        replacement + replacement),
              std::string::npos)
        << text;
    EXPECT_EQ(text.find('\xff'), std::string::npos);
    EXPECT_EQ(text.find('\xc0'), std::string::npos);
  }
}

TEST(MiniJson, RejectsMalformedInput) {
  for (const char* bad : {"", "{", "{\"a\":}", "[1,]", "{\"a\":1,\"a\":2}", "01", "\"\x01\"", "[1] x", "nul"}) {
    EXPECT_THROW(mini_json::parse(bad), mini_json::error) << bad;
  }
}

// ---- Prometheus ---------------------------------------------------------------

struct prom_sample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
  std::string raw_value;
};

struct prom_family {
  std::string help;
  std::string type;
  std::vector<prom_sample> samples;
};

bool valid_metric_name(const std::string& n) {
  if (n.empty()) return false;
  for (std::size_t i = 0; i < n.size(); ++i) {
    const char c = n[i];
    const bool ok = std::isalpha(static_cast<unsigned char>(c)) || c == '_' || c == ':' ||
                    (i > 0 && std::isdigit(static_cast<unsigned char>(c)));
    if (!ok) return false;
  }
  return true;
}

// Parses text exposition format 0.0.4 strictly enough to catch what a scraper rejects:
// HELP and TYPE before a family's samples, one of each, contiguous families, label
// syntax and escapes, numeric values. Throws std::runtime_error with the line.
std::map<std::string, prom_family> parse_prometheus(const std::string& text) {
  std::map<std::string, prom_family> fams;
  std::set<std::string> closed;  // families whose samples have ended
  std::string current;
  std::istringstream in(text);
  std::string line;
  int lineno = 0;
  if (!text.empty() && text.back() != '\n') throw std::runtime_error("last line lacks a newline");
  auto fail = [&](const std::string& why) {
    throw std::runtime_error("line " + std::to_string(lineno) + ": " + why + ": " + line);
  };
  while (std::getline(in, line)) {
    ++lineno;
    if (line.empty()) fail("empty line");
    if (line.rfind("# ", 0) == 0) {
      std::istringstream ls(line.substr(2));
      std::string kw, name;
      ls >> kw >> name;
      if (kw != "HELP" && kw != "TYPE") fail("unknown comment");
      if (!valid_metric_name(name)) fail("bad metric name");
      if (closed.count(name) != 0 || (!fams[name].samples.empty())) fail("metadata after samples");
      std::string rest;
      std::getline(ls, rest);
      if (!rest.empty() && rest.front() == ' ') rest.erase(0, 1);
      if (kw == "HELP") {
        if (!fams[name].help.empty()) fail("second HELP");
        if (rest.empty()) fail("empty HELP");
        fams[name].help = rest;
      } else {
        if (!fams[name].type.empty()) fail("second TYPE");
        if (rest != "counter" && rest != "gauge" && rest != "untyped" && rest != "summary" && rest != "histogram")
          fail("bad TYPE");
        fams[name].type = rest;
      }
      if (current != name) {
        if (!current.empty()) closed.insert(current);
        current = name;
      }
      continue;
    }
    if (line.front() == '#') fail("comment without space");
    prom_sample s;
    std::size_t i = 0;
    while (i < line.size() && line[i] != '{' && line[i] != ' ') ++i;
    s.name = line.substr(0, i);
    if (!valid_metric_name(s.name)) fail("bad sample name");
    if (i < line.size() && line[i] == '{') {
      ++i;
      while (i < line.size() && line[i] != '}') {
        std::size_t eq = line.find('=', i);
        if (eq == std::string::npos) fail("label without '='");
        const std::string key = line.substr(i, eq - i);
        if (!valid_metric_name(key) || key.find(':') != std::string::npos) fail("bad label name");
        i = eq + 1;
        if (i >= line.size() || line[i] != '"') fail("label value not quoted");
        ++i;
        std::string val;
        for (;;) {
          if (i >= line.size()) fail("unterminated label value");
          const char c = line[i++];
          if (c == '"') break;
          if (c == '\\') {
            if (i >= line.size()) fail("dangling backslash");
            const char e = line[i++];
            if (e == 'n') {
              val += '\n';
            } else if (e == '\\' || e == '"') {
              val += e;
            } else {
              fail("bad escape in label value");
            }
          } else {
            val += c;
          }
        }
        if (!s.labels.emplace(key, val).second) fail("duplicate label");
        if (i < line.size() && line[i] == ',') ++i;
      }
      if (i >= line.size()) fail("unterminated labels");
      ++i;  // '}'
    }
    if (i >= line.size() || line[i] != ' ') fail("no space before value");
    s.raw_value = line.substr(i + 1);
    char* end = nullptr;
    s.value = std::strtod(s.raw_value.c_str(), &end);
    if (s.raw_value.empty() || *end != '\0' || !std::isfinite(s.value)) fail("value not numeric");
    if (s.name != current) fail("sample outside its family");
    prom_family& f = fams[s.name];
    if (f.help.empty() || f.type.empty()) fail("sample before HELP/TYPE");
    f.samples.push_back(std::move(s));
  }
  return fams;
}

TEST(MetricsPrometheus, ParsesBackLineByLine) {
  const snapshot s = rich_snapshot();
  const std::string text = sluice::metrics::to_prometheus(s);
  std::map<std::string, prom_family> fams;
  ASSERT_NO_THROW(fams = parse_prometheus(text)) << text;

  for (const auto& [name, f] : fams) {
    EXPECT_EQ(name.rfind("sluice_", 0), 0U) << name;
    EXPECT_FALSE(f.samples.empty()) << name;
    if (f.type == "counter") {
      EXPECT_EQ(name.substr(name.size() - 6), "_total") << name;
    }
    for (const auto& smp : f.samples) EXPECT_GE(smp.value, 0.0) << name;
  }

  // Values and labels round-trip: one sample per stage, the escaped name restored.
  const auto& busy = fams.at("sluice_stage_busy_seconds_total");
  EXPECT_EQ(busy.type, "counter");
  ASSERT_EQ(busy.samples.size(), s.stages.size());
  for (std::size_t i = 0; i < s.stages.size(); ++i) {
    EXPECT_EQ(busy.samples[i].labels.at("stage"), s.stages[i].name);
    EXPECT_NEAR(busy.samples[i].value, static_cast<double>(s.stages[i].busy_ns) / 1e9, 1e-9);
  }
  const auto& items_in = fams.at("sluice_stage_items_in_total");
  EXPECT_EQ(items_in.samples[1].value, 41.0);
  EXPECT_EQ(fams.at("sluice_stage_restarts_total").samples[1].value, 2.0);
  EXPECT_EQ(fams.at("sluice_stage_replicas").samples[1].value, 3.0);

  // The bottleneck gauge is 1 for s3 only.
  const auto& bn = fams.at("sluice_stage_bottleneck");
  double ones = 0;
  for (const auto& smp : bn.samples) {
    ones += smp.value;
    EXPECT_EQ(smp.value, smp.labels.at("stage") == "s3" ? 1.0 : 0.0);
  }
  EXPECT_EQ(ones, 1.0);

  // State as an enum gauge.
  const auto& state = fams.at("sluice_stage_state");
  EXPECT_EQ(state.samples[4].labels.at("state"), "done");

  // Channels: labelled by channel, from and to; stats round-trip.
  const auto& pushed = fams.at("sluice_channel_pushed_total");
  ASSERT_EQ(pushed.samples.size(), s.channels.size());
  EXPECT_EQ(pushed.samples[0].labels.at("channel"), s.channels[0].name);
  EXPECT_EQ(pushed.samples[0].labels.at("from"), s.channels[0].from);
  EXPECT_EQ(pushed.samples[1].value, 9.0);
  EXPECT_EQ(fams.at("sluice_channel_capacity").samples[1].value, 4096.0);
  EXPECT_EQ(fams.at("sluice_channel_size").samples[1].value, 100.0);
  EXPECT_EQ(fams.at("sluice_channel_discarded_total").samples[1].value, 1.0);
  EXPECT_NEAR(fams.at("sluice_channel_blocked_push_seconds_total").samples[1].value, 55e-9, 1e-15);
  EXPECT_NEAR(fams.at("sluice_elapsed_seconds").samples.at(0).value, 1.23456789, 1e-12);
}

TEST(MetricsPrometheus, TestParserRejectsWhatAScraperWould) {
  const char* bad[] = {
      "sluice_x 1\n",                                                     // no HELP/TYPE
      "# HELP sluice_x h\n# TYPE sluice_x gauge\nsluice_x{a=\"b} 1\n",    // unterminated label
      "# HELP sluice_x h\n# TYPE sluice_x gauge\nsluice_x{a=\"\\q\"} 1\n",  // bad escape
      "# HELP sluice_x h\n# TYPE sluice_x gauge\nsluice_x abc\n",          // not numeric
      "# HELP sluice_x h\n# TYPE sluice_x gauge\n# TYPE sluice_x gauge\nsluice_x 1\n",
      "# HELP sluice_x h\n# TYPE sluice_x gauge\nsluice_x 1",               // no final newline
  };
  for (const char* t : bad) EXPECT_THROW(parse_prometheus(t), std::runtime_error) << t;
}

TEST(MetricsPrometheus, EmptySnapshotIsStillValid) {
  const auto fams = parse_prometheus(sluice::metrics::to_prometheus(snapshot{}));
  EXPECT_EQ(fams.size(), 1U);
  EXPECT_TRUE(fams.count("sluice_elapsed_seconds"));
}

// ---- periodic -----------------------------------------------------------------

TEST(MetricsEvery, CallsRepeatedlyAndStopsOnDestruction) {
  std::mutex mu;
  std::condition_variable cv;
  int calls = 0;
  {
    auto rep = sluice::metrics::every(std::chrono::milliseconds(1), [&] {
      std::lock_guard lk(mu);
      ++calls;
      cv.notify_all();
    });
    EXPECT_TRUE(rep.running());
    std::unique_lock lk(mu);
    ASSERT_TRUE(cv.wait_for(lk, std::chrono::seconds(20), [&] { return calls >= 3; }));
  }
  // Destroyed: joined, so no call can follow.
  std::lock_guard lk(mu);
  const int after = calls;
  EXPECT_GE(after, 3);
}

// An interval of nanoseconds::max() is "never": now + interval overflowed into the past,
// and the thread called fn millions of times a second. One of 0 or below is refused.
TEST(MetricsEvery, AnEndlessIntervalNeverCallsAndNoneAtAllIsRefused) {
  std::mutex mu;
  std::condition_variable cv;
  bool called = false;
  {
    auto rep = sluice::metrics::every(std::chrono::nanoseconds::max(), [&] {
      std::lock_guard lk(mu);
      called = true;
      cv.notify_all();
    });
    EXPECT_TRUE(rep.running());
    std::unique_lock lk(mu);
    EXPECT_FALSE(cv.wait_for(lk, std::chrono::milliseconds(200), [&] { return called; }));
  }
  EXPECT_FALSE(called);
  for (const auto bad : {std::chrono::steady_clock::duration::zero(), -std::chrono::steady_clock::duration(std::chrono::seconds(1)),
                         std::chrono::steady_clock::duration::min()}) {
    try {
      (void)sluice::metrics::every(bad, [] {});
      ADD_FAILURE() << "an interval of " << bad.count() << " ns was accepted";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("interval"), std::string::npos) << e.what();
    }
  }
}

TEST(MetricsEvery, StopIsIdempotentAndFinal) {
  std::atomic<int> calls{0};
  auto rep = sluice::metrics::every(std::chrono::hours(1), [&] { calls.fetch_add(1); });
  rep.stop();  // wakes the thread long before the interval
  rep.stop();
  EXPECT_FALSE(rep.running());
  EXPECT_EQ(calls.load(), 0);
  EXPECT_EQ(rep.calls(), 0U);

  sluice::metrics::periodic moved = std::move(rep);
  EXPECT_FALSE(moved.running());
  sluice::metrics::periodic empty;
  EXPECT_FALSE(empty.running());
}

TEST(MetricsEvery, ThrowingCallbackEndsReporting) {
  std::mutex mu;
  std::condition_variable cv;
  bool thrown = false;
  auto rep = sluice::metrics::every(std::chrono::milliseconds(1), [&] {
    {
      std::lock_guard lk(mu);
      thrown = true;
    }
    cv.notify_all();
    throw std::runtime_error("publish failed");
  });
  {
    std::unique_lock lk(mu);
    ASSERT_TRUE(cv.wait_for(lk, std::chrono::seconds(20), [&] { return thrown; }));
  }
  rep.stop();
  EXPECT_FALSE(rep.running());
  EXPECT_EQ(rep.calls(), 0U);
}

}  // namespace
