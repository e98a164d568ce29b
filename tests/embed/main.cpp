// Built by an embedding project (add_subdirectory or find_package): the library links,
// a channel works, and sluice/testing.hpp (part of sluice::sluice) stresses a graph.
#include <sluice/channel.hpp>
#include <sluice/graph.hpp>
#include <sluice/testing.hpp>

#include <thread>

int main() {
  auto [tx, rx] = sluice::bounded<int>(4);
  std::thread producer([tx = std::move(tx)]() mutable {
    for (int i = 0; i < 1000; ++i) tx.push(i);
  });
  long sum = 0;
  for (int& v : rx) sum += v;
  producer.join();
  if (sum != 999L * 1000 / 2) return 1;

  sluice::testing::stress_options o;
  o.runs = 3;
  const auto r = sluice::testing::stress([](sluice::graph& g) {
    auto s = g.source<int>("count", [](sluice::sender<int>& out, std::stop_token stop) {
      for (int i = 0; i < 100 && !stop.stop_requested(); ++i) {
        if (!out.push(i)) return;
      }
    });
    g.sink("drop", s, [](int) {});
  }, o);
  return r.ok() && r.runs == 3 ? 0 : 2;
}
