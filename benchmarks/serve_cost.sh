#!/usr/bin/env bash
# benchmarks/serve_cost.sh BUILD_DIR [ROUNDS] — what the live view costs a running graph.
#
# `sluice bench --topology chain:4 --work 1us` closed loop, without --serve and with --serve while a
# poller fetches /snapshot.json and /metrics every 100 ms (as a Prometheus scraper and an
# open live page would, only faster), alternating which goes first, ROUNDS times (default
# 5). Prints each pair and the medians; cost = 1 - with/without. The poller is
# benchmarks/tools/serve_poll.cpp (one kept-alive connection), so what is measured is
# the server, not the client: a Python poller cost as much as the server did.
set -euo pipefail
if [ $# -lt 1 ]; then
  sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
tool=$(cd "$1" && pwd)/tools/sluice
poll=$(cd "$1" && pwd)/benchmarks/sluice_serve_poll
rounds=${2:-5}
[ -x "$tool" ] || { echo "serve_cost.sh: $tool not built" >&2; exit 2; }
[ -x "$poll" ] || { echo "serve_cost.sh: $poll not built (needs cpp-httplib)" >&2; exit 2; }
# Stages that do 1 us of work per item keep both cores busy and the rate steady (runs
# agree to about 0.3%); an empty chain:4 swings by 25% from run to run on 2 cores, far
# more than the 2% being looked for. Whatever CPU the server takes shows as lost items.
args=(bench --topology chain:4 --work 1us --items 2M --format json)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rate() {
  python3 -c 'import json,sys; d=json.load(sys.stdin); print(round([x for x in d["results"] if x["engine"]=="sluice"][0]["items_per_s"]))'
}
without() { "$tool" "${args[@]}" 2>/dev/null | rate; }
with() {
  "$tool" "${args[@]}" --serve 127.0.0.1:0 >"$work/out" 2>"$work/err" &
  local bench=$! url=""
  for _ in $(seq 1 1000); do
    url=$(grep -o 'http://[^ ]*' "$work/err" | head -1 || true)
    [ -n "$url" ] && break
    sleep 0.005
  done
  [ -n "$url" ] || { echo "serve_cost.sh: no URL from --serve" >&2; kill "$bench"; exit 1; }
  case $url in */) ;; *) url=$url/ ;; esac
  "$poll" "$url" 100 >"$work/polls" &
  local poller=$!
  wait "$bench"
  wait "$poller" || true
  rate <"$work/out"
}
: >"$work/pairs"
for r in $(seq "$rounds"); do
  if [ $((r % 2)) -eq 1 ]; then a=$(without); b=$(with); else b=$(with); a=$(without); fi
  echo "round $r: without $a items/s, with --serve (polled $(cut -d" " -f1 "$work/polls") times) $b items/s" >&2
  echo "$a $b" >>"$work/pairs"
done
python3 - "$work/pairs" <<'PY'
import statistics, sys
pairs = [tuple(map(float, l.split())) for l in open(sys.argv[1]) if l.strip()]
a = statistics.median(p[0] for p in pairs); b = statistics.median(p[1] for p in pairs)
print(f"median without: {a:,.0f} items/s   median with --serve, polled every 100 ms: {b:,.0f} items/s")
print(f"cost: {100 * (1 - b / a):+.1f}% (negative: the run with the server was faster, i.e. noise)")
PY
