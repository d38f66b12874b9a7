"""Repository lint entrypoints: ``python -m lint compat|manifest|ci``.

The engines live in :mod:`spectral_core.compat` so other services can use them; this package
only adds the repository's defaults (``migrations/``, ``deploy/manifest.toml``, the CI baseline).
"""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["REPO_ROOT"]

#: The repository root (the parent of this package).
REPO_ROOT = Path(__file__).resolve().parent.parent

try:  # a clean clone without `pip install -e .` still runs the lints
    import spectral_core  # noqa: F401
except ImportError:  # pragma: no cover - depends on the environment
    sys.path.insert(0, str(REPO_ROOT / "src"))
