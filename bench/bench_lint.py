"""Benchmark the compat lint: statements/s over many files, and the start-up cost of a
one-file run.

Usage::

    python bench/bench_lint.py [--files 1000] [--locking] [--repeat 5] [--startup 15] [--check]

Throughput: N generated migration files are written to a temporary directory and linted end
to end (read, scan for markers, parse with pglast, judge, replay) through
:func:`spectral_core.compat.lint_files`, the same path as ``spectral lint compat``.
Target: >= 20,000 statements/s.

Start-up: ``python -m lint compat`` and ``spectral lint compat`` (the console script, when it
is installed beside this interpreter) on one migration file, each run --startup times in a
fresh process; a bare ``python -c pass`` is measured the same way for reference.
Target: a one-file run under 0.15 s.

Each command runs once unmeasured first, with byte-code writing on, so the runs measure
an installed package (``.pyc`` present), not compilation.  Figures are the best of the runs.  Wall time is printed beside CPU time (the process's, or
the child's user+sys); on a machine shared with other work the wall time includes waiting for
a core, so ``--check`` (exit 1 when a target is missed) judges the CPU figures.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "src")]

from spectral_core.compat import collect_files, lint_files  # noqa: E402

STATEMENTS_TARGET = 20_000
STARTUP_TARGET_S = 0.15

_TEMPLATE = """\
-- {n:04d}: generated migration for the benchmark
SET lock_timeout = '5s';
CREATE TABLE core.t{n} (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name varchar(40) NOT NULL,
    payload jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX t{n}_name_idx ON core.t{n} (name);
ALTER TABLE core.t{p} ADD COLUMN extra_{n} text, ALTER COLUMN name TYPE varchar(80);
ALTER TABLE core.t{p} ADD CONSTRAINT t{p}_c{n} CHECK (length(name) > 0) NOT VALID;
COMMENT ON TABLE core.t{n} IS 'DROP TABLE inside a literal is not DDL';
INSERT INTO core.t{n} (name, payload) VALUES ('a', '{{"k": 1}}'), ('b', NULL);
UPDATE core.t{p} SET payload = '{{}}'::jsonb WHERE payload IS NULL;
CREATE OR REPLACE FUNCTION core.f{n}() RETURNS int LANGUAGE plpgsql AS $$
BEGIN
    RETURN (SELECT count(*) FROM core.t{n});
END $$;
DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM core.t{n}) THEN
    INSERT INTO core.t{n} (name) VALUES ('seed');
END IF; END $$;
"""


def generate(directory: Path, count: int) -> None:
    """Write *count* migrations NNNN_bench.sql into *directory*."""
    for n in range(1, count + 1):
        (directory / f"{n:04d}_bench.sql").write_text(
            _TEMPLATE.format(n=n, p=max(n - 1, 1)), encoding="utf-8"
        )


def throughput(files_n: int, repeat: int, locking: bool) -> tuple[int, float, float, int]:
    """Lint *files_n* generated files *repeat* times: statements, best wall, best CPU, findings."""
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        generate(directory, files_n)
        best = best_cpu = float("inf")
        statements = findings = 0
        for _ in range(repeat):
            start, cpu = time.perf_counter(), time.process_time()
            files, _ = collect_files([str(directory)])
            results = lint_files(files, locking=locking)
            best = min(best, time.perf_counter() - start)
            best_cpu = min(best_cpu, time.process_time() - cpu)
            statements = sum(r.statements for r in results)
            findings = sum(len(r.findings) for r in results)
    return statements, best, best_cpu, findings


def _child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def startup(argv: list[str], runs: int, env: dict[str, str]) -> tuple[float, float, float]:
    """Run *argv* *runs* times: best wall, median wall, best child CPU (seconds)."""
    walls, cpus = [], []
    subprocess.run(argv, env=env, cwd=REPO, capture_output=True, check=False)  # warm-up
    for _ in range(runs):
        cpu0, t0 = _child_cpu(), time.perf_counter()
        proc = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, check=False)
        walls.append(time.perf_counter() - t0)
        cpus.append(_child_cpu() - cpu0)
        if proc.returncode not in (0, 1):
            raise SystemExit(f"{argv} exited {proc.returncode}: {proc.stderr.decode()[-400:]}")
    walls.sort()
    return walls[0], walls[len(walls) // 2], min(cpus)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--files", type=int, default=1000)
    p.add_argument("--repeat", type=int, default=5, help="throughput runs; the best is reported")
    p.add_argument("--startup", type=int, default=15, help="start-up runs per command (0: skip)")
    p.add_argument("--locking", action="store_true", help="also run the locking gate")
    p.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = p.parse_args(argv)
    print("command:", " ".join([Path(sys.executable).name, *sys.argv]))
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}  cpus: {os.cpu_count()}")
    ok = True

    statements, best, best_cpu, findings = throughput(args.files, args.repeat, args.locking)
    rate, rate_cpu = statements / best, statements / best_cpu
    print(f"files:        {args.files}")
    print(f"statements:   {statements}  (findings: {findings})")
    print(f"best of {args.repeat}:    {best:.3f} s wall, {best_cpu:.3f} s CPU")
    print(f"files/s:      {args.files / best:,.0f} wall   ({args.files / best_cpu:,.0f} CPU)")
    print(
        f"statements/s: {rate:,.0f} wall   ({rate_cpu:,.0f} CPU)  (target >= {STATEMENTS_TARGET:,})"
    )
    ok &= rate_cpu >= STATEMENTS_TARGET

    if args.startup:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "src")])}
        # measured as installed: with byte-code caches (a warm-up run writes them)
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        one = "migrations/0006_outbox_generation_check.sql"
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "python -m lint compat": [
                sys.executable,
                "-m",
                "lint",
                "compat",
                "--deployed-through",
                "0000",
                one,
            ],
        }
        script = Path(sys.executable).parent / "spectral"
        if script.exists():
            commands["spectral lint compat"] = [
                str(script),
                "lint",
                "compat",
                "--deployed-through",
                "0000",
                one,
            ]
        print(f"start-up, one file ({one}), {args.startup} runs each:")
        for name, cmd in commands.items():
            wall, median, cpu = startup(cmd, args.startup, env)
            target = "" if name.endswith("pass") else f"  (target < {STARTUP_TARGET_S} s)"
            print(
                f"  {name:24s} best {wall:.3f} s wall (median {median:.3f}), {cpu:.3f} s CPU{target}"
            )
            if not name.endswith("pass"):
                ok &= cpu < STARTUP_TARGET_S
    if args.check and not ok:
        print("a target was missed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
