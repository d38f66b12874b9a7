"""Documentation that runs: every code block of README.md and docs/**/*.md whose fence
says ``runnable`` (```` ```python runnable ```` or ```` ```bash runnable ````) is run as
written against a fresh test database, so a documented step cannot drift from the code.

The runnable blocks of one document are its steps: they run in order, each in its own
process, from the repository's root (so ``examples/...`` paths work as written), sharing
one fresh database and one ``SPECTRAL_HOME_DIR`` (what a reader's ``.spectral/`` holds:
the operator key of step 1 signs in step 4). The environment is the one a reader has
after ``eval "$(spectral env)"``: ``SPECTRAL_DATABASE_URL`` (the test database, migrated)
and ``SPECTRAL_GENERATION`` (allocated), with real ``spectral-workers`` of that generation
running beside the blocks, as under ``spectral up``. Python blocks run with this interpreter, bash
blocks with ``bash -euo pipefail`` (``spectral`` is this checkout's CLI).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>python|bash) runnable\s*$")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int
    lang: str
    code: str

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def collect(path: Path) -> list[Block]:
    blocks: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, start, body = len(m["indent"]), i + 1, []
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i][indent:])
            i += 1
        if i == len(lines):
            raise AssertionError(f"{path}:{start}: runnable block never closed")
        blocks.append(Block(path, start, m["lang"], "\n".join(body) + "\n"))
        i += 1
    return blocks


DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
BLOCKS = [b for p in DOCS for b in collect(p)]


def test_the_readme_tour_is_collected() -> None:
    """The collector finds the README's tour (a fence typo would silently skip it)."""
    assert any(b.path.name == "README.md" and b.lang == "python" for b in BLOCKS)


def test_the_collector_reads_fences_as_markdown_does(tmp_path: Path) -> None:
    """Only fences marked `runnable` are collected, indented ones too, with their code
    de-indented; an unclosed runnable fence is an error, not a skip."""
    doc = tmp_path / "x.md"
    doc.write_text(
        "```python\nnot me\n```\n- item\n\n  ```bash runnable\n  echo hi\n  ```\n"
        "```python runnable\nprint(1)\n```\n"
    )
    assert [(b.lang, b.code, b.line) for b in collect(doc)] == [
        ("bash", "echo hi\n", 6),
        ("python", "print(1)\n", 9),
    ]
    doc.write_text("```bash runnable\necho\n")
    with pytest.raises(AssertionError, match="never closed"):
        collect(doc)


DOCUMENTS = sorted({b.path for b in BLOCKS})


@pytest.mark.parametrize("doc", DOCUMENTS, ids=[str(p.relative_to(ROOT)) for p in DOCUMENTS])
def test_runnable_document(doc: Path, db_url: str, generation: int, tmp_path: Path) -> None:
    """Every runnable block of the document runs as written, in order, and exits 0 (see
    the module docstring for their environment)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPECTRAL_")}
    env.update(
        SPECTRAL_DATABASE_URL=db_url,
        SPECTRAL_GENERATION=str(generation),
        SPECTRAL_HOME_DIR=str(tmp_path / ".spectral"),
    )
    bindir = tmp_path / "bin"  # `spectral` as the reader's shell has it, from this checkout
    bindir.mkdir()
    shim = bindir / "spectral"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m spectral_cli "$@"\n')
    shim.chmod(0o755)
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    workers = subprocess.Popen(  # what `spectral up` runs beside the reader's shell
        [sys.executable, "-m", "spectral_workers"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    try:
        _wait_for_worker(db_url, generation)
        _run_blocks(doc, env, tmp_path)
    finally:
        workers.send_signal(signal.SIGTERM)
        try:
            workers.wait(30)
        except subprocess.TimeoutExpired:
            workers.kill()


def _wait_for_worker(db_url: str, generation: int) -> None:
    deadline = time.monotonic() + 60
    with psycopg.connect(db_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT count(*) FROM core.workers WHERE generation = %s AND state = 'running'",
                (generation,),
            ).fetchone()
            if row and row[0]:
                return
            time.sleep(0.1)
    raise AssertionError("the workers of the documents' generation did not start")


def _run_blocks(doc: Path, env: dict[str, str], tmp_path: Path) -> None:
    for n, block in enumerate(b for b in BLOCKS if b.path == doc):
        script = tmp_path / f"block{n}.{'py' if block.lang == 'python' else 'sh'}"
        script.write_text(block.code)
        argv = [sys.executable] if block.lang == "python" else ["bash", "-euo", "pipefail"]
        done = subprocess.run(
            [*argv, str(script)],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=180,
            stdin=subprocess.DEVNULL,
        )
        assert done.returncode == 0, f"{block.id} failed:\n{done.stdout}\n{done.stderr}"
