// tools/commands.hpp — the `sluice` tool's subcommands.
//
// Each takes the subcommand's own argv (argv[0] is the subcommand name) and returns the
// process exit status: 0 success, 1 the work failed (an I/O error, a check that did not
// hold), 2 a bad command line. A bad command line may instead throw
// sluice::tool::usage_error (tools/args.hpp); main() prints its one line and exits 2.
#pragma once

namespace sluice::tool {

int cmd_demo(int argc, char** argv);    // tools/cmd_demo.cpp: backpressure, measured
int cmd_bench(int argc, char** argv);   // tools/cmd_bench.cpp: synthetic graph benchmarks
int cmd_stress(int argc, char** argv);  // tools/cmd_stress.cpp: random graphs, seeded
int cmd_gzip(int argc, char** argv);    // tools/cmd_gzip.cpp: IN [OUT] to gzip, parallel blocks
int cmd_gunzip(int argc, char** argv);  // tools/cmd_gzip.cpp: gzip IN [OUT] back to the original

}  // namespace sluice::tool
