// What an embedder's translation unit pays for including sluice/graph.hpp: the graph's
// threads, locks and runtime state stay in libsluice, so the header pulls in neither
// <thread> nor <x86intrin.h>; and a one-stage graph built from that header alone runs.
// (The checks name libstdc++'s and GCC's include guards; elsewhere they check nothing.)
#include "sluice/graph.hpp"  // first: nothing else may have brought the headers in

#if defined(_GLIBCXX_THREAD)
#error "sluice/graph.hpp includes <thread>: the graph's threads belong in runtime/"
#endif
#if defined(_X86INTRIN_H_INCLUDED) || defined(_IMMINTRIN_H_INCLUDED)
#error "sluice/graph.hpp includes <x86intrin.h>/<immintrin.h>: intrinsics belong in runtime/"
#endif

#include <gtest/gtest.h>

namespace {

TEST(GraphHeader, OneStageGraphFromTheHeaderAlone) {
  sluice::graph g;
  auto nums = g.source<int>("count", [](sluice::sender<int>& out) {
    for (int i = 0; i < 1000; ++i) {
      if (!out.push(i)) return;
    }
  });
  long sum = 0;
  g.sink("sum", nums, [&](int v) { sum += v; });
  const sluice::report r = g.run();
  EXPECT_EQ(sum, 999L * 1000 / 2);
  EXPECT_TRUE(r.balanced());
  EXPECT_EQ(r.metrics.stages.size(), 2u);
}

}  // namespace
