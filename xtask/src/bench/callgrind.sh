#!/bin/bash
# callgrind.sh BIN N RATE MODE: BIN watch --json --no-snapshot --pid <loop> while a C loop opens N TCP
# listeners at RATE a second (0: as fast as it can); MODE plain (CPU from /proc), callgrind, perf.
# Build the loop first: gcc -O2 -o /tmp/callgrind_loop xtask/src/bench/callgrind_loop.c
# Per record: callgrind_annotate --inclusive=yes <dir>/cg.out | grep 'Watch<S>::drain', ÷ 3 N.
BIN=$1; N=$2; RATE=$3; MODE=$4; shift 4
D=$(mktemp -d /tmp/watcher-callgrind.XXXX)
/tmp/callgrind_loop $N $RATE $D/go > $D/genpid 2>$D/gen.err &
GEN=$!
sleep 0.2
PID=$(cat $D/genpid)
case $MODE in
  plain) PRE=();;
  callgrind) PRE=(valgrind --tool=callgrind --callgrind-out-file=$D/cg.out);;
  perf) PRE=(perf record -F 2000 -g -o $D/perf.data --);;
esac
"${PRE[@]}" $BIN watch --json --no-snapshot --pid $PID "$@" > $D/out 2> $D/err &
W=$!
for i in $(seq 1 600); do grep -q "ready:" $D/err && break; sleep 0.1; done
sleep 0.2
T=$W; [ "$MODE" = perf ] && T=$(pgrep -P $W)
TCK=$(getconf CLK_TCK)
cpu() { read -r -a F < <(sed 's/.*) //' /proc/$T/stat); echo $((F[11]+F[12])); }
C0=$(cpu)
touch $D/go
wait $GEN
WANT=$((3*N))
for i in $(seq 1 3000); do L=$(wc -l < $D/out); [ "$L" -ge "$WANT" ] && break; sleep 0.1; done
C1=$(cpu)
echo "load_cpu_s $(echo "scale=3; ($C1-$C0)/$TCK" | bc) us_per_record $(echo "scale=3; ($C1-$C0)*1000000/$TCK/$WANT" | bc) $(grep -E 'VmRSS|VmHWM' /proc/$T/status | tr -s ' \t\n' ' ')" > $D/time
kill -TERM $T
wait $W
echo "$D lines $(wc -l < $D/out)/$WANT $(cat $D/gen.err) $(cat $D/time)"
