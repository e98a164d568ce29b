// sluice bench --cut K --via nats://HOST:PORT [--role producer|consumer]
//
// A chain (source, workers w1..wN, sink) cut after worker K: the producer process runs the
// source and w1..wK into a JetStream edge (publish), the consumer process runs the edge
// (subscribe), w(K+1)..wN and the sink, which acknowledges each item. Without --role the
// tool starts both processes itself (it runs itself twice) and reports both sides; with
// --role it runs one side (one per machine) and reports that side.
//
// An item is a string: 8 bytes of sequence, 8 bytes of its birth time (CLOCK_MONOTONIC:
// end-to-end latency is meaningful only when both sides run on one machine), then the
// payload (--item-size bytes). After its items the producer sends an end marker (sequence
// kEndMarker, the item count in the time's place), published once every item before it
// was stored by the server.
//
// The consumer counts distinct sequences, not deliveries: after a server restart or a
// nak some items come again (at-least-once), and those are reported as redeliveries
// (the server's delivery count is above 1). Another message with a sequence it already
// had, delivered for the first time, is no redelivery: a second producer on the stream
// (two --role producer runs), or a sequence past --items; those are reported apart. It
// ends when it has all N and the marker, or, when the marker came but some items never
// do (an earlier consumer, since killed, acknowledged them), once the stream is empty and
// nothing has arrived for kQuietAfterMarker; then it says how many it got. The orchestrating run fails (and
// keeps the stream, naming it) when the consumer got fewer than N.
#if SLUICE_HAVE_JETSTREAM

#include "bench/cut.hpp"

#include <signal.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "common/args.hpp"
#include "bench/pacing.hpp"
#include "bench/ring_memory.hpp"
#include "bench/work.hpp"
#include "sluice/detail/ring_buffer.hpp"
#include "sluice/graph.hpp"
#include "sluice/jetstream.hpp"
#include "sluice/metrics.hpp"
#include "common/signals.hpp"
#include "common/sys.hpp"

