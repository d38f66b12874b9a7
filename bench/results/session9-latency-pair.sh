#!/bin/bash
# paired rounds: base (main) vs lat9, order rotated; args passed to the bench
cd /work/wt-lat9
tag=$1; shift
for r in 1 2; do
  if [ $r = 1 ]; then order="base lat9"; else order="lat9 base"; fi
  for who in $order; do
    if [ $who = base ]; then src=/tmp/lat9-base/src; else src=/work/wt-lat9/src; fi
    echo "=== round $r $who $(date -u +%H:%M:%S) load $(cut -d' ' -f1 /proc/loadavg)"
    PYTHONPATH=$src timeout 900 python bench/bench_outbox.py --only latency --no-poll --steps --no-chart --out /tmp/lat9/$tag-$r-$who.json "$@" 2>&1 | grep -v '^\s*$' | grep -v '^|---'
  done
done
