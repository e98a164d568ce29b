#!/usr/bin/env bash
# benchmarks/ab.sh BUILD_A BUILD_B [ROUNDS] [FILTER] — the sluice rows of two builds,
# alternating, in one session: is a change within noise?
#
# Runs sluice_bench_channel and sluice_bench_graph of each build ROUNDS times (default 3),
# A then B on odd rounds and B then A on even ones (the first of a pair was seen to run
# systematically faster or slower), and prints per row the median of each build and B/A.
# FILTER (default: the sluice rows) is a --benchmark_filter regex.
# AB_SUITES (default "channel graph") may add io: both builds then read one input file
# (B's --io_dir), since two copies of the same bytes can read at speeds 10% apart (how
# the page cache holds each; seen 2026-12-01 on the lines rows).
set -euo pipefail
if [ $# -lt 2 ]; then
  sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
for d in "$1" "$2"; do
  [ -d "$d" ] || { echo "ab.sh: no build directory $d" >&2; exit 2; }
done
a=$(cd "$1" && pwd); b=$(cd "$2" && pwd)
rounds=${3:-3}
filter=${4:-/sluice}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
suites=${AB_SUITES:-channel graph}
for bench in $suites; do
  for d in "$a" "$b"; do
    if [ ! -x "$d/benchmarks/sluice_bench_$bench" ]; then
      echo "ab.sh: $d/benchmarks/sluice_bench_$bench is missing (suites: channel graph io;" \
           "build it with cmake --build $d --target sluice_bench_$bench)" >&2
      exit 2
    fi
  done
done
io_args=(--io_size=256MiB --io_big=0 "--io_dir=$b/bench/io-data")
[ -x "$b/tools/sluice" ] && io_args+=("--io_tool=$b/tools/sluice")
run() {  # run LABEL BUILD
  for bench in $suites; do
    local extra=()
    [ "$bench" = io ] && extra=("${io_args[@]}")
    "$2/benchmarks/sluice_bench_$bench" "${extra[@]}" --benchmark_filter="$filter" --benchmark_repetitions=3 \
        --benchmark_format=json 2>/dev/null |
      python3 -c '
import json, re, sys
# Builds before 2026-11-30 print the teardown line into the JSON stream (after a "}");
# nan/inf are not JSON.
text = re.sub(r"graph teardown:[^\n]*\n", "", sys.stdin.read())
text = text[text.index("{"):]
text = text[:text.index("\n## ")] if "\n## " in text else text  # the io summary follows the JSON
text = text.replace(": -nan", ": null").replace(": nan", ": null").replace(": inf", ": null").replace(": -inf", ": null")
for r in json.loads(text)["benchmarks"]:
    if r.get("aggregate_name") != "median": continue
    name = r["run_name"].replace("/real_time", "")
    if "ns_per_roundtrip" in r: print(sys.argv[1], name, "ns", r["ns_per_roundtrip"])
    elif "items_per_second" in r: print(sys.argv[1], name, "items", r["items_per_second"])
' "$1" >>"$out"
  done
}
for r in $(seq "$rounds"); do
  echo "round $r/$rounds" >&2
  if [ $((r % 2)) -eq 1 ]; then run A "$a"; run B "$b"; else run B "$b"; run A "$a"; fi
done
python3 - "$out" "$1" "$2" <<'PY'
import collections, statistics, sys
vals, kind, order = collections.defaultdict(list), {}, []
for line in open(sys.argv[1]):
    who, name, k, v = line.split()
    vals[(name, who)].append(float(v)); kind[name] = k
    if name not in order: order.append(name)
print(f"A = {sys.argv[2]}\nB = {sys.argv[3]}\n")
print("| row | A | B | B vs A |\n|---|---|---|---|")
for name in order:
    ma, mb = statistics.median(vals[(name, "A")]), statistics.median(vals[(name, "B")])
    if kind[name] == "ns":
        print(f"| {name} | {ma:.0f} ns | {mb:.0f} ns | {100 * (ma / mb - 1):+.1f}% |")
    else:
        print(f"| {name} | {ma / 1e6:.2f} M/s | {mb / 1e6:.2f} M/s | {100 * (mb / ma - 1):+.1f}% |")
PY
