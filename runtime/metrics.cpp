// runtime/metrics.cpp — the bottleneck rule, the JSON and Prometheus exporters, and
// the periodic reporter (see include/sluice/metrics.hpp for the contract).
#include "sluice/metrics.hpp"

#include "sluice/detail/ticker.hpp"
#include "text.hpp"

#include <algorithm>
#include <charconv>
#include <stdexcept>
#include <string>
#include <system_error>
#include <cstdio>
#include <string_view>
#include <unordered_map>
#include <utility>

namespace sluice::metrics {

namespace {

double share(std::uint64_t part, long double whole) noexcept {
  return whole == 0 ? 0.0 : static_cast<double>(static_cast<long double>(part) / whole);
}

}  // namespace

time_shares shares_of(const stage_snapshot& st) {
  // Summed in long double: three counters near 2^64 (a snapshot built by hand, or summed
  // over many stages) wrapped, and gave shares of 1.8e19 or all zero.
  const long double total = static_cast<long double>(st.busy_ns) + static_cast<long double>(st.backpressured_ns) +
                            static_cast<long double>(st.starved_ns);
  return {share(st.busy_ns, total), share(st.backpressured_ns, total), share(st.starved_ns, total)};
}

std::optional<std::string> find_bottleneck(const snapshot& s) {
  const std::size_t n = s.stages.size();
  std::unordered_map<std::string_view, std::size_t> index;
  index.reserve(n);
  for (std::size_t i = 0; i < n; ++i) index.emplace(s.stages[i].name, i);

  // producers[i] / consumers[i]: neighbour stage indices, each once.
  std::vector<std::vector<std::size_t>> producers(n), consumers(n);
  auto add_once = [](std::vector<std::size_t>& v, std::size_t x) {
    if (std::find(v.begin(), v.end(), x) == v.end()) v.push_back(x);
  };
  for (const channel_snapshot& c : s.channels) {
    const auto f = index.find(c.from);
    const auto t = index.find(c.to);
    if (f == index.end() || t == index.end() || f->second == t->second) continue;
    add_once(producers[t->second], f->second);
    add_once(consumers[f->second], t->second);
  }

  std::vector<time_shares> sh(n);
  for (std::size_t i = 0; i < n; ++i) sh[i] = shares_of(s.stages[i]);

  std::optional<std::size_t> best;
  double best_score = -1.0;
  for (std::size_t i = 0; i < n; ++i) {
    const stage_snapshot& st = s.stages[i];
    if (st.busy_ns == 0 && st.backpressured_ns == 0 && st.starved_ns == 0) continue;  // (a sum could wrap)
    double wait_sum = 0.0;
    int sides = 0;
    if (!producers[i].empty()) {
      double up = 0.0;
      for (std::size_t p : producers[i]) up += sh[p].backpressured;
      wait_sum += up / static_cast<double>(producers[i].size());
      ++sides;
    }
    if (!consumers[i].empty()) {
      double down = 0.0;
      for (std::size_t c : consumers[i]) down += sh[c].starved;
      wait_sum += down / static_cast<double>(consumers[i].size());
      ++sides;
    }
    if (sides == 0) continue;
    const double wait = wait_sum / sides;
    const double busy = sh[i].busy;
    if (busy < kBottleneckBusyShare || wait < kBottleneckWaitShare) continue;
    const double score = busy * wait;
    if (!best || score > best_score || (score == best_score && busy > sh[*best].busy)) {
      best = i;
      best_score = score;
    }
  }
  if (!best) return std::nullopt;
  return s.stages[*best].name;
}

// ---- JSON ---------------------------------------------------------------------

namespace {

void json_string(std::string& out, std::string_view raw) {
  const std::string v = detail::utf8_clean(raw);
  out += '"';
  for (const char ch : v) {
    const auto c = static_cast<unsigned char>(ch);
    switch (ch) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(c));
          out += buf;
        } else {
          out += ch;
        }
    }
  }
  out += '"';
}

void json_key(std::string& out, std::string_view k) {
  json_string(out, k);
  out += ':';
}

void json_uint(std::string& out, std::string_view k, std::uint64_t v) {
  json_key(out, k);
  out += std::to_string(v);
  out += ',';
}

