// sluice_jetstream_peer: one side of an edge in its own process, for the fault tests
// (tests/jetstream/fault_test.cpp kills and restarts it).
//
//   sluice_jetstream_peer produce URL STREAM PRODUCER_ID N SLEEP_US
//       publishes the values 0..N-1 (sequence = value: a deterministic source, so a
//       restarted producer re-publishes the same ids and the server drops what it has);
//       prints "acked A duplicates D" at the end.
//   sluice_jetstream_peer consume URL STREAM N LOG SLEEP_US
//       the sink appends "id value deliveries" to LOG (its side effect, one write(2)),
//       then acks; it ends once LOG holds N distinct ids (read at start too, so a
//       restarted consumer continues: the sink de-duplicates by id()) and the stream holds
//       nothing more: a killed consumer may have logged an item whose ack never left it,
//       and that item's redelivery is taken (and logged) too, not left in the stream.
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <thread>

#include "sluice/jetstream.hpp"
#include "sluice/pipeline.hpp"

namespace js = sluice::jetstream;

namespace {

int produce(const std::string& url, const std::string& stream, const std::string& id, std::uint64_t n, int sleep_us) {
  auto conn = js::connect(url);
  js::edge_options e{.stream = stream};
  auto pc = std::make_shared<js::publish_counters>();
  sluice::pipeline(sluice::from<std::uint64_t>([&](sluice::sender<std::uint64_t>& out) {
                     for (std::uint64_t i = 0; i < n; ++i) {
                       if (sleep_us > 0) std::this_thread::sleep_for(std::chrono::microseconds(sleep_us));
                       if (!out.push(i)) return;
                     }
                   }),
                   js::publish<std::uint64_t>(conn, e, {.producer_id = id, .window = 64, .counters = pc}))
      .run();
  std::printf("acked %llu duplicates %llu\n", static_cast<unsigned long long>(pc->acked.load()),
              static_cast<unsigned long long>(pc->duplicates.load()));
  return 0;
}

int consume(const std::string& url, const std::string& stream, std::size_t n, const std::string& log, int sleep_us) {
  std::set<std::string> seen;
  {
    std::ifstream in(log);
    std::string line;
    while (std::getline(in, line)) {
      std::istringstream f(line);
      std::string id;
      if (f >> id) seen.insert(id);
    }
  }
  if (seen.size() >= n) return 0;
  const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  if (fd < 0) {
    std::perror("open log");
    return 1;
  }
  auto conn = js::connect(url);
  js::edge_options e{.stream = stream};
  std::atomic<std::size_t> distinct{seen.size()};
  sluice::pipeline p(js::subscribe<std::uint64_t>(conn, e, {}, {.capacity = 64}),
                     sluice::into([&](js::delivery<std::uint64_t> d) {
                       if (sleep_us > 0) std::this_thread::sleep_for(std::chrono::microseconds(sleep_us));
                       const std::string line =
                           d.id() + " " + std::to_string(d.value()) + " " + std::to_string(d.deliveries()) + "\n";
                       if (::write(fd, line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
                         throw std::runtime_error("log write failed");
                       }
                       seen.insert(d.id());
                       d.ack();
                       distinct.store(seen.size(), std::memory_order_relaxed);
                     }));
  p.start();
  // Every wait here is bounded by the caller (it kills this process after its timeout).
  bool stopping = false;
  while (!p.get_graph().wait_for(std::chrono::milliseconds(20))) {
    if (!stopping && distinct.load(std::memory_order_relaxed) >= n && js::inspect_edge(conn, e).msgs == 0) {
      p.request_stop();
      stopping = true;
    }
  }
  ::close(fd);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::string role = argc > 1 ? argv[1] : "";
    if (role == "produce" && argc == 7) {
      const int rc = produce(argv[2], argv[3], argv[4], std::stoull(argv[5]), std::stoi(argv[6]));
      js::shutdown();
      return rc;
    }
    if (role == "consume" && argc == 7) {
      const int rc = consume(argv[2], argv[3], std::stoull(argv[4]), argv[5], std::stoi(argv[6]));
      js::shutdown();
      return rc;
    }
    std::fprintf(stderr, "usage: %s produce URL STREAM PRODUCER_ID N SLEEP_US | consume URL STREAM N LOG SLEEP_US\n",
                 argv[0]);
    return 2;
  } catch (const std::exception& ex) {
    std::fprintf(stderr, "sluice_jetstream_peer: %s\n", ex.what());
    return 1;
  }
}
