"""The operator CLI's deploy verbs against a real database (as a subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys

import psycopg
import pytest

from spectral_core import Publisher, allocate_generation

from ..acceptance.procs import clean_env


def spectral(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "spectral_cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(SPECTRAL_DATABASE_URL=db_url),
    )


def test_allocate_status_and_drain(db_url: str) -> None:
    """`deploy allocate` prints increasing generations; `deploy status --json` shows rows by
    status, turns and the verdict; `deploy drain` exits 1 with the counts while work
    remains and 0 once drained; bad input exits non-zero with a one-line reason."""
    first = spectral(db_url, "deploy", "allocate", "--version", "1.0.0")
    second = spectral(db_url, "deploy", "allocate", "--version", "1.0.1")
    assert first.returncode == 0 and second.returncode == 0
    g1, g2 = int(first.stdout), int(second.stdout)
    assert g2 == g1 + 1
    with psycopg.connect(db_url, autocommit=True) as conn:
        Publisher(g1).publish(conn, "platform.record", {})
    status = json.loads(spectral(db_url, "deploy", "status", "--json").stdout)
    by_gen = {s["generation"]: s for s in status["generations"]}
    assert by_gen[g1]["outbox"]["pending"] == 1 and by_gen[g1]["verdict"] == "stranded"
    assert by_gen[g2]["verdict"] == "drained" and "turns" in by_gen[g2]
    text = spectral(db_url, "deploy", "status").stdout
    assert "stranded" in text and "1.0.1" in text
    waiting = spectral(db_url, "deploy", "drain", "--generation", str(g1), "--timeout", "0.3")
    assert waiting.returncode == 1 and "1 pending" in waiting.stdout
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE core.outbox SET status = 'done'")
    assert spectral(db_url, "deploy", "drain", "--generation", str(g1)).returncode == 0
    bad = spectral(db_url, "deploy", "allocate", "--version", " ")
    assert bad.returncode != 0 and bad.stderr.count("\n") == 1 and "version" in bad.stderr


UNALLOCATED_VERBS = [
    ("deploy", "drain", "--generation", "{g}", "--timeout", "0.2"),
    (
        "deploy",
        "wait-healthy",
        "--url",
        "http://127.0.0.1:9",
        "--timeout",
        "0.2",
        "--generation",
        "{g}",
    ),
    ("outbox", "redrive", "--generation", "{g}"),
    ("outbox", "purge", "--generation", "{g}"),
    ("agent", "redrive", "--generation", "{g}"),
    ("agent", "redrive", "--generation", "{g}", "--json"),
    ("agent", "dead", "--generation", "{g}"),
]


@pytest.mark.parametrize(
    "verb", UNALLOCATED_VERBS, ids=[" ".join(v[:2]) for v in UNALLOCATED_VERBS]
)
def test_verbs_refuse_a_generation_that_was_never_allocated(
    db_url: str, verb: tuple[str, ...]
) -> None:
    """Every verb that names a generation refuses one that was never allocated: one line on
    stderr naming it, nothing on stdout, exit 3 (the unknown-generation code), and nothing
    changed (a typo must never give the runbook a go-ahead such as "drained")."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        real = allocate_generation(conn, "1.0.0")
        Publisher(real).publish(conn, "platform.record", {})
        before = conn.execute("SELECT count(*), max(generation) FROM core.outbox").fetchone()
    missing = real + 1000
    out = spectral(db_url, *(a.format(g=missing) for a in verb))
    assert out.returncode == 3, out
    assert out.stdout == ""
    assert out.stderr.count("\n") == 1
    assert f"generation {missing} was never allocated" in out.stderr
    with psycopg.connect(db_url, autocommit=True) as conn:
        assert (
            conn.execute("SELECT count(*), max(generation) FROM core.outbox").fetchone() == before
        )


def test_verbs_accept_an_allocated_generation(db_url: str) -> None:
    """The refusal is about allocation only: an allocated generation with no rows drains,
    redrives and purges as before (exit 0)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        g = allocate_generation(conn, "1.0.0")
    drained = spectral(db_url, "deploy", "drain", "--generation", str(g), "--timeout", "0.2")
    assert drained.returncode == 0 and f"generation {g} drained" in drained.stdout
    assert spectral(db_url, "outbox", "redrive", "--generation", str(g)).returncode == 0
    assert spectral(db_url, "outbox", "purge", "--generation", str(g)).returncode == 0
    redriven = spectral(db_url, "agent", "redrive", "--generation", str(g), "--json")
    assert redriven.returncode == 0
    assert json.loads(redriven.stdout) == {"generation": g, "redriven": []}
    listed = spectral(db_url, "agent", "dead", "--generation", str(g), "--json")
    assert json.loads(listed.stdout) == {"generation": g, "dead": []}
