// ingest_server — sluice embedded in an HTTP server (README "Embedding in a server").
//
//   ingest_server [--port P] [--out FILE] [--capacity N] [--write-us U]
//
// POST /ingest   one record per request body; 200 once the graph has accepted it,
//                503 when the graph is full (the client retries later) or ending.
// GET  /metrics  the graph's snapshot in Prometheus text format.
//
// The graph: ingest (an inlet fed by the server's handler threads) -> parse -> enrich
// (2 replicas, ordered) -> write (appends one line per record to FILE, flushed in
// batches). SIGTERM or SIGINT: the server stops accepting, request_stop() closes the
// inlet, every accepted record drains to FILE, and the process prints
// "accepted N written M delay-ms max D mean E" (D, E: how long written records waited
// between their 200 and their write) and exits 0 (1 if the graph failed). --write-us
// makes each write take U more microseconds, as a slow store would. A graph that fails on its
// own (FILE on a full disk) ends the server too: on_done tells it, no thread blocks in
// wait() to find out.
#include <httplib.h>
#include <signal.h>

#include <sluice/graph.hpp>
#include <sluice/metrics.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <string>
#include <string_view>
#include <thread>

namespace {

using clock_type = std::chrono::steady_clock;

struct request {
  std::string body;
  clock_type::time_point accepted;  // when the handler's push succeeded
};

struct record {
  std::string body;
  clock_type::time_point accepted;
  std::size_t length = 0;
};

int arg_int(int argc, char** argv, std::string_view flag, int fallback) {
  for (int i = 1; i + 1 < argc; ++i) {
    if (argv[i] == flag) return std::atoi(argv[i + 1]);
  }
  return fallback;
}

std::string arg_str(int argc, char** argv, std::string_view flag, std::string fallback) {
  for (int i = 1; i + 1 < argc; ++i) {
    if (argv[i] == flag) return argv[i + 1];
  }
  return fallback;
}

}  // namespace

int main(int argc, char** argv) {
  const int port = arg_int(argc, argv, "--port", 0);
  const std::string out_path = arg_str(argc, argv, "--out", "ingest.log");
  const auto capacity = static_cast<std::size_t>(arg_int(argc, argv, "--capacity", 1024));
  const auto write_cost = std::chrono::microseconds(arg_int(argc, argv, "--write-us", 0));

  // Block SIGINT/SIGTERM before any thread exists: every thread (httplib's handlers,
  // the graph's stage threads) inherits the mask, so only sigwait() below sees them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  std::ofstream out(out_path, std::ios::app);
  if (!out) {
    std::fprintf(stderr, "ingest_server: cannot open %s\n", out_path.c_str());
    return 2;
  }

  httplib::Server server;
  std::atomic<bool> failed{false}, graph_ended{false};
  sluice::graph g({.on_done = [&](const sluice::report&, std::exception_ptr error) {
    // Runs once, after every stage thread is joined: a graph that ended by itself
    // (a failed writer) ends the server, and nobody had to block in wait() for it.
    if (error) failed = true;
    graph_ended = true;
  }});

  auto [inlet, requests] = g.input<request>("ingest", {.capacity = capacity});
  auto parsed = g.map("parse", requests, [](request q) {
    return record{std::move(q.body), q.accepted, 0};
  }, {.capacity = capacity});
  auto enriched = g.map("enrich", parsed, [](record r) {
    r.length = r.body.size();
    return r;
  }, {.capacity = capacity, .replicas = 2, .ordered = true});
  std::atomic<long> written{0};
  clock_type::duration delay_max{0}, delay_sum{0};  // only the sink's thread touches these
  g.sink("write", enriched, [&](record r) {
    if (write_cost.count() > 0) std::this_thread::sleep_for(write_cost);  // a slow store
    out << r.body << '\t' << r.length << '\n';
    if (!out) throw std::runtime_error("write to " + out_path + " failed");
    const auto waited = clock_type::now() - r.accepted;
    delay_max = std::max(delay_max, waited);
    delay_sum += waited;
    if (written.fetch_add(1, std::memory_order_relaxed) % 256 == 255) out.flush();
  }, {.on_close = [&] { out.flush(); }});
  g.start();

  std::atomic<long> accepted{0};
  server.new_task_queue = [] { return new httplib::ThreadPool(8); };
  server.Post("/ingest", [&, inlet = inlet](const httplib::Request& req, httplib::Response& res) {
    // One inlet object, many handler threads at once. try_push never blocks a handler:
    // a full graph answers 503 at once, and the record stays with the caller.
    switch (inlet.try_push(request{req.body, clock_type::now()})) {
      case sluice::status::ok:
        accepted.fetch_add(1, std::memory_order_relaxed);
        res.set_content("ok\n", "text/plain");
        return;
      case sluice::status::full:
        res.status = 503;
        res.set_header("Retry-After", "1");
        res.set_content("full\n", "text/plain");
        return;
      default:
        res.status = 503;
        res.set_content("ending\n", "text/plain");
        return;
    }
  });
  server.Get("/metrics", [&](const httplib::Request&, httplib::Response& res) {
    res.set_content(sluice::metrics::to_prometheus(g.snapshot()), "text/plain; version=0.0.4");
  });

  const int bound = port == 0 ? server.bind_to_any_port("127.0.0.1") : (server.bind_to_port("127.0.0.1", port) ? port : -1);
  if (bound < 0) {
    std::fprintf(stderr, "ingest_server: cannot listen on 127.0.0.1:%d\n", port);
    g.cancel();
    return 2;
  }
  std::printf("listening on 127.0.0.1:%d\n", bound);
  std::fflush(stdout);

  // The listener serves on its own thread; this thread waits for SIGTERM/SIGINT, or for
  // the graph to end by itself (on_done), then stops the listener and drains.
  std::atomic<bool> listener_done{false};
  std::thread listener([&] {
    server.listen_after_bind();
    listener_done = true;
  });
  while (!graph_ended.load()) {
    timespec tick{0, 100'000'000};
    if (sigtimedwait(&stop_signals, nullptr, &tick) > 0) break;
  }
  while (!listener_done.load()) {  // stop() is a no-op until listen has begun: repeat
    server.stop();
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  listener.join();

  g.request_stop();  // closes the inlet; everything accepted drains to FILE
  try {
    g.wait();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ingest_server: %s\n", e.what());
    failed = true;
  }
  const auto ms = [](clock_type::duration d) { return std::chrono::duration<double, std::milli>(d).count(); };
  const long n = written.load();
  std::printf("accepted %ld written %ld delay-ms max %.1f mean %.1f\n", accepted.load(), n, ms(delay_max),
              n > 0 ? ms(delay_sum) / static_cast<double>(n) : 0.0);
  return failed ? 1 : 0;
}
