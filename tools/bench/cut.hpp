// sluice bench --cut K --via nats://HOST:PORT: a chain cut in two processes joined by a
// JetStream edge (tools/bench/cut.cpp; built when sluice::jetstream is).
#pragma once

namespace sluice::tool::bench {

// True when the arguments ask for a cut run (--cut or --role).
bool wants_cut(int argc, char** argv);
// `sluice bench --cut ...`: argv[0] is "bench".
int cmd_bench_cut(int argc, char** argv);

}  // namespace sluice::tool::bench
