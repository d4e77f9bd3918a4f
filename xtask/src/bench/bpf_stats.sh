#!/bin/bash
# bpf_stats.sh BIN N: what each of watcher's kernel programs costs a bind+listen+close loop of N ops
# (xtask/src/bench/callgrind_loop.c), from the kernel's own run-time counters (kernel.bpf_stats_enabled,
# `bpftool prog show`: run_cnt, run_time_ns), per run and per op. The counters add their own clock reads
# (tens of ns a run), so compare these figures with each other, and the loop's time with the overhead bench.
# Build the loop first: gcc -O2 -o /tmp/callgrind_loop xtask/src/bench/callgrind_loop.c
BIN=$1; N=$2
D=$(mktemp -d /tmp/watcher-bpf-stats.XXXX)
sysctl -qw kernel.bpf_stats_enabled=1
trap 'sysctl -qw kernel.bpf_stats_enabled=0' EXIT
"$BIN" watch --json --no-snapshot > /dev/null 2> $D/err &
W=$!
for i in $(seq 1 100); do grep -q "ready:" $D/err && break; sleep 0.1; done
bpftool prog show -j > $D/before.json
/tmp/callgrind_loop "$N" 0 $D/go > /dev/null 2> $D/loop.err &
G=$!
sleep 0.1; touch $D/go; wait $G
bpftool prog show -j > $D/after.json
kill $W; wait $W 2>/dev/null
python3 - "$N" $D/before.json $D/after.json <<'PY'
import json, sys
n = int(sys.argv[1])
before = {p["id"]: p for p in json.load(open(sys.argv[2]))}
rows, total = [], 0
for p in json.load(open(sys.argv[3])):
    b = before.get(p["id"])
    if not b:
        continue
    runs = p.get("run_cnt", 0) - b.get("run_cnt", 0)
    ns = p.get("run_time_ns", 0) - b.get("run_time_ns", 0)
    if runs > 0:
        rows.append((ns, runs, p.get("name"), p.get("type")))
        total += ns
print("| program | type | runs | ns a run | ns an op |\n|---|---|---|---|---|")
for ns, runs, name, kind in sorted(rows, reverse=True):
    print(f"| {name} | {kind} | {runs} | {ns / runs:.0f} | {ns / n:.0f} |")
print(f"| all | | | | {total / n:.0f} |")
PY
cat $D/loop.err
rm -rf "$D"
