#include "args.hpp"
#include "commands.hpp"
namespace sluice::tool {
int cmd_bench(int argc, char** argv) {
  arg_parser p("sluice bench", "not yet");
  if (!p.parse(argc, argv)) return 0;
  return 1;
}
}  // namespace sluice::tool
