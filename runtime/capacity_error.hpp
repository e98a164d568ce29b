// capacity_bad_alloc (private: not installed): a std::bad_alloc whose what() says which
// capacity could not be had. The ring throws it (runtime/channel.cpp) and the graph
// rethrows it with the stage's name in front (graph_core::rethrow_naming, runtime/graph.cpp),
// so a caller that catches std::bad_alloc still reads what and where.
#pragma once

#include <new>
#include <stdexcept>
#include <string>

namespace sluice::detail {

class capacity_bad_alloc : public std::bad_alloc {
 public:
  explicit capacity_bad_alloc(const std::string& what) : what_(what) {}
  const char* what() const noexcept override { return what_.what(); }

 private:
  std::runtime_error what_;  // a nothrow-copyable string
};

}  // namespace sluice::detail