// to_chars, not printf: printf follows the global locale, and under one that writes a
// decimal comma (de_DE, set by a program's setlocale(LC_ALL, "")) "1,000000" made the
// JSON invalid (the live view's /snapshot.json and its page too).
void json_double(std::string& out, std::string_view k, double v) {
  json_key(out, k);
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::fixed, 6);
  out.append(buf, r.ec == std::errc() ? r.ptr : buf);
  if (r.ec != std::errc()) out += '0';  // past 10^57: never a share in [0, 1]
  out += ',';
}

void json_str_field(std::string& out, std::string_view k, std::string_view v) {
  json_key(out, k);
  json_string(out, v);
  out += ',';
}

void drop_comma(std::string& out) {
  if (!out.empty() && out.back() == ',') out.pop_back();
}

}  // namespace

std::string to_json(const snapshot& s) {
  std::string out;
  out.reserve(256 + 320 * (s.stages.size() + s.channels.size()));
  out += '{';
  json_uint(out, "elapsed_ns", static_cast<std::uint64_t>(std::max<std::int64_t>(0, s.elapsed.count())));
  json_uint(out, "stall_threshold_ns", static_cast<std::uint64_t>(std::max<std::int64_t>(0, s.stall_threshold.count())));
  json_key(out, "bottleneck");
  if (s.bottleneck) {
    json_string(out, *s.bottleneck);
  } else {
    out += "null";
  }
  out += ",\"stages\":[";
  for (const stage_snapshot& st : s.stages) {
    const time_shares sh = shares_of(st);
    out += '{';
    json_str_field(out, "name", st.name);
    json_uint(out, "replicas", st.replicas);
    json_uint(out, "items_in", st.items_in);
    json_uint(out, "items_out", st.items_out);
    json_uint(out, "errors", st.errors);
    json_uint(out, "restarts", st.restarts);
    json_uint(out, "busy_ns", st.busy_ns);
    json_uint(out, "backpressured_ns", st.backpressured_ns);
    json_uint(out, "starved_ns", st.starved_ns);
    json_double(out, "busy_share", sh.busy);
    json_double(out, "backpressured_share", sh.backpressured);
    json_double(out, "starved_share", sh.starved);
    json_str_field(out, "state", st.state);
    json_str_field(out, "blocked_on", st.blocked_on);
    json_str_field(out, "blocked_op", st.blocked_op);
    if (!st.runs_on.empty()) json_str_field(out, "runs_on", st.runs_on);
    drop_comma(out);
    out += "},";
  }
  drop_comma(out);
  out += "],\"channels\":[";
  for (const channel_snapshot& c : s.channels) {
    out += '{';
    json_str_field(out, "name", c.name);
    json_str_field(out, "from", c.from);
    json_str_field(out, "to", c.to);
    json_key(out, "weighted");
    out += c.weighted ? "true," : "false,";
    json_uint(out, "size", c.stats.size);
    json_uint(out, "capacity", c.stats.capacity);
    json_uint(out, "pushed", c.stats.pushed);
    json_uint(out, "popped", c.stats.popped);
    json_uint(out, "discarded", c.stats.discarded);
    json_uint(out, "dead_letters", c.dead_letters);
    json_uint(out, "blocked_push_ns", c.stats.blocked_push_ns);
    json_uint(out, "blocked_pop_ns", c.stats.blocked_pop_ns);
    json_uint(out, "waiting_push", c.stats.waiting_push);
    json_uint(out, "waiting_pop", c.stats.waiting_pop);
    json_key(out, "external");
    out += c.external ? "true" : "false";
    out += "},";
  }
  drop_comma(out);
  out += "]}";
  return out;
}

// ---- Prometheus text exposition format 0.0.4 ------------------------------------

