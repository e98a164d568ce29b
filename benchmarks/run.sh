#!/usr/bin/env bash
# benchmarks/run.sh BUILD_DIR [NAME [BENCHMARK FLAGS...]]
#
# Runs sluice_bench_NAME (or, without NAME, every sluice_bench_* in BUILD_DIR/benchmarks),
# keeps Google Benchmark's JSON in BUILD_DIR/bench/NAME.json and the console log in
# BUILD_DIR/bench/NAME.log, and prints a markdown table per suite (also saved as
# BUILD_DIR/bench/NAME.md): the machine and date, each implementation's numbers, and how
# many times faster sluice is than each peer and than the best peer, against the targets
# the suite declares. `./dev bench [NAME]` calls this with build/release.
#
# Flags after NAME go to the benchmark binary, e.g.
#   benchmarks/run.sh build/release channel --benchmark_filter=spsc --benchmark_repetitions=1
#
# Conventions the table relies on (see benchmarks/README.md):
#   - a benchmark is named "<scenario>/<implementation>"; "sluice" is the subject, every
#     other implementation is a peer; "sluice:<variant>" (e.g. sluice:bulk64) is printed as
#     its own row and compared with the peers of its scenario;
#   - throughput rows report items_per_second; latency rows a counter "ns_per_<what>";
#   - context entries "target.<scenario>" = "best>=2 tbb>=10" give the goals (speedups).
set -euo pipefail

