#!/usr/bin/env bash
# benchmarks/metrics_cost.sh BUILD_DIR [ROUNDS] — what channel metrics cost.
#
# A channel counts pushed/popped/discarded from its ring positions (free) and measures
# time blocked: a wait the spin satisfies as pauses x a calibrated pause cost, a wait that
# yields or parks with two reads of the TSC (detail/ticks.hpp).
# channel_options::timing = false skips all of it (channel_bench --sluice_timing=off). This runs the sluice rows of
# sluice_bench_channel with timing on and off, alternating, ROUNDS times (default 4; each
# run 3 repetitions in random order), and prints per row the median of each side and the
# cost: how much slower "on" is than "off" (negative: on was faster, i.e. noise).
# `./dev bench metrics` calls this with build/release.
set -euo pipefail
if [ $# -lt 1 ]; then
  sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
build=$(cd "$1" && pwd)
rounds=${2:-4}
bin=$build/benchmarks/sluice_bench_channel
[ -x "$bin" ] || { echo "metrics_cost.sh: $bin not built" >&2; exit 2; }
out=$build/bench
mkdir -p "$out"
: >"$out/metrics_cost.txt"
for r in $(seq "$rounds"); do
  # Odd rounds run "on" first, even rounds "off" first: the first of a pair of runs was
  # seen to be systematically faster or slower (thread placement), which alternation cancels.
  order="on off"
  [ $((r % 2)) -eq 0 ] && order="off on"
  for mode in $order; do
    echo "round $r/$rounds: timing $mode ..." >&2
    flag=""
    [ "$mode" = off ] && flag=--sluice_timing=off
    "$bin" $flag --benchmark_filter='/sluice' --benchmark_repetitions=3 \
        --benchmark_format=json 2>/dev/null |
      python3 -c '
import json, sys
mode = sys.argv[1]
for b in json.load(sys.stdin)["benchmarks"]:
    if b.get("aggregate_name") != "median":
        continue
    name = b["run_name"].replace("/real_time", "")
    if "ns_per_roundtrip" in b:
        print(mode, name, "ns", b["ns_per_roundtrip"])
    else:
        print(mode, name, "items", b["items_per_second"])
' "$mode" >>"$out/metrics_cost.txt"
  done
done
python3 - "$out/metrics_cost.txt" "$rounds" "$(nproc)" <<'PY' | tee "$out/metrics_cost.md"
import collections, statistics, sys
path, rounds, cores = sys.argv[1], sys.argv[2], sys.argv[3]
vals = collections.defaultdict(list)
kind = {}
order = []
for line in open(path):
    mode, name, k, v = line.split()
    vals[(name, mode)].append(float(v))
    kind[name] = k
    if name not in order:
        order.append(name)
print(f"## channel metrics cost: time-blocked counters on vs off ({cores} cores, {rounds} rounds)")
print()
print("| row | unit | timing on | timing off | cost of timing |")
print("|---|---:|---:|---:|---:|")
for n in sorted(order):
    on, off = vals.get((n, "on")), vals.get((n, "off"))
    if not on or not off:
        continue
    a, b = statistics.median(on), statistics.median(off)
    if kind[n] == "ns":
        cost, unit, fa, fb = (a - b) / b, "ns/roundtrip", f"{a:,.0f}", f"{b:,.0f}"
    else:
        cost, unit, fa, fb = (b - a) / b, "M items/s", f"{a / 1e6:.1f}", f"{b / 1e6:.1f}"
    print(f"| {n} | {unit} | {fa} | {fb} | {100 * cost:+.1f}% |")
print()
print("cost: how much slower the row is with timing on (median of the rounds' medians);")
print("differences within a few percent either way are the machine's noise.")
PY
