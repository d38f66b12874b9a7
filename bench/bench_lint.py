"""Benchmark the compat lint: lint N generated migration files, print files/s and statements/s.

Usage::

    python bench/bench_lint.py [--files 1000] [--locking] [--repeat 3]

The files are written to a temporary directory and linted end to end (read, scan for markers,
parse with pglast, judge, replay) through :func:`spectral_core.compat.lint_files`, the same path
as ``spectral lint compat``.  Target: >= 10,000 statements/s.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from spectral_core.compat import collect_files, lint_files

_TEMPLATE = """\
-- {n:04d}: generated migration for the benchmark
SET lock_timeout = '5s';
CREATE TABLE core.t{n} (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name varchar(40) NOT NULL,
    payload jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX CONCURRENTLY t{n}_name_idx ON core.t{n} (name);
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--files", type=int, default=1000)
    p.add_argument("--repeat", type=int, default=5, help="runs; the best is reported")
    p.add_argument("--locking", action="store_true", help="also run the locking gate")
    args = p.parse_args(argv)
    print("command:", " ".join([Path(sys.executable).name, *sys.argv]))
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        generate(directory, args.files)
        best = best_cpu = float("inf")
        statements = findings = 0
        for _ in range(args.repeat):
            start, cpu = time.perf_counter(), time.process_time()
            files, _ = collect_files([str(directory)])
            results = lint_files(files, locking=args.locking)
            best = min(best, time.perf_counter() - start)
            best_cpu = min(best_cpu, time.process_time() - cpu)
            statements = sum(r.statements for r in results)
            findings = sum(len(r.findings) for r in results)
    print(f"files:       {args.files}")
    print(f"statements:  {statements}  (findings: {findings})")
    print(f"best of {args.repeat}:   {best:.3f} s wall, {best_cpu:.3f} s CPU")
    print(f"files/s:      {args.files / best:,.0f} wall   ({args.files / best_cpu:,.0f} CPU)")
    print(
        f"statements/s: {statements / best:,.0f} wall   ({statements / best_cpu:,.0f} CPU)"
        "  (target >= 10,000)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
