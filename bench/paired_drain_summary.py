"""Summary of one ``bench/paired_drain.sh`` run: every round, then medians of per-round ratios.

    python bench/paired_drain_summary.py bench/results/paired-<UTC>.jsonl

The results file holds the harness's drain records, each preceded by a ``marker`` line that
names the contender (the two ceiling runs carry the same harness name).  A ratio is taken
within a round only (the contenders ran back to back on the same server); the medians are
over those per-round ratios, never best against best.
"""

from __future__ import annotations

import json
import statistics
import sys
from typing import Any

CONTENDERS = ("ceiling", "ceiling-sca", "spectral", "pgq-b50", "pgq-b100")


def load(path: str) -> dict[int, dict[str, dict[str, Any]]]:
    """``{round: {contender: metrics}}`` from the marker-tagged results file."""
    rounds: dict[int, dict[str, dict[str, Any]]] = {}
    current: tuple[int, str] | None = None
    with open(path) as f:
        for line in f:
            rec = json.loads(line)
            if "marker" in rec:
                current = (int(rec["repeat"]), rec["marker"])
            elif current is not None and rec.get("name", "").endswith(("drain", "_c4")):
                rounds.setdefault(current[0], {})[current[1]] = rec["metrics"]
                current = None
    return rounds


def main(path: str) -> int:
    rounds = load(path)
    ratios: dict[str, list[float]] = {"ceiling": [], "ceiling-sca": [], "pgq": [], "b100/b50": []}
    print(
        "| round | ceiling (sync on) | ceiling (sync off) | spectral 4x100 | pgqueuer b50 | "
        "pgqueuer b100 | ours/ceiling | ours/ceiling sync off | ours/pgqueuer best | "
        "server µs/row ceiling off / ours |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    sizes: set[int] = set()
    for k in sorted(rounds):
        m = rounds[k]
        missing = [c for c in CONTENDERS if c not in m]
        if missing:
            print(f"| {k} | incomplete round, missing {', '.join(missing)} |")
            continue
        sizes.update(int(m[c].get("n", 0)) for c in CONTENDERS)
        rate = {c: float(m[c]["rate"]) for c in CONTENDERS}
        pgq = max(rate["pgq-b50"], rate["pgq-b100"])
        r_c, r_s = (rate["spectral"] / rate[x] for x in ("ceiling", "ceiling-sca"))
        r_p = rate["spectral"] / pgq
        ratios["ceiling"].append(r_c)
        ratios["ceiling-sca"].append(r_s)
        ratios["pgq"].append(r_p)
        ratios["b100/b50"].append(rate["pgq-b100"] / rate["pgq-b50"])
        cpu = " / ".join(
            str(m[c].get("server_cpu_us_per_item", "?")) for c in ("ceiling-sca", "spectral")
        )
        print(
            f"| {k} | {rate['ceiling']:,.0f} | {rate['ceiling-sca']:,.0f} | "
            f"{rate['spectral']:,.0f} | {rate['pgq-b50']:,.0f} | {rate['pgq-b100']:,.0f} | "
            f"{r_c:.1%} | {r_s:.1%} | {r_p:.2f}x | {cpu} |"
        )
    if len(sizes) > 1:
        print(f"\nWARNING: the contenders drained different amounts: {sorted(sizes)}")
    if not ratios["pgq"]:
        print("\nno complete round")
        return 1

    def med(xs: list[float], fmt: str, unit: str = "") -> str:
        return (
            f"{statistics.median(xs):{fmt}}{unit} (min {min(xs):{fmt}}{unit}, "
            f"max {max(xs):{fmt}}{unit}, {len(xs)} rounds)"
        )

    print(
        f"\nrows per drain {', '.join(f'{n:,}' for n in sorted(sizes))}; medians of per-round ratios:"
    )
    print(f"  ours / ceiling, both synchronous_commit off: {med(ratios['ceiling-sca'], '.1%')}")
    print(f"  ours / ceiling waiting for its flushes:      {med(ratios['ceiling'], '.1%')}")
    print(f"  ours / pgqueuer's best (b50 or b100):        {med(ratios['pgq'], '.2f', 'x')}")
    print(f"  pgqueuer b100 / b50:                         {med(ratios['b100/b50'], '.2f', 'x')}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