namespace {

void label_value(std::string& out, std::string_view raw) {
  const std::string v = detail::utf8_clean(raw);
  out += '"';
  for (const char ch : v) {
    switch (ch) {
      case '\\': out += "\\\\"; break;
      case '"': out += "\\\""; break;
      case '\n': out += "\\n"; break;
      default: out += ch;
    }
  }
  out += '"';
}

void family(std::string& out, std::string_view name, std::string_view type, std::string_view help) {
  out += "# HELP ";
  out += name;
  out += ' ';
  out += help;  // our own constant text: no backslash or newline to escape
  out += "\n# TYPE ";
  out += name;
  out += ' ';
  out += type;
  out += '\n';
}

using labels = std::initializer_list<std::pair<std::string_view, std::string_view>>;

void sample_prefix(std::string& out, std::string_view name, labels ls) {
  out += name;
  if (ls.size() != 0) {
    out += '{';
    bool first = true;
    for (const auto& [k, v] : ls) {
      if (!first) out += ',';
      first = false;
      out += k;
      out += '=';
      label_value(out, v);
    }
    out += '}';
  }
  out += ' ';
}

void sample(std::string& out, std::string_view name, labels ls, std::uint64_t v) {
  sample_prefix(out, name, ls);
  out += std::to_string(v);
  out += '\n';
}

// Nanoseconds as exact decimal seconds.
void sample_seconds(std::string& out, std::string_view name, labels ls, std::uint64_t ns) {
  sample_prefix(out, name, ls);
  char buf[48];
  std::snprintf(buf, sizeof buf, "%llu.%09llu", static_cast<unsigned long long>(ns / 1'000'000'000ULL),
                static_cast<unsigned long long>(ns % 1'000'000'000ULL));
  out += buf;
  out += '\n';
}

}  // namespace

std::string to_prometheus(const snapshot& s) {
  std::string out;
  out.reserve(1024 + 600 * (s.stages.size() + s.channels.size()));

  family(out, "sluice_elapsed_seconds", "gauge", "Time since the graph started.");
  sample_seconds(out, "sluice_elapsed_seconds", {},
                 static_cast<std::uint64_t>(std::max<std::int64_t>(0, s.elapsed.count())));

  struct stage_counter {
    const char* name;
    const char* type;
    const char* help;
    std::uint64_t stage_snapshot::*field;
    bool seconds;
  };
  static constexpr stage_counter kStageFamilies[] = {
      {"sluice_stage_items_in_total", "counter", "Items the stage took from its input.",
       &stage_snapshot::items_in, false},
      {"sluice_stage_items_out_total", "counter", "Items the stage pushed to its output.",
       &stage_snapshot::items_out, false},
      {"sluice_stage_errors_total", "counter", "Exceptions thrown by the stage function.",
       &stage_snapshot::errors, false},
      {"sluice_stage_restarts_total", "counter", "Restarts of the stage function.",
       &stage_snapshot::restarts, false},
      {"sluice_stage_busy_seconds_total", "counter",
       "Time running the stage function, summed over replicas.", &stage_snapshot::busy_ns, true},
      {"sluice_stage_backpressured_seconds_total", "counter",
       "Time blocked on a full output, summed over replicas.", &stage_snapshot::backpressured_ns, true},
      {"sluice_stage_starved_seconds_total", "counter",
       "Time blocked on an empty input, summed over replicas.", &stage_snapshot::starved_ns, true},
  };
  for (const stage_counter& f : kStageFamilies) {
    if (s.stages.empty()) break;
    family(out, f.name, f.type, f.help);
    for (const stage_snapshot& st : s.stages) {
      if (f.seconds) {
        sample_seconds(out, f.name, {{"stage", st.name}}, st.*(f.field));
      } else {
        sample(out, f.name, {{"stage", st.name}}, st.*(f.field));
      }
    }
  }
  if (!s.stages.empty()) {
    family(out, "sluice_stage_replicas", "gauge", "Threads running the stage function.");
    for (const stage_snapshot& st : s.stages) sample(out, "sluice_stage_replicas", {{"stage", st.name}}, st.replicas);
    family(out, "sluice_stage_state", "gauge", "1 for the stage's current state.");
    for (const stage_snapshot& st : s.stages) {
      sample(out, "sluice_stage_state", {{"stage", st.name}, {"state", st.state.empty() ? "idle" : st.state}}, 1);
    }
    family(out, "sluice_stage_bottleneck", "gauge", "1 for the stage that limits throughput, else 0.");
    for (const stage_snapshot& st : s.stages) {
      sample(out, "sluice_stage_bottleneck", {{"stage", st.name}},
             s.bottleneck && *s.bottleneck == st.name ? 1 : 0);
    }
  }

  struct channel_field {
    const char* name;
    const char* type;
    const char* help;
    std::uint64_t (*get)(const channel_stats&);
    bool seconds;
  };
  static constexpr channel_field kChannelFamilies[] = {
      {"sluice_channel_size", "gauge", "Buffered now: items, or bytes for a weighted channel.",
       [](const channel_stats& c) -> std::uint64_t { return c.size; }, false},
      {"sluice_channel_capacity", "gauge", "Capacity: items, or bytes for a weighted channel.",
       [](const channel_stats& c) -> std::uint64_t { return c.capacity; }, false},
      {"sluice_channel_pushed_total", "counter", "Items accepted by a push.",
       [](const channel_stats& c) -> std::uint64_t { return c.pushed; }, false},
      {"sluice_channel_popped_total", "counter", "Items handed to a receiver.",
       [](const channel_stats& c) -> std::uint64_t { return c.popped; }, false},
      {"sluice_channel_discarded_total", "counter", "Items dropped by overflow, cancel or disconnect.",
       [](const channel_stats& c) -> std::uint64_t { return c.discarded; }, false},
      {"sluice_channel_blocked_push_seconds_total", "counter", "Time producers waited on a full channel.",
       [](const channel_stats& c) -> std::uint64_t { return c.blocked_push_ns; }, true},
      {"sluice_channel_blocked_pop_seconds_total", "counter", "Time consumers waited on an empty channel.",
       [](const channel_stats& c) -> std::uint64_t { return c.blocked_pop_ns; }, true},
      {"sluice_channel_waiting_push", "gauge", "Producers parked on a full channel now.",
       [](const channel_stats& c) -> std::uint64_t { return c.waiting_push; }, false},
      {"sluice_channel_waiting_pop", "gauge", "Consumers parked on an empty channel now.",
       [](const channel_stats& c) -> std::uint64_t { return c.waiting_pop; }, false},
  };
  for (const channel_field& f : kChannelFamilies) {
    if (s.channels.empty()) break;
    family(out, f.name, f.type, f.help);
    for (const channel_snapshot& c : s.channels) {
      const labels ls = {{"channel", c.name}, {"from", c.from}, {"to", c.to}};
      if (f.seconds) {
        sample_seconds(out, f.name, ls, f.get(c.stats));
      } else {
        sample(out, f.name, ls, f.get(c.stats));
      }
    }
  }
  if (!s.channels.empty()) {
    const char* name = "sluice_channel_dead_letters_total";
    family(out, name, "counter", "Items a stage held outside the channel and dropped (taken and not processed, or made and not pushed).");
    for (const channel_snapshot& c : s.channels) sample(out, name, {{"channel", c.name}, {"from", c.from}, {"to", c.to}}, c.dead_letters);
  }
  return out;
}

// ---- periodic -----------------------------------------------------------------

// A detail::ticker (detail/ticker.hpp) whose tick calls fn; its stop, join and
// exception rules are periodic's.
struct periodic::state {
  detail::ticker ticker;
};

periodic::periodic() noexcept = default;

periodic::periodic(std::chrono::steady_clock::duration interval, std::function<void()> fn)
    : state_(std::make_unique<state>()) {
  if (interval <= interval.zero()) {
    throw std::invalid_argument("sluice::metrics::every: the interval must be above 0 (got " +
                                std::to_string(std::chrono::duration_cast<std::chrono::nanoseconds>(interval).count()) +
                                " ns)");
  }
  state_->ticker = detail::tick_every(interval, std::move(fn), "sluice-metrics");
}

periodic::periodic(periodic&&) noexcept = default;

periodic& periodic::operator=(periodic&& o) noexcept {
  if (this != &o) {
    stop();
    state_ = std::move(o.state_);
  }
  return *this;
}

periodic::~periodic() { stop(); }

void periodic::stop() noexcept {
  if (state_) state_->ticker.stop();
}

bool periodic::running() const noexcept { return state_ && state_->ticker.running(); }

std::uint64_t periodic::calls() const noexcept { return state_ ? state_->ticker.ticks() : 0; }

periodic every(std::chrono::steady_clock::duration interval, std::function<void()> fn) {
  return periodic(interval, std::move(fn));
}

}  // namespace sluice::metrics
