// Built by an embedding project (add_subdirectory or find_package): the library links
// and a channel works.
#include <sluice/channel.hpp>

#include <thread>

int main() {
  auto [tx, rx] = sluice::bounded<int>(4);
  std::thread producer([tx = std::move(tx)]() mutable {
    for (int i = 0; i < 1000; ++i) tx.push(i);
  });
  long sum = 0;
  for (int& v : rx) sum += v;
  producer.join();
  return sum == 999L * 1000 / 2 ? 0 : 1;
}
