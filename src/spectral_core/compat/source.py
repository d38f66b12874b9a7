"""Migration files: discovery, ordering by number, and offset -> line:column mapping."""

from __future__ import annotations

import bisect
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from spectral_core.compat.errors import LintError

__all__ = ["MigrationFile", "Positions", "collect_files", "migration_number"]

_NUMBER = re.compile(r"^(\d+)_")  # over file *names*, never SQL


def migration_number(name: str) -> int | None:
    """Return the ``NNNN`` prefix of ``NNNN_name.sql``, or None when there is none."""
    m = _NUMBER.match(name)
    return int(m.group(1)) if m else None


class Positions:
    """Maps character offsets in a text to 1-based (line, column); lines are found on the
    first lookup (most files report nothing)."""

    __slots__ = ("_starts", "_text")

    def __init__(self, text: str) -> None:
        self._text = text
        self._starts: list[int] | None = None

    def at(self, offset: int) -> tuple[int, int]:
        """Return the (line, column) of *offset* (clamped to the text)."""
        starts = self._starts
        if starts is None:
            starts = [0]
            find = self._text.find
            i = find("\n")
            while i != -1:
                starts.append(i + 1)
                i = find("\n", i + 1)
            self._starts = starts
        offset = max(offset, 0)
        line = bisect.bisect_right(starts, offset) - 1
        return line + 1, offset - starts[line] + 1


@dataclass
class MigrationFile:
    """One migration: where it is, how to show it, its number, and whether it is deployed."""

    path: Path
    display: str
    deployed: bool = False
    text: str | None = None  # content to use instead of the file's (a deployed original)
    number: int | None = field(init=False)

    def __post_init__(self) -> None:
        self.number = migration_number(self.path.name)

    @property
    def sort_key(self) -> tuple[int, str]:
        return (self.number if self.number is not None else 1 << 62, self.path.name)

    def read(self) -> str:
        """Return the file text.

        Raises:
            LintError: the file cannot be read or is not UTF-8.
        """
        if self.text is not None:
            return self.text
        try:
            return self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise LintError(f"cannot read {self.display}: {exc}", path=self.display) from exc


def collect_files(paths: list[str]) -> tuple[list[MigrationFile], list[Path]]:
    """Expand *paths* (files or directories of ``*.sql``) into migrations sorted by number.

    Returns:
        The migration files, and the directories that were expanded.

    Raises:
        LintError: a path does not exist.
    """
    files: dict[Path, MigrationFile] = {}
    dirs: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            dirs.append(p)
            real = p.resolve()  # once per directory; a symlinked file is resolved itself
            with os.scandir(p) as entries:
                for entry in sorted(entries, key=lambda e: e.name):
                    if not entry.name.endswith(".sql") or not entry.is_file():
                        continue
                    child = p / entry.name
                    key = child.resolve() if entry.is_symlink() else real / entry.name
                    if key not in files:
                        files[key] = MigrationFile(child, str(child))
        elif p.is_file():
            files.setdefault(p.resolve(), MigrationFile(p, str(p)))
        else:
            raise LintError(f"no such file or directory: {raw}", path=raw)
    return sorted(files.values(), key=lambda f: f.sort_key), dirs