namespace sluice::tool::bench {
namespace {

namespace js = sluice::jetstream;


struct cut_config {
  std::size_t n = 4;            // workers
  std::size_t cut = 0;          // after worker `cut`
  std::string via;              // nats://HOST:PORT
  std::string role;             // "", producer, consumer
  std::string stream;           // the edge's stream
  std::string result;           // internal: the child's report file
  std::uint64_t items = 100000;
  std::uint64_t item_size = 64;
  std::vector<work_spec> works = {work_spec{}};
  std::uint64_t capacity = 1024;       // in-process channels
  std::uint64_t edge_capacity = 4096;  // the stream's max_msgs
  std::vector<std::string> passthrough;  // what the children get
};

// An item's work, cut once the side's graph is stopping (its ^C cancels it).
void do_work(const work_spec& w) { (void)bench::do_work(w, [] { return sluice::this_stage::graph_stopping(); }); }
std::string worker_name(std::size_t w) {
  char b[24];
  std::snprintf(b, sizeof(b), "w%zu", w);
  return b;
}
const work_spec& work_of(const cut_config& c, std::size_t worker) {
  return c.works[std::min(worker, c.works.size() - 1)];
}

constexpr std::uint64_t kMaxItemSize = std::uint64_t{1023} << 10;  // --item-size

[[noreturn]] void bad(const std::string& opt, std::string_view v, const std::string& want) {
  throw usage_error("sluice bench: " + opt + " '" + std::string(v) + "': want " + want);
}

// The edge a cut run makes (ensure_edge) and checks up front (check_edge).
js::edge_options edge_of(const cut_config& c) {
  return js::edge_options{.stream = c.stream, .max_msgs = static_cast<std::int64_t>(c.edge_capacity)};
}

cut_config parse(int argc, char** argv) {
  // --role alone: the rest of the line is a run in one process's, which a cut run would
  // call "not an option of a cut run", and "--cut needs --via" named an option never given.
  bool cut = false;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    cut = cut || a == "--cut" || a.starts_with("--cut=");
  }
  if (!cut) throw usage_error("sluice bench: --role applies to --cut K; give --cut too");
  cut_config c;
  std::set<std::string> seen;  // each option once, as the other commands take them
  for (int i = 1; i < argc; ++i) {
    // --opt VALUE or --opt=VALUE, as the other commands take them.
    std::string a = argv[i];
    std::optional<std::string> inline_value;
    if (const auto eq = a.find('='); a.starts_with("--") && eq != std::string::npos) {
      inline_value = a.substr(eq + 1);
      a.resize(eq);
    }
    if (a.starts_with("--") && a != "--help" && !seen.insert(a).second) {
      throw usage_error("sluice bench: " + a + " is given more than once (give each option once)");
    }
    std::string taken;  // the value the option took
    auto value = [&]() -> std::string_view {
      if (inline_value) {
        taken = *inline_value;
      } else {
        if (i + 1 >= argc) throw usage_error("sluice bench: " + a + " needs a value");
        taken = argv[++i];
      }
      return taken;
    };
    auto count = [&](std::uint64_t& out) {
      const auto v = value();
      const auto n = parse_count(v);
      if (!n || *n == 0) bad(a, v, "a whole number above 0 like 1000 or 10k");
      out = *n;
    };
    bool pass = true;
    if (a == "--cut") {
      const auto v = value();
      const auto n = parse_count(v);
      if (!n) bad(a, v, "a worker number K (the edge follows worker K; 0: right after the source)");
      c.cut = static_cast<std::size_t>(*n);
    } else if (a == "--via") {
      c.via = std::string(value());
    } else if (a == "--role") {
      c.role = std::string(value());
      if (c.role != "producer" && c.role != "consumer") bad(a, c.role, "producer or consumer");
      pass = false;
    } else if (a == "--stream") {
      c.stream = std::string(value());
      if (c.stream.empty()) bad(a, c.stream, "a stream name");
      pass = false;
    } else if (a == "--result") {
      c.result = std::string(value());
      pass = false;
    } else if (a == "--topology") {
      const auto v = value();
      const auto n = v.rfind("chain:", 0) == 0 ? parse_count(v.substr(6)) : std::nullopt;
      if (!n || *n == 0 || *n > 64) bad(a, v, "chain:N (N in 1..64): a cut runs a chain");
      c.n = static_cast<std::size_t>(*n);
    } else if (a == "--items") {
      count(c.items);
    } else if (a == "--item-size") {
      const auto v = value();
      const auto n = parse_size(v);
      // A message is the item, 16 bytes of sequence and time, and a Nats-Msg-Id header:
      // at 1 MiB it passed here and could never cross a default server (max_payload 1 MiB).
      if (!n || *n > kMaxItemSize) bad(a, v, "a size up to 1023KiB like 64 or 4k (a message must fit a server's max_payload, 1MiB by default)");
      c.item_size = *n;
    } else if (a == "--capacity") {
      count(c.capacity);
    } else if (a == "--edge-capacity") {
      count(c.edge_capacity);
    } else if (a == "--work") {
      const auto v = value();
      if (!parse_work_list(v, c.works)) {
        bad(a, v, "durations like 200ns, spin:2us or sleep:1ms, comma-separated per worker");
      }
    } else {
      throw usage_error("sluice bench: " + a +
                        " is not an option of a cut run (--cut K --via URL [--role producer|consumer] "
                        "[--topology chain:N] [--items N] [--item-size B] [--work W] [--capacity C] "
                        "[--edge-capacity M] [--stream NAME])");
    }
    if (pass) {  // every option takes a value: the option, then it
      c.passthrough.push_back(a);
      c.passthrough.push_back(taken);
    }
  }
  if (c.via.empty()) throw usage_error("sluice bench: --cut needs --via nats://HOST:PORT (a nats-server with -js)");
  if (c.via.rfind("nats://", 0) != 0) {
    bad("--via", js::shown_url(c.via), "a NATS URL like nats://HOST:PORT (a nats-server with -js)");
  }
  // Each server of the list: a host, and a port in 1..65535 if one is given, checked as
  // connect() checks it, but before any connection.
  try {
    js::check_url(c.via);
  } catch (const std::invalid_argument& e) {
    // check_url's reason (a comma in the password, a port out of range), the URL in it
    // shown without its password or token; the library's own prefix left out.
    std::string_view why = e.what();
    if (why.starts_with("sluice::jetstream: ")) why.remove_prefix(std::string_view("sluice::jetstream: ").size());
    throw usage_error("sluice bench: --via: " + std::string(why));
  }
  if (c.cut > c.n) bad("--cut", std::to_string(c.cut), "at most the number of workers (" + std::to_string(c.n) + ")");
  // One value for every worker, or one each: extra values were dropped without a word.
  if (c.works.size() != 1 && c.works.size() != c.n) {
    throw usage_error("sluice bench: --work lists " + std::to_string(c.works.size()) + " values but chain:" +
                      std::to_string(c.n) + " has " + std::to_string(c.n) + " worker stages");
  }
  // The slots of a side's in-process channels are allocated up front: a --capacity that
  // cannot fit was an out-of-memory error (or "needs 512 EiB") from each side after the
  // connection, exit 1; it is a usage error as for a run in one process.
  // A run that starts both sides runs both on this machine: their channels together must
  // fit (each side's alone were checked: 12M passed, and the two sides took 3 GB under a
  // 1.5 GB limit, killed for memory; a probe).
  const std::uint64_t producer_rings = c.cut + 1, consumer_rings = c.n - c.cut + 1;
  refuse_rings_past_free_memory(std::to_string(c.capacity), c.capacity,
                                c.role.empty()           ? producer_rings + consumer_rings
                                : c.role == "producer" ? producer_rings
                                                         : consumer_rings,
                                std::max(sluice::detail::ring_buffer<std::string>::slot_bytes(),
                                         sluice::detail::ring_buffer<js::delivery<std::string>>::slot_bytes()),
                                c.role.empty() ? "the two sides' (both run on this machine)" : "this side's");
  // The consumer keeps a bit per item (which sequences came): --items 100G wanted 12.5 GB
  // of it after connecting, and failed there with "out of memory".
  if (const std::uint64_t free_now = sluice::detail::available_memory();
      c.role != "producer" && free_now != 0 && c.items / 8 > free_now) {
    bad("--items", std::to_string(c.items), "a count whose bit per item (" + format_size(static_cast<double>(c.items / 8)) +
                                                ", kept by the consumer) fits in the " +
                                                format_size(static_cast<double>(free_now)) + " free now");
  }
  if (c.stream.empty()) c.stream = c.role.empty() ? "sluice-bench-" + std::to_string(::getpid()) : "sluice-bench";
  // A name no stream can have: a usage error now, not exit 1 after connecting (or a
  // "cannot connect" that never said the name was bad).
  try {
    js::check_edge(edge_of(c));
  } catch (const std::invalid_argument& e) {
    std::string_view why = e.what();
    if (const auto colon = why.find(": "); why.starts_with("sluice::jetstream::") && colon != std::string_view::npos) {
      why.remove_prefix(colon + 2);
    }
    throw usage_error("sluice bench: --stream: " + std::string(why));
  }
  return c;
}

// ---- one side ------------------------------------------------------------------

constexpr std::uint64_t kEndMarker = ~std::uint64_t{0};
constexpr auto kQuietAfterMarker = std::chrono::seconds(2);  // the marker came and the stream is empty
constexpr auto kWaitForMarker = std::chrono::seconds(5);     // all items came, the marker did not
constexpr auto kQuietBeforeAnyItem = std::chrono::seconds(60);  // a marker, an empty stream, no item yet

struct side_result {
  std::string side;
  double elapsed_s = 0;
  std::uint64_t items = 0;        // producer: items sent; consumer: distinct items received
  std::uint64_t redelivered = 0;  // consumer: deliveries of an item it already had, delivered again
  std::uint64_t copies = 0;       // consumer: first deliveries of another message of such an item
  std::uint64_t expected = 0;     // consumer: the count it waited for (--items)
  std::vector<metrics::stage_snapshot> stages;
  std::uint64_t edge_max = 0, edge_capacity = 0;
  double edge_mean = 0;
  std::uint64_t p50_ns = 0, p99_ns = 0;  // consumer: end-to-end latency
  int interrupted = 0;                   // the signal that stopped it early, or 0
};

std::uint64_t load64(const std::string& s, std::size_t at) {
  std::uint64_t v = 0;
  if (s.size() >= at + 8) std::memcpy(&v, s.data() + at, 8);
  return v;
}

// `signals`: a side takes ^C here: it is cancelled, and the result says what it did before
// then, with the signal in `interrupted`.
side_result run_side(const cut_config& c, js::connection& conn, const js::edge_options& edge,
                     const signal_block* signals = nullptr) {
  std::atomic<int> interrupted{0};
  sluice::graph g;
  const bool producer = c.role == "producer";
  std::atomic<std::uint64_t> done_items{0};
  std::atomic<std::uint64_t> redelivered{0};
  std::atomic<std::uint64_t> copies{0};
  std::atomic<bool> marker_seen{false};
  std::atomic<std::uint64_t> markers{0};  // end markers that went through this side's stages
  std::atomic<std::int64_t> last_delivery{0};
  std::vector<bool> seen;  // consumer: by sequence
  std::vector<std::uint64_t> lat;
  if (producer) {
    auto s = g.source<std::string>("source", [&](sluice::sender<std::string>& out, std::stop_token st) {
      for (std::uint64_t i = 0; i < c.items && !st.stop_requested(); ++i) {
        std::string item(16 + c.item_size, 'x');
        const std::uint64_t born = static_cast<std::uint64_t>(now_ns());
        std::memcpy(item.data(), &i, 8);
        std::memcpy(item.data() + 8, &born, 8);
        if (!out.push(std::move(item))) return;
        done_items.fetch_add(1, std::memory_order_relaxed);
      }
      if (st.stop_requested()) return;
      // The end marker: after every item (the edge publishes in order and ends by waiting
      // for every acknowledgement, so the marker is stored after the items).
      std::string marker(16, '\0');
      std::memcpy(marker.data(), &kEndMarker, 8);
      std::memcpy(marker.data() + 8, &c.items, 8);
      if (out.push(std::move(marker))) markers.fetch_add(1, std::memory_order_relaxed);
    }, {.capacity = c.capacity});
    for (std::size_t w = 1; w <= c.cut; ++w) {
      s = g.map(worker_name(w), s, [&c, w](std::string v) {
        do_work(work_of(c, w - 1));
        return v;
      }, {.capacity = c.capacity});
    }
    // An id of this run's own: the stream de-duplicates message ids (for 2 minutes), so a
    // fixed one would have a second --role run within that window dropped as duplicates of
    // the first one's, and its consumer would wait for ever.
    const auto run_id = std::to_string(::getpid()) + "-" +
                        std::to_string(std::chrono::system_clock::now().time_since_epoch().count());
    js::publish<std::string>(g, s, conn, edge, {.producer_id = edge.stream + "-producer-" + run_id});
  } else {
    // The default fetch wait (20 ms): sluice's own pull requests make a short wait safe
    // (libnats 3.4.1's natsSubscription_Fetch overran its array after a fetch that gave up
    // early; the edge no longer uses it).
    auto s = js::subscribe<std::string>(g, conn, edge, {},
                                        {.capacity = c.capacity});
    for (std::size_t w = c.cut + 1; w <= c.n; ++w) {
      s = g.map(worker_name(w), s, [&c, w](js::delivery<std::string> d) {
        do_work(work_of(c, w - 1));
        return d;
      }, {.capacity = c.capacity});
    }
    lat.reserve(static_cast<std::size_t>(std::min<std::uint64_t>(c.items, 10'000'000)));
    seen.assign(static_cast<std::size_t>(c.items), false);
    last_delivery.store(now_ns(), std::memory_order_relaxed);
    // One sink thread: seen, lat and the counts below are its own.
    g.sink("sink", s, [&](js::delivery<std::string> d) -> bool {
      last_delivery.store(now_ns(), std::memory_order_relaxed);
      const std::uint64_t seq = load64(d.value(), 0);
      if (seq == kEndMarker) {
        d.ack();
        marker_seen.store(true, std::memory_order_relaxed);
        markers.fetch_add(1, std::memory_order_relaxed);
      } else if (seq >= c.items || seen[static_cast<std::size_t>(seq)]) {
        // Again (at-least-once: the server counts a second delivery), or another message
        // with that sequence (a second producer on the stream, or one past --items).
        const bool again = d.deliveries() > 1;
        d.ack();
        (again ? redelivered : copies).fetch_add(1, std::memory_order_relaxed);
        return true;
      } else {
        seen[static_cast<std::size_t>(seq)] = true;
        const std::int64_t born = static_cast<std::int64_t>(load64(d.value(), 8));
        lat.push_back(static_cast<std::uint64_t>(std::max<std::int64_t>(0, now_ns() - born)));
        d.ack();
        done_items.fetch_add(1, std::memory_order_relaxed);
      }
      if (done_items.load(std::memory_order_relaxed) < c.items || !marker_seen.load(std::memory_order_relaxed)) {
        return true;
      }
      // All of them and the marker: stop the subscribe stage too (it waits on the edge,
      // not on a push that would tell it nobody reads any more).
      g.request_stop();
      return false;
    });
  }
  side_result r;
  r.side = c.role;
  // The edge's occupancy, sampled from this side's snapshot every 100 ms.
  std::atomic<bool> running{true};
  std::uint64_t samples = 0, sum = 0;
  bool gave_up = false;  // the consumer ended without all its items (see the top)
  std::thread sampler = start_thread("samples the edge", [&] {
    while (running.load()) {
      if (signals != nullptr) {
        if (const int sig = signals->take(std::chrono::milliseconds(100)); sig != 0 && running.load()) {
          interrupted.store(sig);
          g.cancel();
          return;
        }
      } else {
        for (int k = 0; k < 10 && running.load(); ++k) std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      std::optional<std::uint64_t> edge_now;
      for (const auto& ch : g.snapshot().channels) {
        if (ch.external) {
          r.edge_max = std::max<std::uint64_t>(r.edge_max, ch.stats.size);
          r.edge_capacity = ch.stats.capacity;
          sum += ch.stats.size;
          ++samples;
          edge_now = ch.stats.size;
        }
      }
      if (!producer && !gave_up) {
        const auto quiet = std::chrono::nanoseconds(now_ns() - last_delivery.load(std::memory_order_relaxed));
        const bool all = done_items.load(std::memory_order_relaxed) >= c.items;
        const bool marker = marker_seen.load(std::memory_order_relaxed);
        // Items missing after the marker: wait while the stream still holds messages (a
        // killed consumer's unacknowledged ones come back after ack_wait); once it is
        // empty every item was acknowledged by someone, so the rest went to another.
        const bool drained = edge_now.has_value() && *edge_now == 0;
        // With no item yet, the marker may be a previous run's left behind (a consumer
        // started before its producer): give that producer a minute.
        const auto enough = done_items.load(std::memory_order_relaxed) != 0 ? kQuietAfterMarker : kQuietBeforeAnyItem;
        if ((marker && !all && drained && quiet >= enough) || (all && !marker && quiet >= kWaitForMarker)) {
          gave_up = !all;
          g.request_stop();
        }
      }
    }
  });
  const auto t0 = std::chrono::steady_clock::now();
  report rep;
  try {
    rep = g.run();
  } catch (const sluice::cancelled&) {
    running = false;
    if (signals != nullptr) signals->wake();
    sampler.join();
    if (interrupted.load() == 0) throw;
    rep = g.last_report();  // ^C: what this side did before it
  } catch (...) {
    running = false;
    if (signals != nullptr) signals->wake();
    sampler.join();
    throw;
  }
  r.interrupted = interrupted.load();
  r.elapsed_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  running = false;
  if (signals != nullptr) signals->wake();
  if (sampler.joinable()) sampler.join();
  r.items = done_items.load();
  r.redelivered = redelivered.load();
  r.copies = copies.load();
  r.expected = producer ? 0 : c.items;
  r.stages = rep.metrics.stages;
  // The end marker went through every stage of a side that ended normally, but it is the
  // run's, not an item: the stage table counts items, as the summary does.
  for (auto& st : r.stages) {
    const std::uint64_t m = markers.load();
    st.items_in -= std::min(st.items_in, m);
    st.items_out -= std::min(st.items_out, m);
  }
  if (r.edge_capacity == 0) r.edge_capacity = static_cast<std::uint64_t>(edge.max_msgs);
  r.edge_mean = samples != 0 ? static_cast<double>(sum) / static_cast<double>(samples) : 0.0;
  if (!lat.empty()) {
    std::sort(lat.begin(), lat.end());
    r.p50_ns = lat[lat.size() / 2];
    r.p99_ns = lat[std::min(lat.size() - 1, lat.size() * 99 / 100)];
  }
  return r;
}

void write_result(const side_result& r, const std::string& path) {
  std::ofstream o(path);
  o << "side " << r.side << " " << r.elapsed_s << " " << r.items << " " << r.edge_max << " " << r.edge_mean << " "
    << r.edge_capacity << " " << r.p50_ns << " " << r.p99_ns << " " << r.redelivered << " " << r.expected << " " << r.copies
    << " " << r.interrupted << "\n";
  for (const auto& s : r.stages) {
    o << "stage " << s.name << " " << s.items_in << " " << s.items_out << " " << s.busy_ns << " " << s.backpressured_ns
      << " " << s.starved_ns << "\n";
  }
}

side_result read_result(const std::string& path) {
  side_result r;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream f(line);
    std::string kind;
    f >> kind;
    if (kind == "side") {
      f >> r.side >> r.elapsed_s >> r.items >> r.edge_max >> r.edge_mean >> r.edge_capacity >> r.p50_ns >> r.p99_ns >>
          r.redelivered >> r.expected >> r.copies >> r.interrupted;
    } else if (kind == "stage") {
      metrics::stage_snapshot s;
      f >> s.name >> s.items_in >> s.items_out >> s.busy_ns >> s.backpressured_ns >> s.starved_ns;
      r.stages.push_back(s);
    }
  }
  return r;
}

// ---- the table -------------------------------------------------------------------

std::string pct(std::uint64_t part, std::uint64_t whole) {
  char b[16];
  std::snprintf(b, sizeof(b), "%5.1f%%", whole != 0 ? 100.0 * static_cast<double>(part) / static_cast<double>(whole) : 0.0);
  return b;
}

void print_sides(const cut_config& c, const js::edge_options& edge, const std::vector<side_result>& sides) {
  std::printf("sluice bench --cut %zu --via %s: chain:%zu, %llu items of %llu B, edge jetstream:%s (max_msgs %lld)\n",
              c.cut, js::shown_url(c.via).c_str(), c.n, static_cast<unsigned long long>(c.items),
              static_cast<unsigned long long>(c.item_size), edge.stream.c_str(), static_cast<long long>(edge.max_msgs));
  std::printf("%-9s %-28s %12s %8s %14s %8s\n", "side", "stage", "items", "busy", "backpressured", "starved");
  // One snapshot of both sides, with the edge as the channel between them: the bottleneck
  // (metrics::find_bottleneck) is judged across the cut.
  metrics::snapshot all;
  std::string prev;
  for (const auto& sd : sides) {
    for (const auto& s : sd.stages) {
      const std::uint64_t t = s.busy_ns + s.backpressured_ns + s.starved_ns;
      std::printf("%-9s %-28s %12llu %8s %14s %8s\n", sd.side.c_str(), s.name.c_str(),
                  static_cast<unsigned long long>(std::max(s.items_in, s.items_out)), pct(s.busy_ns, t).c_str(),
                  pct(s.backpressured_ns, t).c_str(), pct(s.starved_ns, t).c_str());
      all.stages.push_back(s);
      if (!prev.empty()) {
        metrics::channel_snapshot ch;
        ch.from = prev;
        ch.to = s.name;
        all.channels.push_back(ch);
      }
      prev = s.name;
    }
    if (sd.side == "producer") {
      std::printf("%-9s %-28s occupancy max %llu / %llu, mean %.0f\n", "edge", ("jetstream:" + edge.stream).c_str(),
                  static_cast<unsigned long long>(sd.edge_max), static_cast<unsigned long long>(sd.edge_capacity),
                  sd.edge_mean);
    }
  }
  for (const auto& sd : sides) {
    const double rate = sd.elapsed_s > 0 ? static_cast<double>(sd.items) / sd.elapsed_s : 0;
    std::printf("%s: %llu items in %.3f s, %.0f items/s", sd.side.c_str(), static_cast<unsigned long long>(sd.items),
                sd.elapsed_s, rate);
    if (sd.side == "consumer") {
      std::printf(", latency p50 %.1f us, p99 %.1f us (source to sink)", static_cast<double>(sd.p50_ns) / 1e3,
                  static_cast<double>(sd.p99_ns) / 1e3);
      if (sd.redelivered != 0) {
        std::printf(", %llu redelivered (counted once)", static_cast<unsigned long long>(sd.redelivered));
      }
      if (sd.copies != 0) {
        std::printf(", %llu other messages of items already had or past --items (another producer on the stream, "
                    "or a server restart that lost acks?), not counted",
                    static_cast<unsigned long long>(sd.copies));
      }
    }
    std::printf("\n");
    if (sd.side == "consumer" && sd.items < sd.expected && sd.interrupted == 0) {
      std::printf("consumer: %llu of %llu items arrived; the producer had finished and the edge is empty, so "
                  "the other %llu were acknowledged by another consumer (an earlier one, since gone?)\n",
                  static_cast<unsigned long long>(sd.items), static_cast<unsigned long long>(sd.expected),
                  static_cast<unsigned long long>(sd.expected - sd.items));
    }
  }
  if (sides.size() == 2) {
    if (const auto b = metrics::find_bottleneck(all)) {
      bool in_producer = false;
      for (const auto& s : sides[0].stages) in_producer |= s.name == *b;
      std::printf("bottleneck: %s (%s side)\n", b->c_str(), in_producer ? "producer" : "consumer");
    } else {
      std::printf("bottleneck: none found\n");
    }
  }
}

// A side's result, handed back through a file with no name: the side writes it at
// /dev/fd/3 (its copy of fd()), the parent reads it at path().
class result_file {
 public:
  explicit result_file(const char* side) : fd_(::memfd_create(("sluice-cut-" + std::string(side)).c_str(), MFD_CLOEXEC)) {
    if (fd_ < 0) throw std::runtime_error(std::string("sluice bench: cannot make a file for a side's result: ") + std::strerror(errno));
  }
  result_file(const result_file&) = delete;
  result_file& operator=(const result_file&) = delete;
  ~result_file() { ::close(fd_); }
  [[nodiscard]] int fd() const noexcept { return fd_; }
  [[nodiscard]] std::string path() const { return "/proc/self/fd/" + std::to_string(fd_); }

