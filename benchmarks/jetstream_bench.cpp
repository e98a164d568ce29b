// sluice_bench_jetstream: sluice's JetStream edge against raw libnats, in one run, on one
// nats-server this program starts (127.0.0.1, a free port, a temporary file store).
// `./dev bench jetstream` runs it; benchmarks/README.md has the table and the targets.
//
//   sluice_bench_jetstream [--items N] [--rounds R] [--scale-items M] [--rss-items K]
//                          [--only throughput|scale|rss]
//
// 1. Throughput, 64-byte items, file storage, each round alternating raw and sluice:
//    - publish: raw `js_PublishAsync` (MaxPending = the window, a Nats-Msg-Id on each
//      message, as sluice sends) against a pipeline `from -> jetstream::publish` with the
//      same window; both wait for every acknowledgement.
//    - fetch: raw `natsSubscription_Fetch` of the same batch from the edge's durable
//      consumer, each message acked with `natsMsg_Ack` (no confirmation), against a
//      pipeline `jetstream::subscribe -> into(ack)`, with plain acks (confirm_acks =
//      false, what raw does) and with sluice's default, confirmed acks (double ack).
//    Each direction starts from the same state: an empty stream (publish) or one holding
//    N messages (fetch).
// 2. Scale-out: M messages in the stream, then 1, 2 and 4 consumer processes (this
//    program again, `--consumer`) on the same durable consumer, each sink sleeping 1 ms per
//    item, then acking. The processes connect first and start together; the rate is M over
//    the time until the stream is empty.
// 3. Memory: K messages in the stream; one consumer process with a 1 ms sink takes from
//    it while its RSS (VmRSS) is sampled every 100 ms for 5 s.
#include <fcntl.h>
#include <nats/nats.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "nats_server.hpp"  // tests/jetstream: the server helper the tests use
#include "sluice/jetstream.hpp"
#include "sluice/pipeline.hpp"

namespace js = sluice::jetstream;
using clock_type = std::chrono::steady_clock;

