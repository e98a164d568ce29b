// tools/commands.hpp — the `sluice` tool's subcommands.
//
// Each takes the subcommand's own argv (argv[0] is the subcommand name) and returns the
// process exit status: 0 success, 1 the work failed (an I/O error, a check that did not
// hold), 2 a bad command line. A bad command line may instead throw
// sluice::tool::usage_error (tools/common/args.hpp); main() prints its one line and exits 2.
#pragma once

namespace sluice::tool {

int cmd_demo(int argc, char** argv);    // tools/demo/: backpressure, measured
int cmd_bench(int argc, char** argv);   // tools/bench/: synthetic graph benchmarks
int cmd_stress(int argc, char** argv);  // tools/stress/: random graphs, seeded
int cmd_gzip(int argc, char** argv);    // tools/gzip/: IN [OUT] to gzip, parallel blocks
int cmd_gunzip(int argc, char** argv);  // tools/gzip/: gzip IN [OUT] back to the original

}  // namespace sluice::tool
