#!/usr/bin/env bash
# Drain throughput as paired ratios, every contender on the same server in the same rounds:
#   ceiling      the hand-written outbox cycle of the peer harness (batch 100, 4 connections),
#                waiting for its commits' flush (synchronous_commit on, the server default)
#   ceiling-sca  the same cycle with synchronous_commit=off on its connections: the choice our
#                claim makes, so ours/ceiling-sca compares like with like
#   spectral     our consumer, 4 lanes x batch 100 (this checkout's src/)
#   pgq-b50      pgqueuer, 5 consumers x batch 50 (asyncpg)
#   pgq-b100     pgqueuer, 5 consumers x batch 100 (asyncpg)
# Every contender drains the same N rows (the peers' adapters add 3 warm-up jobs to their
# backlog, so the ceiling drains N + 3 too), and the order rotates every round so no
# contender always runs first (fresh box) or last (after the others' autovacuum and WAL).
# The summary prints every round and the median of the per-round ratios (never best/best);
# pgqueuer's best is, per round, the faster of its two batch sizes.
#
#   bash bench/paired_drain.sh                      # 5 rounds of 100,000 rows, ~8 min
#   ROUNDS=6 N=50000 bash bench/paired_drain.sh
#   ROUNDS=2 N=2000 bash bench/paired_drain.sh      # smoke test (numbers meaningless)
#
# Figures of record need a quiet machine; on a shared box compare rounds, not runs.
# Needs the peer harness (../shared/bench-peers: its venv has pgqueuer; spectral's own
# dependencies come from `pip install -e <this tree>` into that venv, its code from
# this tree's src/ via PYTHONPATH).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
TREE="$(cd "$HERE/.." && pwd)"
PEERS="${PEERS:-$HERE/../../shared/bench-peers}"
PEERS="$(cd "$PEERS" && pwd)"
VENV="${VENV:-$HOME/.cache/bench-peers-venv}"
PY="$VENV/bin/python"
ROUNDS="${ROUNDS:-5}"
N="${N:-100000}"
WARM=3 # jobs peers_common.phase_enqueue adds to every peer's backlog
TS="$(date -u +%Y%m%dT%H%M%SZ)"
PG_DIR="${TMPDIR:-/tmp}/bench-pg-paired-$TS"
OUT="${RESULTS_DIR:-$HERE/results}"
mkdir -p "$OUT"
export BENCH_RESULTS="$OUT/paired-$TS.jsonl" BENCH_RUN_ID="paired-$TS"
bash "$PEERS/setup.sh" >/dev/null
cd "$PEERS"
URI="$("$PY" pg.py start --dir "$PG_DIR" --synchronous-commit on 2>/dev/null | tail -1)"
trap '"$PY" pg.py stop --dir "$PG_DIR" >/dev/null 2>&1 || true' EXIT
# the ceiling with synchronous_commit off: a connection option (libpq `options`), kept by
# the harness when it points the URI at its own database
case "$URI" in *\?*) SEP='&' ;; *) SEP='?' ;; esac
URI_SCA="${URI}${SEP}options=-c%20synchronous_commit%3Doff"
SCA="$("$PY" -c 'import sys, psycopg
with psycopg.connect(sys.argv[1]) as c:
    print(c.execute("SHOW synchronous_commit").fetchone()[0])' "$URI_SCA")"
[ "$SCA" = off ] || { echo "ceiling-sca: synchronous_commit is $SCA, not off" >&2; exit 1; }
echo "server $URI  rounds $ROUNDS  N $N  results $BENCH_RESULTS"

run() { # $1 = contender; each emits one drain record into $BENCH_RESULTS
  case "$1" in
    ceiling) "$PY" ceiling.py --uri "$URI" --only c --consumers 4 \
      --outbox-n "100:$((N + WARM))" ;;
    ceiling-sca) "$PY" ceiling.py --uri "$URI_SCA" --only c \
      --consumers 4 --outbox-n "100:$((N + WARM))" ;;
    spectral) PYTHONPATH="$TREE/src:$PEERS" "$PY" "$HERE/peer_spectral.py" --uri "$URI" \
      --label l4b100 --lanes 4 --batch-size 100 --jobs "$N" --single 200 --steady-rate 0 ;;
    pgq-b50) "$PY" peer_pgqueuer.py --uri "$URI" --label b50 --consumers 5 --batch-size 50 \
      --jobs "$N" --single 200 --steady-rate 0 ;;
    pgq-b100) "$PY" peer_pgqueuer.py --uri "$URI" --label b100 --consumers 5 \
      --batch-size 100 --jobs "$N" --single 200 --steady-rate 0 ;;
  esac
}

CONTENDERS=(ceiling ceiling-sca spectral pgq-b50 pgq-b100)
K=${#CONTENDERS[@]}
for ((r = 1; r <= ROUNDS; r++)); do
  export BENCH_REPEAT="$r"
  order=()
  for ((i = 0; i < K; i++)); do order+=("${CONTENDERS[$(((i + r - 1) % K))]}"); done
  echo "== round $r/$ROUNDS: ${order[*]}"
  for c in "${order[@]}"; do
    # the tag tells the two ceiling runs apart (both are named outbox_b100_c4 by the harness)
    echo "{\"marker\": \"$c\", \"repeat\": $r}" >>"$BENCH_RESULTS"
    run "$c"
  done
done
"$PY" "$HERE/paired_drain_summary.py" "$BENCH_RESULTS"