namespace {

constexpr std::size_t kItem = 64;
constexpr std::size_t kWindow = 256;  // publish: unacknowledged messages at most (both sides)
constexpr int kBatch = 256;           // fetch: messages per pull request (both sides)

double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

void check(natsStatus s, const char* what) {
  if (s != NATS_OK) throw std::runtime_error(std::string(what) + ": " + natsStatus_GetText(s));
}

js::edge_options edge_named(const std::string& stream, std::int64_t max_msgs) {
  return js::edge_options{.stream = stream, .max_msgs = max_msgs, .store = js::storage::file,
                          .max_ack_pending = 100000};
}

std::string payload(std::uint64_t i) {
  std::string v(kItem, 'x');
  std::memcpy(v.data(), &i, sizeof i);
  return v;
}

// ---- raw libnats --------------------------------------------------------------------

struct raw_conn {
  natsConnection* nc = nullptr;
  jsCtx* js = nullptr;
  explicit raw_conn(const std::string& url) {
    check(natsConnection_ConnectTo(&nc, url.c_str()), "raw connect");
    jsOptions o;
    jsOptions_Init(&o);
    o.PublishAsync.MaxPending = static_cast<int64_t>(kWindow);
    check(natsConnection_JetStream(&js, nc, &o), "raw JetStream context");
  }
  ~raw_conn() {
    jsCtx_Destroy(js);
    natsConnection_Close(nc);
    natsConnection_Destroy(nc);
  }
  raw_conn(const raw_conn&) = delete;
  raw_conn& operator=(const raw_conn&) = delete;
};

double raw_publish(const std::string& url, const js::edge_options& e, std::uint64_t n) {
  raw_conn c(url);
  const std::string subject = e.stream;  // edge_options::subject defaults to the stream's name
  const std::string producer = "raw-" + std::to_string(::getpid());
  const auto t0 = clock_type::now();
  for (std::uint64_t i = 0; i < n; ++i) {
    const std::string v = payload(i);
    const std::string id = producer + "-" + std::to_string(i);
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MsgId = id.c_str();
    check(js_PublishAsync(c.js, subject.c_str(), v.data(), static_cast<int>(v.size()), &po), "js_PublishAsync");
  }
  jsPubOptions po;
  jsPubOptions_Init(&po);
  po.MaxWait = 60000;
  check(js_PublishAsyncComplete(c.js, &po), "js_PublishAsyncComplete");
  const double s = seconds_since(t0);
  natsMsgList failed{};
  if (js_PublishAsyncGetPendingList(&failed, c.js) == NATS_OK && failed.Count > 0) {
    natsMsgList_Destroy(&failed);
    throw std::runtime_error("raw publish: messages left unacknowledged");
  }
  return static_cast<double>(n) / s;
}

double raw_fetch(const std::string& url, const js::edge_options& e, std::uint64_t n) {
  raw_conn c(url);
  jsSubOptions so;
  jsSubOptions_Init(&so);
  so.Stream = e.stream.c_str();
  so.Consumer = e.stream.c_str();  // edge_options::durable defaults to the stream's name
  natsSubscription* sub = nullptr;
  jsErrCode jerr{};
  check(js_PullSubscribe(&sub, c.js, e.stream.c_str(), e.stream.c_str(), nullptr, &so, &jerr), "js_PullSubscribe");
  check(natsSubscription_SetPendingLimits(sub, -1, -1), "pending limits");
  const auto t0 = clock_type::now();
  std::uint64_t got = 0;
  while (got < n) {
    natsMsgList list{};
    const natsStatus s = natsSubscription_Fetch(&list, sub, kBatch, 5000, &jerr);
    if (s == NATS_TIMEOUT) throw std::runtime_error("raw fetch: no message for 5 s");
    check(s, "natsSubscription_Fetch");
    for (int i = 0; i < list.Count; ++i) check(natsMsg_Ack(list.Msgs[i], nullptr), "natsMsg_Ack");
    got += static_cast<std::uint64_t>(list.Count);
    natsMsgList_Destroy(&list);
  }
  // The acks are plain publishes: one round trip makes sure the server has them all.
  check(natsConnection_FlushTimeout(c.nc, 10000), "flush");
  const double s = seconds_since(t0);
  natsSubscription_Unsubscribe(sub);
  check(natsConnection_FlushTimeout(c.nc, 10000), "flush");  // see runtime/jetstream: retire before destroy
  natsSubscription_Destroy(sub);
  return static_cast<double>(n) / s;
}

// ---- sluice ---------------------------------------------------------------------------

double sluice_publish(js::connection& conn, const js::edge_options& e, std::uint64_t n) {
  auto pc = std::make_shared<js::publish_counters>();
  const auto t0 = clock_type::now();
  sluice::pipeline(sluice::from<std::string>([&](sluice::sender<std::string>& out) {
                     for (std::uint64_t i = 0; i < n; ++i) {
                       if (!out.push(payload(i))) return;
                     }
                   }),
                   js::publish<std::string>(conn, e, {.window = kWindow, .counters = pc}))
      .run();
  const double s = seconds_since(t0);
  if (pc->acked.load() != n) throw std::runtime_error("sluice publish: acked " + std::to_string(pc->acked.load()));
  return static_cast<double>(n) / s;
}

// Takes n messages through a subscribe stage whose sink acks each; `sleep` per item.
std::uint64_t sluice_consume(js::connection& conn, const js::edge_options& e, std::uint64_t n,
                             std::chrono::microseconds sleep, std::size_t batch, std::size_t capacity,
                             bool confirm = true) {
  std::uint64_t got = 0;
  sluice::pipeline(js::subscribe<std::string>(conn, e, {.batch = batch, .confirm_acks = confirm}, {.capacity = capacity}),
                   sluice::into([&](js::delivery<std::string> d) -> bool {
                     if (sleep.count() > 0) std::this_thread::sleep_for(sleep);  // the sink's work
                     d.ack();
                     return ++got < n;
                   }))
      .run();
  return got;
}

double sluice_fetch(js::connection& conn, const js::edge_options& e, std::uint64_t n, bool confirm) {
  const auto t0 = clock_type::now();
  const std::uint64_t got = sluice_consume(conn, e, n, {}, kBatch, 1024, confirm);
  const double s = seconds_since(t0);
  if (got != n) throw std::runtime_error("sluice fetch: got " + std::to_string(got));
  return static_cast<double>(n) / s;
}

// ---- helpers ------------------------------------------------------------------------

// Fills the edge's stream with n messages (sluice's publish: fast enough, and checked).
void fill(js::connection& conn, const js::edge_options& e, std::uint64_t n) { sluice_publish(conn, e, n); }

bool wait_until_empty(js::connection& conn, const js::edge_options& e, std::chrono::seconds limit) {
  const auto deadline = clock_type::now() + limit;
  while (js::inspect_edge(conn, e).msgs != 0) {
    if (clock_type::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));  // polling the server, not synchronising
  }
  return true;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

long rss_kib(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::strtol(line.c_str() + 6, nullptr, 10);
  }
  return -1;
}

