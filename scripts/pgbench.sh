#!/usr/bin/env bash
# pgbench against a local 3-node Concord cluster and, when PostgreSQL 15 is
# installed (Debian's postgresql-15), a single local PostgreSQL, in the same
# sitting. Prints one line per run and checks afterwards that the money
# adds up after every run (what the balances gained = the deltas the run
# wrote to pgbench_history, which pgbench truncates before each run).
#
#   scripts/pgbench.sh                      # scale 10, 60 s runs, c = 1 8 32
#   SCALE=1 DURATION=10 CLIENTS="1 8" scripts/pgbench.sh
#   BIN=target/release/concord scripts/pgbench.sh
#
# Every run uses --max-tries=10 (40001 is retried by pgbench). Data and logs
# go to a fresh directory under /tmp, removed at the end unless KEEP=1.
set -euo pipefail
cd "$(dirname "$0")/.."

SCALE=${SCALE:-10}
DURATION=${DURATION:-60}
CLIENTS=${CLIENTS:-"1 8 32"}
MODES=${MODES:-"simple prepared"}
BIN=${BIN:-target/debug/concord}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
WORK=$(mktemp -d /tmp/concord-pgbench.XXXXXX)
chmod 755 "$WORK" # PostgreSQL runs as the postgres user
command -v pgbench >/dev/null || { echo "pgbench is missing (apt-get install postgresql-client-15)" >&2; exit 1; }
[ -x "$BIN" ] || { echo "$BIN is missing: cargo build -p concord-cli" >&2; exit 1; }

# Stops the Concord nodes (matched by their store directory, whatever the
# binary is called) and waits until they are gone: PostgreSQL's runs, and a
# next sitting on the same ports, find a quiet machine.
stop_concord() {
  pkill -f "start --store $WORK" 2>/dev/null || true
  for _ in $(seq 30); do
    pgrep -f "start --store $WORK" >/dev/null || break
    sleep 1
  done
}

cleanup() {
  stop_concord
  if [ -d "$WORK/pg" ]; then
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$WORK/pg" -m fast stop >/dev/null 2>&1 || true
  fi
  [ "${KEEP:-0}" = 1 ] || rm -rf "$WORK"
}
trap cleanup EXIT

# Prints "tps failed retried" for one pgbench run.
run() {
  local out
  out=$(pgbench "$@" --max-tries=10 -T "$DURATION" 2>&1) || { echo "$out" >&2; return 1; }
  echo "$(grep -oP 'tps = \K[0-9.]+' <<<"$out") $(grep -oP 'failed transactions: \K[0-9]+' <<<"$out") $(grep -oP 'transactions retried: \K[0-9]+' <<<"$out" || echo 0)"
}

sum_balances() {
  psql "$@" -Atc "SELECT coalesce(sum(abalance), 0) FROM pgbench_accounts"
}

# Every run starts by truncating pgbench_history, so the money check is per
# run: what the balances gained equals the deltas the run recorded.
sum_deltas() {
  psql "$@" -Atc "SELECT coalesce(sum(delta), 0) FROM pgbench_history"
}

bench() {
  local name=$1
  shift
  echo "== $name: pgbench -i -s $SCALE"
  /usr/bin/time -f "   init took %e s" pgbench -i -s "$SCALE" "$@" 2>&1 | grep -E "done in|took|error"
  for mode in $MODES; do
    for c in $CLIENTS; do
      before=$(sum_balances "$@")
      read -r tps failed retried < <(run -M "$mode" -c "$c" -j "$((c < 2 ? 1 : 2))" "$@")
      gained=$(($(sum_balances "$@") - before))
      deltas=$(sum_deltas "$@")
      money=$([ "$gained" = "$deltas" ] && echo ok || echo "MISMATCH $gained != $deltas")
      printf '%-10s %-8s c=%-3s tps=%-10s failed=%-6s retried=%-6s money=%s\n' \
        "$name" "$mode" "$c" "$tps" "$failed" "$retried" "$money"
    done
  done
}

# --- Concord: 3 nodes on loopback.
for i in 1 2 3; do
  "$BIN" start --store "$WORK/n$i" --listen-addr "127.0.0.1:$((36356 + i))" \
    --sql-addr "127.0.0.1:$((15540 + i))" --http-addr "127.0.0.1:$((18180 + i))" \
    --join 127.0.0.1:36357,127.0.0.1:36358,127.0.0.1:36359 >"$WORK/n$i.log" 2>&1 &
done
sleep 2
"$BIN" init --host 127.0.0.1:36357 >/dev/null
for _ in $(seq 60); do
  psql -h 127.0.0.1 -p 15541 -U root -d defaultdb -Atc "SELECT 1" >/dev/null 2>&1 && break
  sleep 1
done
bench concord -h 127.0.0.1 -p 15541 -U root defaultdb
stop_concord

# --- PostgreSQL 15, default settings (fsync on), same machine.
if [ -x "$PG_BIN/initdb" ] && id postgres >/dev/null 2>&1; then
  mkdir -p "$WORK/pg" && chown postgres "$WORK/pg"
  runuser -u postgres -- "$PG_BIN/initdb" -D "$WORK/pg" -A trust >/dev/null
  runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$WORK/pg" -o "-p 15599 -k $WORK/pg -c max_connections=100" \
    -l "$WORK/pg/log" start >/dev/null
  bench postgres -h "$WORK/pg" -p 15599 -U postgres postgres
else
  echo "PostgreSQL 15 is not installed: skipping the comparison"
fi