if [ $# -lt 1 ]; then
  sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
build=$(cd "$1" && pwd)
shift
name=${1:-}
[ $# -gt 0 ] && shift
bindir=$build/benchmarks
outdir=$build/bench
mkdir -p "$outdir"

if [ -n "$name" ]; then
  bins=("$bindir/sluice_bench_$name")
  if [ ! -x "${bins[0]}" ]; then
    echo "run.sh: no benchmark '$name' in $bindir; available:" >&2
    for b in "$bindir"/sluice_bench_*; do [ -x "$b" ] && echo "  ${b##*/sluice_bench_}" >&2; done
    exit 2
  fi
else
  bins=()
  for b in "$bindir"/sluice_bench_*; do [ -f "$b" ] && [ -x "$b" ] && bins+=("$b"); done
  if [ ${#bins[@]} -eq 0 ]; then
    echo "run.sh: no sluice_bench_* executables in $bindir (build first)" >&2
    exit 2
  fi
fi

cpu_model=$(sed -n 's/^model name[[:space:]]*:[[:space:]]*//p' /proc/cpuinfo 2>/dev/null | head -n1)
cores=$(nproc 2>/dev/null || echo '?')

status=0
for bin in "${bins[@]}"; do
  suite=${bin##*/sluice_bench_}
  json=$outdir/$suite.json
  log=$outdir/$suite.log
  echo "running sluice_bench_$suite (log: $log) ..." >&2
  started=$(date +%s)
  # Console output goes to the log; on a terminal, one line shows the row in progress.
  if ! "$bin" --benchmark_out="$json" --benchmark_out_format=json "$@" 2>&1 |
      tee "$log" |
      if [ -t 2 ]; then
        while IFS= read -r line; do
          case $line in
            */*) printf '\r\033[K  %s' "${line%% *}" >&2 ;;
          esac
        done
        printf '\r\033[K' >&2
      else
        cat >/dev/null
      fi; then
    echo "run.sh: sluice_bench_$suite failed; see $log" >&2
    status=1
    continue
  fi
  echo "done in $(( $(date +%s) - started )) s" >&2
  python3 - "$json" "$suite" "$cores" "$cpu_model" <<'PY' | tee "$outdir/$suite.md"
import json, re, statistics, sys

path, suite, cores, cpu = sys.argv[1:5]
with open(path) as f:
    doc = json.load(f)
ctx = doc.get("context", {})
runs = doc.get("benchmarks", [])

# One value per benchmark: the median aggregate if repetitions ran, else the median of runs.
have_aggr = any(r.get("run_type") == "aggregate" for r in runs)
by_name = {}
order = []
noise = ("real_time", "manual_time", "process_time")
def clean(n):
    parts = [p for p in n.split("/")
             if p not in noise and not re.match(r"(min_time|min_warmup_time|repeats|iterations|threads):", p)]
    return "/".join(parts)
cv = {}            # name -> coefficient of variation of the repetitions (noise)
# Registration order (family_index), not run order: random interleaving shuffles the latter.
runs.sort(key=lambda r: (r.get("family_index", 0), r.get("per_family_instance_index", 0)))
for r in runs:
    n = clean(r.get("run_name", r["name"]))
    if r.get("aggregate_name") == "cv":
        k = next((k for k in r if k.startswith("ns_per_")), "items_per_second")
        if k in r:
            cv[n] = r[k]
    if have_aggr and not (r.get("run_type") == "aggregate" and r.get("aggregate_name") == "median"):
        if not r.get("error_occurred"):
            continue
    if n not in by_name:
        by_name[n] = []
        order.append(n)
    by_name[n].append(r)

def metric(rs):
    """(value, unit, higher_is_better) or None for an error."""
    if any(r.get("error_occurred") for r in rs):
        return None
    r = rs[0]
    lat = [k for k in r if k.startswith("ns_per_")]
    if lat:
        k = lat[0]
        return statistics.median(x[k] for x in rs), "ns/" + k[len("ns_per_"):], False
    if "items_per_second" in r:
        return statistics.median(x["items_per_second"] for x in rs), "M items/s", True
    return statistics.median(x["real_time"] for x in rs), r.get("time_unit", "ns"), False

rows = []          # (row label, scenario, impl column, variant or None)
cols = []          # implementation columns, sluice first
vals = {}          # (scenario, impl-with-variant) -> metric
for n in order:
    scen, _, impl = n.rpartition("/")
    if not scen:
        scen, impl = n, "value"
    base, _, variant = impl.partition(":")
    if base not in cols:
        cols.append(base)
    vals[(scen, impl)] = metric(by_name[n])
    rows.append((scen, impl, base, variant or None))
cols.sort(key=lambda c: (c != "sluice",))  # stable: sluice first, peers in registration order
# ref_* columns are references (e.g. a spin-only floor), shown but never peers.
peers = [c for c in cols if c != "sluice" and not c.startswith("ref_")]
refs = [c for c in cols if c.startswith("ref_")]

def fmt(m):
    if m is None:
        return "ERR"
    v, unit, _ = m
    if unit == "M items/s":
        v /= 1e6
        return f"{v:.2f}" if v < 10 else f"{v:.1f}"
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"

def speedup(s, p):
    if s is None or p is None or s[0] <= 0 or p[0] <= 0:
        return None
    return s[0] / p[0] if s[2] else p[0] / s[0]

def table(header, body):
    w = [max(len(str(x)) for x in col) for col in zip(header, *body)]
    def line(cells):
        out = []
        for i, c in enumerate(cells):
            out.append(str(c).ljust(w[i]) if i == 0 else str(c).rjust(w[i]))
        return "| " + " | ".join(out) + " |"
    print(line(header))
    print("|" + "|".join(("-" * (x + 1) + ":") if i else ("-" * (x + 2)) for i, x in enumerate(w)) + "|")
    for b in body:
        print(line(b))

la = ctx.get("load_avg")
print(f"## sluice_bench_{suite}: {ctx.get('date', '?')}")
print()
print(f"- machine: {cores} cores (nproc), {cpu or '?'}"
      + (f", load avg {' '.join(f'{x:.2f}' for x in la)} at start" if la else "")
      + f", host {ctx.get('host_name', '?')}")
extra = [f"{k}={v}" for k, v in sorted(ctx.items())
         if k in ("items_per_iteration", "roundtrips_per_iteration", "pinned")]
if extra:
    print("- " + ", ".join(extra) + "; value = median of the repetitions")
print()

# Table 1: raw numbers.
body = []
seen = set()
for scen, impl, base, variant in rows:
    key = scen if variant is None else f"{scen} [{impl}]"
    if key in seen:
        continue
    seen.add(key)
    if variant is None:
        cells = [fmt(vals[(scen, c)]) if (scen, c) in vals else "-" for c in cols]
        unit = next((m[1] for c in cols if (m := vals.get((scen, c)))), "")
        noise = [cv[f"{scen}/{c}"] for c in cols if f"{scen}/{c}" in cv]
    else:
        cells = [fmt(vals[(scen, impl)]) if c == base else "" for c in cols]
        unit = vals[(scen, impl)][1] if vals[(scen, impl)] else ""
        noise = [cv[f"{scen}/{impl}"]] if f"{scen}/{impl}" in cv else []
    body.append([key, unit] + cells + [f"{100 * max(noise):.0f}%" if noise else "-"])
table(["scenario", "unit"] + cols + ["max cv"], body)
print()
if cv:
    print("max cv: the largest coefficient of variation across the repetitions of the row's"
          " cells; above ~10% the machine was busy and ratios are rough.")
    print()

# Table 2: speedups of sluice (and its variants) over each peer, best peer, targets.
if "sluice" in cols and peers:
    print("Speedup of sluice over each peer (>1x: sluice is faster; throughput sluice/peer,"
          " ns rows peer/sluice). Variant rows are compared with the per-item peer rows.")
    print()
    body = []
    met_all = True
    for scen, impl, base, variant in rows:
        if base != "sluice":
            continue
        s = vals.get((scen, impl))
        pm = {p: vals.get((scen, p)) for p in peers if (scen, p) in vals}
        ok = {p: m for p, m in pm.items() if m is not None}
        best = None
        if ok:
            hib = next(iter(ok.values()))[2]
            best = (max if hib else min)(ok, key=lambda p: ok[p][0])
        sp = {p: speedup(s, pm.get(p)) for p in peers}
        f = lambda x: "-" if x is None else f"{x:.2f}x"
        target = ctx.get(f"target.{scen}", "")
        verdict = ""
        if target:
            fails = []
            for term in target.split():
                m = re.fullmatch(r"([\w.]+)>=([\d.]+)", term)
                if not m:
                    continue
                who, need = m.group(1), float(m.group(2))
                got = sp.get(best) if who == "best" else sp.get(who)
                if got is None or got < need:
                    fails.append(term)
            verdict = "yes" if not fails else "NO (" + ", ".join(fails) + ")"
            met_all &= not fails
        label = scen if variant is None else f"{scen} [{impl}]"
        body.append([label, best or "-", f(sp.get(best) if best else None)]
                    + [f(sp[p]) for p in peers] + [target or "-", verdict or "-"])
    table(["scenario", "best peer", "vs best"] + ["vs " + p for p in peers] + ["target", "met"], body)
    print()
    # References: how far sluice is from each floor (1.00x would be the floor itself).
    for scen, impl, base, variant in rows:
        if base != "sluice" or variant is not None:
            continue
        for r in refs:
            s, m = vals.get((scen, impl)), vals.get((scen, r))
            if s and m and s[0] > 0 and m[0] > 0:
                x = (s[0] / m[0]) if not s[2] else (m[0] / s[0])
                print(f"- {scen}: sluice {fmt(s)} {s[1]} is {x:.2f}x the {r} floor ({fmt(m)} {m[1]})")
    if refs:
        print()
PY
  case $suite in
    io)  # peak RSS, output sizes and the issue's ratios: sluice_bench_io prints them itself
      sed -n '/^## io summary/,/^## end io summary/p' "$log" | sed '$d' | tee -a "$outdir/$suite.md" ;;
  esac
done
exit $status
