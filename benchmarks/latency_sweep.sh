#!/usr/bin/env bash
# benchmarks/latency_sweep.sh BUILD_DIR [OUT] [EXTRA BENCH FLAGS...] — the latency sweep of
# benchmarks/README.md: `sluice bench --sweep --engine both` for chain:4 and farm:4
# (pass-through stages) at capacities 16, 64 and 1024, with the date, commit, machine and
# load average before each run, to OUT (default: stdout). About 4 minutes.
# Run it on a quiet machine: with other work on the cores the rows measure the load.
set -euo pipefail
if [ $# -lt 1 ]; then
  sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
tool=$(cd "$1" && pwd)/tools/sluice
out=${2:--}
shift $(( $# >= 2 ? 2 : 1 ))
[ -x "$tool" ] || { echo "latency_sweep.sh: $tool not built" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
{
  echo "# sluice bench --sweep --engine both: chain:4 and farm:4 (pass-through stages), capacities 16, 64, 1024 $*"
  echo "# date: $(date -u +%FT%TZ)  commit: $(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo '?')" \
       " nproc: $(nproc)  cpu: $(sed -n 's/^model name[[:space:]]*:[[:space:]]*//p' /proc/cpuinfo | head -n1)"
  for topo in chain:4 farm:4; do
    for cap in 16 64 1024; do
      echo
      echo "# load before: $(cut -d' ' -f1-3 /proc/loadavg)"
      echo "\$ sluice bench --topology $topo --capacity $cap --sweep --engine both $*"
      "$tool" bench --topology "$topo" --capacity "$cap" --sweep --engine both "$@"
    done
  done
  echo
  echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
} | if [ "$out" = - ]; then cat; else tee "$out"; fi