 private:
  int fd_;
};

// Starts this program as one side; its result goes to result_fd (as the side's fd 3).
// It starts with the parent's stop signals still blocked (a mask is kept across exec), so a
// signal that comes before it has set up its own handling waits for it rather than killing
// it with nothing handed in: a ^C soon after the start lost the consumer's figures.
int run_child(const cut_config& c, const std::string& exe, const std::string& role, int result_fd) {
  std::vector<std::string> args = {exe, "bench"};
  args.insert(args.end(), c.passthrough.begin(), c.passthrough.end());
  for (const char* a : {"--role", role.c_str(), "--stream", c.stream.c_str(), "--result", "/dev/fd/3"}) args.push_back(a);
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("sluice bench: fork failed");
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive the orchestrating process
    if (::getppid() != parent) ::_exit(1);
    // The result file as fd 3, open across the exec; none of this process's other
    // descriptors (its NATS connection) go along.
    if (result_fd == 3) {
      ::fcntl(3, F_SETFD, 0);
    } else if (::dup2(result_fd, 3) != 3) {
      ::_exit(127);
    }
    ::close_range(4, ~0U, 0);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  return pid;
}

}  // namespace

bool wants_cut(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a == "--cut" || a == "--role" || a.starts_with("--cut=") || a.starts_with("--role=")) return true;
  }
  return false;
}

