"""The whole spectral error hierarchy.

Every error raised by :mod:`spectral_core` derives from :class:`SpectralError`.
The class docstring is the default message; context travels as attributes, never
baked into the message string only.  Driver errors (``psycopg.Error``) are translated
in exactly one place, :mod:`spectral_core.db._wrap`, with the original kept as
``__cause__``.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ApprovalError",
    "BudgetExceeded",
    "ChecksumMismatch",
    "ClaimLost",
    "ConfigError",
    "ConnectionLost",
    "DatabaseReadOnly",
    "ContentHashMismatch",
    "DatabaseError",
    "DuplicateEvent",
    "GenerationError",
    "HandlerError",
    "MigrationError",
    "MigrationLockTimeout",
    "MissingMigration",
    "OperatorError",
    "ModuleError",
    "ModuleNotFound",
    "ModuleTrap",
    "OutboxError",
    "PayloadError",
    "PinConflict",
    "RateLimited",
    "SandboxError",
    "SpectralError",
    "TenantError",
    "UnknownGeneration",
]

#: Exit code reserved for "this process can never start with this configuration"
#: (bad settings, missing or unallocated generation).  Supervisors never restart it.
EXIT_CANNOT_START = 3


class SpectralError(Exception):
    """A spectral error occurred."""

    exit_code: int = 1

    def __init__(self, message: str | None = None, **context: Any) -> None:
        self.message = message or (self.__doc__ or "").strip().splitlines()[0]
        self.context = context
        for key, value in context.items():
            setattr(self, key, value)
        super().__init__(self.message)


class ConfigError(SpectralError, ValueError):
    """The configuration is invalid."""

    exit_code = EXIT_CANNOT_START


class GenerationError(ConfigError):
    """SPECTRAL_GENERATION is missing or names a generation that was never allocated."""


class UnknownGeneration(GenerationError):
    """The generation was never allocated in core.deployments."""


class DatabaseError(SpectralError):
    """A database operation failed."""


class ConnectionLost(DatabaseError):
    """The database connection was lost or could not be established."""


class DatabaseReadOnly(ConnectionLost):
    """The database cannot take writes (a standby, or a read-only session): an outage."""


class OutboxError(SpectralError):
    """An outbox operation failed."""


class PayloadError(OutboxError, ValueError):
    """The event payload is not valid JSON or is too large."""


class DuplicateEvent(OutboxError):
    """An event with this idempotency key was already handled."""


class ClaimLost(OutboxError):
    """The claim on an outbox row was lost (re-pended by the reaper)."""


class HandlerError(OutboxError, ValueError):
    """The handler registration is invalid."""


class TenantError(SpectralError):
    """The tenant or API key is unknown, revoked or invalid."""


class OperatorError(SpectralError):
    """An operator console request that cannot be carried out as asked (nothing changed)."""


class ModuleError(SpectralError):
    """A decision-module operation failed."""


class ModuleNotFound(ModuleError, LookupError):
    """No such module."""


class PinConflict(ModuleError):
    """This key is already pinned to different content; pins never change."""


class ContentHashMismatch(ModuleError):
    """The module bytes do not match their content address (tampered)."""


class ApprovalError(ModuleError):
    """The module has no valid operator approval for this content and key."""


class SandboxError(SpectralError):
    """The sandbox refused or failed to run the module."""


class BudgetExceeded(SandboxError):
    """The module exhausted a sandbox budget."""


class ModuleTrap(SandboxError):
    """The module trapped or produced an invalid result."""


class RateLimited(SpectralError):
    """Too many requests for this tenant."""


class MigrationError(SpectralError):
    """The migration ledger and the migration files disagree."""


class ChecksumMismatch(MigrationError):
    """An applied migration file was edited."""


class MissingMigration(MigrationError):
    """An applied migration file is missing or was renumbered."""


class MigrationLockTimeout(MigrationError):
    """A migration file gave up waiting for a lock; nothing of it was applied."""