// A consumer process: this program with --consumer. It connects, writes "r" to its
// stdout pipe, waits for one byte on stdin, then consumes until killed.
struct consumer_proc {
  pid_t pid = -1;
  int to_child = -1, from_child = -1;
};

consumer_proc spawn_consumer(const std::string& url, const std::string& stream, int sleep_us, std::size_t batch,
                             std::size_t capacity) {
  int in[2], out[2];
  if (::pipe(in) != 0 || ::pipe(out) != 0) throw std::runtime_error("pipe failed");
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(1);
    ::dup2(in[0], 0);
    ::dup2(out[1], 1);
    ::close(in[1]);
    ::close(out[0]);
    const std::string sl = std::to_string(sleep_us), b = std::to_string(batch), cap = std::to_string(capacity);
    ::execl("/proc/self/exe", "sluice_bench_jetstream", "--consumer", url.c_str(), stream.c_str(), sl.c_str(),
            b.c_str(), cap.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(in[0]);
  ::close(out[1]);
  consumer_proc p{pid, in[1], out[0]};
  char r = 0;
  if (::read(p.from_child, &r, 1) != 1 || r != 'r') throw std::runtime_error("consumer process did not start");
  return p;
}

void go(const consumer_proc& p) {
  const char g = 'g';
  if (::write(p.to_child, &g, 1) != 1) throw std::runtime_error("consumer process gone");
}

void stop(consumer_proc& p) {
  ::kill(p.pid, SIGKILL);  // its unacknowledged messages go back to the stream (ack_wait)
  int st = 0;
  ::waitpid(p.pid, &st, 0);
  ::close(p.to_child);
  ::close(p.from_child);
  p.pid = -1;
}

int consumer_main(int argc, char** argv) {
  if (argc < 7) return 2;
  const std::string url = argv[2], stream = argv[3];
  const int sleep_us = std::atoi(argv[4]);
  const auto batch = static_cast<std::size_t>(std::atoll(argv[5]));
  const auto capacity = static_cast<std::size_t>(std::atoll(argv[6]));
  auto conn = js::connect(url);
  const auto e = edge_named(stream, 1);  // limits are not checked by subscribe
  if (::write(1, "r", 1) != 1) return 1;
  char g = 0;
  if (::read(0, &g, 1) != 1) return 1;
  sluice_consume(conn, e, UINT64_MAX, std::chrono::microseconds(sleep_us), batch, capacity);
  return 0;
}

// ---- the three parts ----------------------------------------------------------------

void throughput(const std::string& url, js::connection& conn, std::uint64_t n, int rounds) {
  std::printf("\n## throughput: %zu-byte items, file storage, window %zu, batch %d, %llu items per run\n\n", kItem,
              kWindow, kBatch, static_cast<unsigned long long>(n));
  std::printf("Items per second. fetch: raw acks with natsMsg_Ack (plain); sluice with plain acks\n");
  std::printf("(confirm_acks = false) and with its default, confirmed acks (double ack).\n\n");
  std::printf("| round | publish raw | publish sluice | ratio | fetch raw | fetch sluice plain | ratio | "
              "fetch sluice confirmed | ratio |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|\n");
  // Per column: the rates, then the three ratios against raw.
  std::vector<double> pr, ps, fr, fp, fc, rps, rfp, rfc;
  for (int r = 0; r < rounds; ++r) {
    const auto e = edge_named("tp" + std::to_string(r), static_cast<std::int64_t>(n) + 16);
    double rp = 0, sp = 0, rf = 0, sfp = 0, sfc = 0;
    // Alternate which goes first, so a drift in the machine's speed favours neither.
    for (int k = 0; k < 3; ++k) {
      const int which = (k + r) % 3;  // 0 raw, 1 sluice plain, 2 sluice confirmed
      js::remove_edge(conn, e);
      js::ensure_edge(conn, e);
      if (which == 0) {
        rp = raw_publish(url, e, n);
        rf = raw_fetch(url, e, n);
      } else if (which == 1) {
        sp = sluice_publish(conn, e, n);
        sfp = sluice_fetch(conn, e, n, false);
      } else {
        fill(conn, e, n);
        sfc = sluice_fetch(conn, e, n, true);
      }
      if (!wait_until_empty(conn, e, std::chrono::seconds(30))) throw std::runtime_error("stream not emptied");
    }
    js::remove_edge(conn, e);
    pr.push_back(rp), ps.push_back(sp), fr.push_back(rf), fp.push_back(sfp), fc.push_back(sfc);
    rps.push_back(sp / rp), rfp.push_back(sfp / rf), rfc.push_back(sfc / rf);
    std::printf("| %d | %.0f | %.0f | %.2f | %.0f | %.0f | %.2f | %.0f | %.2f |\n", r + 1, rp, sp, sp / rp, rf, sfp,
                sfp / rf, sfc, sfc / rf);
    std::fflush(stdout);
  }
  std::printf("| median | %.0f | %.0f | **%.2f** | %.0f | %.0f | **%.2f** | %.0f | **%.2f** |\n", median(pr),
              median(ps), median(rps), median(fr), median(fp), median(rfp), median(fc), median(rfc));
  std::printf("\ntarget: sluice >= 0.80 x raw libnats, both directions\n");
}

void scale_out(const std::string& url, js::connection& conn, std::uint64_t m) {
  constexpr int kSleepUs = 1000;
  constexpr std::size_t kConsumerBatch = 8, kConsumerCapacity = 8;
  std::printf("\n## scale-out: %llu messages, consumer processes on one durable consumer, sink 1 ms per item\n\n",
              static_cast<unsigned long long>(m));
  std::printf("(each consumer: batch %zu, output capacity %zu)\n\n", kConsumerBatch, kConsumerCapacity);
  std::printf("| consumers | seconds | items/s | vs 1 consumer |\n|---|---|---|---|\n");
  double one = 0;
  for (int k : {1, 2, 4}) {
    const auto e = edge_named("scale" + std::to_string(k), static_cast<std::int64_t>(m) + 16);
    js::remove_edge(conn, e);
    js::ensure_edge(conn, e);
    fill(conn, e, m);
    std::vector<consumer_proc> procs;
    for (int i = 0; i < k; ++i) procs.push_back(spawn_consumer(url, e.stream, kSleepUs, kConsumerBatch, kConsumerCapacity));
    const auto t0 = clock_type::now();
    for (auto& p : procs) go(p);
    const bool empty = wait_until_empty(conn, e, std::chrono::seconds(120));
    const double s = seconds_since(t0);
    for (auto& p : procs) stop(p);
    js::remove_edge(conn, e);
    if (!empty) throw std::runtime_error("scale-out: the stream was not emptied in 120 s");
    const double rate = static_cast<double>(m) / s;
    if (k == 1) one = rate;
    std::printf("| %d | %.2f | %.0f | %.2fx |\n", k, s, rate, rate / one);
    std::fflush(stdout);
  }
  std::printf("\ntargets: >= 1.8x with 2 consumers, >= 3.2x with 4\n");
}

void memory(const std::string& url, js::connection& conn, std::uint64_t k) {
  std::printf("\n## memory: a consumer process (sink 1 ms per item) while the stream holds %llu messages\n\n",
              static_cast<unsigned long long>(k));
  const auto e = edge_named("rss", static_cast<std::int64_t>(k) + 16);
  js::remove_edge(conn, e);
  js::ensure_edge(conn, e);
  const auto t_fill = clock_type::now();
  fill(conn, e, k);
  std::printf("filled in %.1f s\n\n", seconds_since(t_fill));
  auto p = spawn_consumer(url, e.stream, 1000, kBatch, 1024);
  const long before = rss_kib(p.pid);
  go(p);
  std::vector<long> samples;
  for (int i = 0; i < 50; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));  // the sampling period
    samples.push_back(rss_kib(p.pid));
  }
  const auto st = js::inspect_edge(conn, e);
  stop(p);
  js::remove_edge(conn, e);
  const auto [lo, hi] = std::minmax_element(samples.begin() + 5, samples.end());
  std::printf("| connected, before the first fetch | after 0.5 s | 0.5 s .. 5 s: min | max | stream at the end |\n");
  std::printf("|---|---|---|---|---|\n");
  std::printf("| %ld KiB | %ld KiB | %ld KiB | %ld KiB | %llu messages |\n", before, samples[4], *lo, *hi,
              static_cast<unsigned long long>(st.msgs));
}

