#!/usr/bin/env bash
# A/B of Concord binaries under pgbench, on ONE loaded 3-node cluster: the
# data is loaded once (`pgbench -i`), then each binary in turn is started on
# it, warmed up for $WARMUP s (default 5) and run for $DURATION s. Per run it prints the tps,
# the CPU the three node processes used per transaction (utime + stime from
# /proc, which the machine's noise moves much less than tps), and the
# replicated commands per transaction (applied Raft entries over the three
# replicas of every range).
#
#   scripts/pgbench-ab.sh OLD NEW OLD NEW            # binaries, in run order
#   DURATION=60 CLIENTS=32 MODE=prepared scripts/pgbench-ab.sh A B
#
# A restarted cluster moves leaders next to the gateway (here node 1, where
# pgbench connects) only after a 10 s counting window, one range per
# second: WARMUP=30 lets that settle before the measured run.
#
# Alternate the binaries (A B A B ...): the cluster changes as it runs
# (splits, compactions, MVCC garbage). The first binary loads the data and
# runs a first, unreported 60 s warm-up, so that the load's background
# cleanup is over before the first measured run. The data and
# logs go to a fresh directory under /tmp, removed at the end unless KEEP=1.
set -euo pipefail
cd "$(dirname "$0")/.."

SCALE=${SCALE:-10}
DURATION=${DURATION:-30}
CLIENTS=${CLIENTS:-8}
MODE=${MODE:-simple}
WARMUP=${WARMUP:-5}
[ $# -ge 1 ] || { echo "usage: $0 BIN [BIN ...]" >&2; exit 2; }
for b in "$@"; do [ -x "$b" ] || { echo "$b is not an executable" >&2; exit 1; }; done
command -v pgbench >/dev/null || { echo "pgbench is missing (apt-get install postgresql-client-15)" >&2; exit 1; }
WORK=$(mktemp -d /tmp/concord-ab.XXXXXX)
PG=(-h 127.0.0.1 -p 15541 -U root defaultdb)

start() {
  for i in 1 2 3; do
    "$1" start --store "$WORK/n$i" --listen-addr "127.0.0.1:$((36356 + i))" \
      --sql-addr "127.0.0.1:$((15540 + i))" --http-addr "127.0.0.1:$((18180 + i))" \
      --join 127.0.0.1:36357,127.0.0.1:36358,127.0.0.1:36359 >>"$WORK/n$i.log" 2>&1 &
  done
  sleep 2
}
stop() {
  pkill -f "start --store $WORK" 2>/dev/null || true
  for _ in $(seq 30); do
    pgrep -f "start --store $WORK" >/dev/null || return 0
    sleep 1
  done
}
cleanup() {
  stop
  [ "${KEEP:-0}" = 1 ] || rm -rf "$WORK"
}
trap cleanup EXIT
wait_sql() {
  for _ in $(seq 60); do
    psql "${PG[@]}" -Atc "SELECT 1" >/dev/null 2>&1 && return 0
    sleep 1
  done
  echo "the cluster did not answer SQL within 60 s" >&2
  return 1
}
# CPU ticks (1/100 s) used so far by the node processes.
cpu_ticks() {
  local sum=0 u s
  for p in $(pgrep -f "start --store $WORK"); do
    read -r u s < <(awk '{print $14, $15}' "/proc/$p/stat") || continue
    sum=$((sum + u + s))
  done
  echo "$sum"
}
applied() {
  local sum=0 v
  for i in 1 2 3; do
    v=$(curl -s "127.0.0.1:$((18180 + i))/metrics" |
      awk '/^concord_range_raft\{field="applied_index"/ {s += $2} END {printf "%d", s}')
    sum=$((sum + v))
  done
  echo "$sum"
}
bench() {
  pgbench -M "$MODE" -c "$CLIENTS" -j 2 -T "$1" --max-tries=10 "${PG[@]}" 2>&1
}

start "$1"
"$1" init --host 127.0.0.1:36357 >/dev/null
wait_sql
pgbench -i -s "$SCALE" "${PG[@]}" 2>&1 | grep -E "done in|error"
# While the loading node still runs: the load's cleanup (ADD PRIMARY KEY
# leaves a million intents to resolve) finishes here, not in a measured run.
warm=$(bench 60) || { echo "warm-up run failed:" >&2; grep -iE "error|abort|fail" <<<"$warm" | head -5 >&2 || true; }
stop
for bin in "$@"; do
  start "$bin"
  wait_sql
  bench "$WARMUP" >/dev/null || true
  c0=$(cpu_ticks) a0=$(applied)
  # pgbench exits non-zero when a client aborted; the run is still reported.
  out=$(bench "$DURATION") || { grep -iE "error|abort" <<<"$out" | head -5 >&2 || true; }
  c1=$(cpu_ticks) a1=$(applied)
  n=$(grep -oP 'processed: \K[0-9]+' <<<"$out" || echo 0)
  if [ "$n" = 0 ]; then
    echo "$bin: no transaction processed" >&2
    echo "$out" >&2
  else
    awk -v bin="$bin" -v n="$n" -v c="$((c1 - c0))" -v a="$((a1 - a0))" \
      -v tps="$(grep -oP 'tps = \K[0-9.]+' <<<"$out")" \
      -v failed="$(grep -oP 'failed transactions: \K[0-9]+' <<<"$out")" \
      'BEGIN { printf "%-40s tps=%-8.1f failed=%-4s cpu_ms_per_txn=%-6.2f commands_per_txn=%.2f\n", bin, tps, failed, c * 10 / n, a / 3 / n }'
  fi
  stop
done
