"""The compat and locking rules, one module per statement family.

Importing this package registers every rule and statement handler in
:mod:`spectral_core.compat.registry`.
"""

from __future__ import annotations

from spectral_core.compat.rules import (  # noqa: F401  (registration)
    constraints,
    drops,
    indexes,
    procedural,
    renames,
    tables,
    types,
)

__all__: list[str] = []