// A flag's value as a whole positive number, or nullopt (the caller names the flag).
std::optional<std::uint64_t> positive(std::string_view v) {
  std::uint64_t n = 0;
  const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  if (ec != std::errc{} || end != v.data() + v.size() || n == 0) return std::nullopt;
  return n;
}

int usage_error(const std::string& why) {
  std::fprintf(stderr,
               "sluice_bench_jetstream: %s\n"
               "usage: sluice_bench_jetstream [--items N] [--rounds R] [--scale-items M] [--rss-items K]"
               " [--only throughput|scale|rss]\n",
               why.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::strcmp(argv[1], "--consumer") == 0) return consumer_main(argc, argv);
  std::uint64_t items = 200000, scale_items = 4000, rss_items = 1000000, rounds = 3;
  std::string only;
  for (int i = 1; i < argc; i += 2) {
    const std::string a = argv[i];
    std::uint64_t* number = a == "--items"         ? &items
                            : a == "--rounds"      ? &rounds
                            : a == "--scale-items" ? &scale_items
                            : a == "--rss-items"   ? &rss_items
                                                   : nullptr;
    if (number == nullptr && a != "--only") return usage_error("unknown flag " + a);
    if (i + 1 >= argc) return usage_error(a + " needs a value");
    const std::string v = argv[i + 1];
    if (number == nullptr) {
      if (v != "throughput" && v != "scale" && v != "rss") {
        return usage_error("--only " + v + ": expected throughput, scale or rss");
      }
      only = v;
      continue;
    }
    const auto n = positive(v);
    if (!n || (number == &rounds && *n > 1000)) {
      return usage_error(a + " " + v + ": expected a whole number" + (number == &rounds ? " from 1 to 1000" : " above 0"));
    }
    *number = *n;
  }
  if (!sluice_test::nats_server::available()) {
    std::fprintf(stderr, "sluice_bench_jetstream: nats-server not found (Debian: nats-server)\n");
    return 2;
  }
  try {
    sluice_test::nats_server server;
    auto conn = js::connect(server.url());
    std::printf("# sluice_bench_jetstream: nats-server -js on %s, store %s, %u cores\n", server.url().c_str(),
                server.dir().c_str(), std::thread::hardware_concurrency());
    if (only.empty() || only == "throughput") throughput(server.url(), conn, items, static_cast<int>(rounds));
    if (only.empty() || only == "scale") scale_out(server.url(), conn, scale_items);
    if (only.empty() || only == "rss") memory(server.url(), conn, rss_items);
  } catch (const std::exception& ex) {
    std::fprintf(stderr, "sluice_bench_jetstream: %s\n", ex.what());
    return 1;
  }
  js::shutdown();
  return 0;
}
