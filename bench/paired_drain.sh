#!/usr/bin/env bash
# Targets 1 and 2 of issue 8 as paired ratios: the raw-SQL ceiling's outbox cycle (batch 100,
# 4 connections), our consumer (4 lanes x batch 100) and pgqueuer's best drain (5 consumers x
# batch 50, asyncpg), drained one after the other, ROUNDS times, on one harness server.
# Each round gives its own ratios, so a drift of the shared box hits the three alike; the
# summary prints every round and the medians.
#
#   bash bench/paired_drain.sh                 # 4 rounds, ~4 min
#   ROUNDS=6 bash bench/paired_drain.sh
#
# Needs the peer harness (../shared/bench-peers: its venv has pgqueuer and this package).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
PEERS="${PEERS:-$HERE/../../shared/bench-peers}"
PEERS="$(cd "$PEERS" && pwd)"
VENV="${VENV:-$HOME/.cache/bench-peers-venv}"
PY="$VENV/bin/python"
ROUNDS="${ROUNDS:-4}"
TS="$(date -u +%Y%m%dT%H%M%SZ)"
PG_DIR="${TMPDIR:-/tmp}/bench-pg-paired-$TS"
OUT="${RESULTS_DIR:-$HERE/results}"
mkdir -p "$OUT"
export BENCH_RESULTS="$OUT/paired-$TS.jsonl" BENCH_RUN_ID="paired-$TS"
bash "$PEERS/setup.sh" >/dev/null
cd "$PEERS"
URI="$("$PY" pg.py start --dir "$PG_DIR" --synchronous-commit on 2>/dev/null | tail -1)"
trap '"$PY" pg.py stop --dir "$PG_DIR" >/dev/null 2>&1 || true' EXIT
echo "server $URI  rounds $ROUNDS  results $BENCH_RESULTS"
for ((r = 1; r <= ROUNDS; r++)); do
  export BENCH_REPEAT="$r"
  echo "== round $r/$ROUNDS"
  "$PY" ceiling.py --uri "$URI" --only c --consumers 4 --outbox-n 100:200000
  PYTHONPATH="$PEERS" "$PY" "$HERE/peer_spectral.py" --uri "$URI" --label l4b100 --lanes 4 \
    --batch-size 100 --jobs 100000 --single 200 --steady-rate 0
  "$PY" peer_pgqueuer.py --uri "$URI" --label b50 --consumers 5 --batch-size 50 --jobs 50000 \
    --single 200 --steady-rate 0
done
"$PY" - "$BENCH_RESULTS" <<'PYEOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
by = {}
for r in rows:
    if r["name"] in ("outbox_b100_c4", "spectral:l4b100:drain", "pgqueuer[apg]:b50:drain"):
        by.setdefault(r["repeat"], {})[r["name"]] = r["metrics"]
ours_c, ours_p = [], []
print("| round | ceiling b100 c4 | spectral l4b100 | pgqueuer b50 | ours/ceiling | ours/pgqueuer |"
      " server µs/row ceiling / ours |")
print("|---|---|---|---|---|---|---|")
for k in sorted(by):
    m = by[k]
    c, s, p = (m.get(n, {}) for n in ("outbox_b100_c4", "spectral:l4b100:drain",
                                        "pgqueuer[apg]:b50:drain"))
    if not (c and s and p):
        continue
    rc, rp = s["rate"] / c["rate"], s["rate"] / p["rate"]
    ours_c.append(rc); ours_p.append(rp)
    print(f"| {k} | {c['rate']:,.0f} | {s['rate']:,.0f} | {p['rate']:,.0f} | {rc:.1%} | {rp:.2f}x |"
          f" {c.get('server_cpu_us_per_item', '?')} / {s.get('server_cpu_us_per_item', '?')} |")
if ours_c:
    print(f"\nmedian ours/ceiling {statistics.median(ours_c):.1%} (min {min(ours_c):.1%}), "
          f"median ours/pgqueuer best {statistics.median(ours_p):.2f}x (min {min(ours_p):.2f}x)")
PYEOF
