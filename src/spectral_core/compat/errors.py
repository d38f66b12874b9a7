"""The compat lint's error class, rooted in :class:`spectral_core.errors.SpectralError`."""

from __future__ import annotations

from spectral_core.errors import SpectralError

__all__ = ["LintError"]


class LintError(SpectralError):
    """The lint could not run (bad baseline, unreadable file, git failure)."""

    exit_code = 2
