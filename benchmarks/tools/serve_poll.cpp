// serve_poll URL [INTERVAL_MS] — a scraper that costs next to nothing, for
// benchmarks/serve_cost.sh: one kept-alive connection, GET /snapshot.json and /metrics
// every INTERVAL_MS (default 100) until the server goes away; prints how many rounds it
// made and the bytes read. A Python poller cost the 2-core machine as much CPU as the
// server it was measuring; this one spends microseconds a round.
#include <httplib.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: serve_poll http://HOST:PORT/ [INTERVAL_MS]\n");
    return 2;
  }
  std::string url = argv[1];
  const int interval_ms = argc > 2 ? std::atoi(argv[2]) : 100;
  if (url.rfind("http://", 0) != 0 || interval_ms <= 0) {
    std::fprintf(stderr, "serve_poll: want http://HOST:PORT/ and a positive interval\n");
    return 2;
  }
  std::string host_port = url.substr(7);
  if (auto slash = host_port.find('/'); slash != std::string::npos) host_port.resize(slash);
  httplib::Client cli("http://" + host_port);
  cli.set_keep_alive(true);
  cli.set_connection_timeout(std::chrono::seconds(2));
  cli.set_read_timeout(std::chrono::seconds(5));
  long rounds = 0, bytes = 0;
  auto next = std::chrono::steady_clock::now();
  for (;;) {
    auto a = cli.Get("/snapshot.json");
    if (!a || a->status != 200) break;  // the bench ended and its server with it
    auto b = cli.Get("/metrics");
    if (!b || b->status != 200) break;
    bytes += static_cast<long>(a->body.size() + b->body.size());
    ++rounds;
    next += std::chrono::milliseconds(interval_ms);
    std::this_thread::sleep_until(next);
  }
  std::printf("%ld %ld\n", rounds, bytes);
  return 0;
}
