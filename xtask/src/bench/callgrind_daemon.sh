#!/bin/bash
# callgrind_daemon.sh BIN N RATE: BIN daemon (one rule: loopback TCP allowed, so nothing alerts) under
# callgrind while the C loop of callgrind.sh opens N TCP listeners at RATE a second; waits until the
# daemon has printed the loop's bind, listen, close, listener_up and listener_down lines, then stops it.
# Build the loop first: gcc -O2 -o /tmp/callgrind_loop xtask/src/bench/callgrind_loop.c
# Per record: callgrind_annotate --inclusive=yes <dir>/cg.out | grep 'Watch<S>::drain', ÷ 3 N.
# The daemon has no --pid filter: run it on an otherwise quiet host (its other lines are counted apart).
# MODE (4th argument, default callgrind): plain runs the daemon as it is and prints its CPU time per record
# from /proc, taken from the first listener to the last line about the loop.
BIN=$1; N=$2; RATE=$3; MODE=${4:-callgrind}
D=$(mktemp -d /tmp/watcher-callgrind-daemon.XXXX)
printf '[[allow]]\nname = "loopback"\nproto = "tcp"\nscope = "loopback"\n' > $D/watcher.toml
/tmp/callgrind_loop $N $RATE $D/go > $D/genpid 2>$D/gen.err &
GEN=$!
PRE=(valgrind --tool=callgrind --callgrind-out-file=$D/cg.out); [ "$MODE" = plain ] && PRE=()
"${PRE[@]}" $BIN daemon --config $D/watcher.toml > $D/out 2> $D/err &
W=$!
for i in $(seq 1 600); do grep -q "ready:" $D/err && break; sleep 0.1; done
TCK=$(getconf CLK_TCK)
cpu() { read -r -a F < <(sed 's/.*) //' /proc/$W/stat); echo $((F[11]+F[12])); }
C0=$(cpu)
touch $D/go
wait $GEN
PID=$(cat $D/genpid)
for i in $(seq 1 3000); do [ "$(grep -c "\"pid\":$PID," $D/out)" -ge $((5*N)) ] && break; sleep 0.1; done
C1=$(cpu)
kill -TERM $(pgrep -P $W || echo $W) 2>/dev/null
wait $W
MINE=$(grep -c "\"pid\":$PID," $D/out)
[ "$MODE" = plain ] && echo "load_cpu_s $(echo "scale=3; ($C1-$C0)/$TCK" | bc) us_per_record $(echo "scale=3; ($C1-$C0)*1000000/$TCK/(3*$N)" | bc)"
echo "$D lines about the loop $MINE, other lines $(( $(wc -l < $D/out) - MINE )); by event: $(grep "\"pid\":$PID," $D/out | sed 's/.*"event":"\([a-z_]*\)".*/\1/' | sort | uniq -c | tr -s ' \n' ' ')"