int run_cut(const cut_config& c);

int cmd_bench_cut(int argc, char** argv) {
  const cut_config c = parse(argc, argv);
  int rc = 1;
  try {
    rc = run_cut(c);
  } catch (...) {
    js::shutdown();
    throw;
  }
  // Every connection is gone: stop libnats' threads before the process exits.
  js::shutdown();
  return rc;
}

int run_cut(const cut_config& c) {
  const js::edge_options edge = edge_of(c);
  // Running both sides: SIGINT/SIGTERM/SIGHUP are taken by the wait loop below rather than
  // ending this process at once, so an interrupted run still stops its sides and removes
  // its stream. Blocked before the connection starts libnats'
  // threads, so that none of them takes the signal instead; the sides start with them
  // blocked too and take them here in turn (run_child).
  // A side takes them too: cancelled, it still gives what it did before then, printed by a
  // side the user started alone (--role), which also says what it left on the server, and
  // handed in its --result by a side this program started (on the parent's SIGTERM, or
  // the terminal's ^C to the whole process group), for the parent to print.
  std::optional<signal_block> signals;
  signals.emplace();
  auto conn = js::connect(c.via);
  js::ensure_edge(conn, edge);
  if (!c.role.empty()) {
    if (c.result.empty()) {  // started alone: say what this side waits for (a consumer waits silently otherwise)
      const bool consumer = c.role == "consumer";
      std::fprintf(stderr, "sluice bench: the %s side, on stream %s at %s: %s\n", c.role.c_str(), edge.stream.c_str(),
                   js::shown_url(c.via).c_str(),
                   consumer ? "waiting for the producer's items (the same command with --role producer sends them)"
                            : "publishing; the same command with --role consumer takes the items");
    }
    const side_result r = run_side(c, conn, edge, &*signals);
    if (!c.result.empty()) {
      write_result(r, c.result);  // the orchestrating run judges it, interrupted or not
      return r.interrupted != 0 ? 128 + r.interrupted : 0;
    }
    print_sides(c, edge, {r});
    if (r.interrupted != 0) {
      std::fflush(stdout);
      std::fprintf(stderr, "sluice bench: interrupted by %s; the %s side stopped; stream %s is kept on %s\n",
                   ::strsignal(r.interrupted), c.role.c_str(), edge.stream.c_str(), js::shown_url(c.via).c_str());
      return 128 + r.interrupted;
    }
    return r.items < r.expected ? 1 : 0;
  }
  // A stream that already holds messages (left by a run that was killed, or in use by
  // another) would be counted as this run's items: a probe's run reported 3,000 items in
  // 0.09 s, all an earlier run's, exit 0, and then removed its own unread ones with the
  // stream. Refused, and the stream is left as it was.
  if (const js::edge_state there = js::inspect_edge(conn, edge); there.msgs != 0) {
    throw std::runtime_error("sluice bench: stream " + edge.stream + " on " + js::shown_url(c.via) + " already holds " +
                             std::to_string(there.msgs) +
                             " messages (left by an earlier run that was killed, or another run's): they would be "
                             "counted as this run's items; remove the stream, or give --stream NAME");
  }
  // Both sides, each in a process of its own (this program, run twice).
  char exe[4096];
  const ssize_t n = ::readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  if (n <= 0) throw std::runtime_error("sluice bench: cannot find this program (/proc/self/exe)");
  exe[n] = '\0';
  // Each side hands its result back in a file with no name (a memfd), so nothing is left
  // on disk whatever ends this process: a temporary directory was left in /tmp by a SIGKILL.
  const result_file pres("producer"), cres("consumer");
  auto remove_edge = [&] {
    try {
      js::remove_edge(conn, edge);
    } catch (const std::exception& ex) {
      std::fprintf(stderr, "sluice bench: %s\n", ex.what());
    }
  };
  const pid_t cons = run_child(c, exe, "consumer", cres.fd());
  const pid_t prod = run_child(c, exe, "producer", pres.fd());
  // Whichever side ends first: if it failed, the other cannot finish (a consumer gone leaves
  // the producer blocked on a full edge for ever), so it is stopped.
  int failed = 0;
  bool said_why = false;  // why the side failed is said here (it printed nothing itself)
  int interrupted = 0;    // the signal that stopped the run
  std::map<pid_t, std::string> running = {{prod, "producer"}, {cons, "consumer"}};
  auto take_signal = [&](std::chrono::milliseconds wait) {
    const int sig = signals->take(wait);
    if (sig > 0 && interrupted == 0) {
      interrupted = sig;
      for (const auto& [other, name] : running) ::kill(other, SIGTERM);
    }
  };
  while (!running.empty()) {
    int st = 0;
    const pid_t p = ::waitpid(-1, &st, WNOHANG);
    if (p < 0) {
      if (errno == EINTR) continue;
      break;  // ECHILD: none left
    }
    if (p == 0) {
      take_signal(std::chrono::milliseconds(50));
      continue;
    }
    take_signal(std::chrono::milliseconds(0));  // a ^C reaches the sides too: one that died of it is the interrupt's
    const auto it = running.find(p);
    if (it == running.end()) continue;
    const std::string side = it->second;
    running.erase(it);
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0) continue;
    if (failed != 0 || interrupted != 0) continue;  // stopped here
    failed = 1;
    // Say why, unless the side said it itself (its error, on the stderr it shares).
    if (WIFSIGNALED(st)) {
      std::fprintf(stderr, "sluice bench: the %s side ended on signal %d\n", side.c_str(), WTERMSIG(st));
      said_why = true;
    } else if (WEXITSTATUS(st) > 128 && WEXITSTATUS(st) < 128 + NSIG) {
      // A signal sent to that side alone (kill, a supervisor), not to this process: it
      // stopped in order and handed in its figures, printing nothing (the parent prints).
      std::fprintf(stderr, "sluice bench: the %s side was stopped by %s sent to it alone\n", side.c_str(),
                   ::strsignal(WEXITSTATUS(st) - 128));
      said_why = true;
    } else if (WEXITSTATUS(st) == 127) {
      std::fprintf(stderr, "sluice bench: the %s side could not be started (%s)\n", side.c_str(), exe);
      said_why = true;
    }
    for (const auto& [other, name] : running) ::kill(other, SIGTERM);
  }
  if (interrupted != 0) {
    remove_edge();
    // What each side did before it stopped (a side killed before it could say is left out).
    std::vector<side_result> sides;
    for (const result_file* f : {&pres, &cres}) {
      if (side_result r = read_result(f->path()); !r.side.empty()) sides.push_back(std::move(r));
    }
    if (!sides.empty()) {
      print_sides(c, edge, sides);
      std::printf("(interrupted by %s: the figures are of what each side did before it stopped)\n",
                  ::strsignal(interrupted));
      std::fflush(stdout);
    }
    std::fprintf(stderr, "sluice bench: interrupted by %s; both sides stopped, stream %s removed\n",
                 ::strsignal(interrupted), edge.stream.c_str());
    return 128 + interrupted;
  }
  signals.reset();  // the old mask back: a ^C from here on ends the process as usual
  if (failed) {
    remove_edge();
    if (said_why) {
      std::fprintf(stderr, "sluice bench: a side of the cut failed; the other was stopped, stream %s removed\n",
                   edge.stream.c_str());
    } else {
      std::fprintf(stderr, "sluice bench: a side of the cut failed (its error is above)\n");
    }
    return 1;
  }
  const side_result prod_r = read_result(pres.path()), cons_r = read_result(cres.path());
  print_sides(c, edge, {prod_r, cons_r});
  if (cons_r.items < c.items) {
    // Something was lost: the stream stays for a look (nats stream view ...).
    std::fprintf(stderr, "sluice bench: the consumer got %llu of %llu items; stream %s is kept on %s\n",
                 static_cast<unsigned long long>(cons_r.items), static_cast<unsigned long long>(c.items),
                 edge.stream.c_str(), js::shown_url(c.via).c_str());
    return 1;
  }
  remove_edge();
  return 0;
}

}  // namespace sluice::tool::bench

#endif  // SLUICE_HAVE_JETSTREAM
