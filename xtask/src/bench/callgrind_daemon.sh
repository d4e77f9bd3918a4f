#!/bin/bash
# callgrind_daemon.sh BIN N RATE: BIN daemon (one rule: loopback TCP allowed, so nothing alerts) under
# callgrind while the C loop of callgrind.sh opens N TCP listeners at RATE a second; waits until the
# daemon has printed the loop's bind, listen, close, listener_up and listener_down lines, then stops it.
# Build the loop first: gcc -O2 -o /tmp/callgrind_loop xtask/src/bench/callgrind_loop.c
# Per record: callgrind_annotate --inclusive=yes <dir>/cg.out | grep 'Watch<S>::drain', ÷ 3 N.
# The daemon has no --pid filter: run it on an otherwise quiet host (its other lines are counted apart).
BIN=$1; N=$2; RATE=$3
D=$(mktemp -d /tmp/watcher-callgrind-daemon.XXXX)
printf '[[allow]]\nname = "loopback"\nproto = "tcp"\nscope = "loopback"\n' > $D/watcher.toml
/tmp/callgrind_loop $N $RATE $D/go > $D/genpid 2>$D/gen.err &
GEN=$!
valgrind --tool=callgrind --callgrind-out-file=$D/cg.out $BIN daemon --config $D/watcher.toml > $D/out 2> $D/err &
W=$!
for i in $(seq 1 600); do grep -q "ready:" $D/err && break; sleep 0.1; done
touch $D/go
wait $GEN
PID=$(cat $D/genpid)
for i in $(seq 1 3000); do [ "$(grep -c "\"pid\":$PID," $D/out)" -ge $((5*N)) ] && break; sleep 0.1; done
kill -TERM $(pgrep -P $W || echo $W) 2>/dev/null
wait $W
MINE=$(grep -c "\"pid\":$PID," $D/out)
echo "$D lines about the loop $MINE, other lines $(( $(wc -l < $D/out) - MINE )); by event: $(grep "\"pid\":$PID," $D/out | sed 's/.*"event":"\([a-z_]*\)".*/\1/' | sort | uniq -c | tr -s ' \n' ' ')"
