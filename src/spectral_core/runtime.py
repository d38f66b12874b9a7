"""The running process's context: its generation and identity, bound once at boot.

Publishers stamp rows with the running generation taken from here, so normal code never
passes a generation by hand.  Entrypoints call :func:`bind_runtime` once, after they
verified the generation; libraries read it with :func:`current_runtime`.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, field

from .errors import GenerationError

__all__ = ["RuntimeContext", "bind_runtime", "current_runtime", "unbind_runtime"]


@dataclass(frozen=True, slots=True)
class RuntimeContext:
    """Who this process is: generation, version and a unique instance id."""

    generation: int
    version: str
    instance_id: uuid.UUID = field(default_factory=uuid.uuid4)
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)

    def __post_init__(self) -> None:
        if not isinstance(self.generation, int) or self.generation < 1:
            raise GenerationError(
                "generation must be a positive integer", generation=self.generation
            )


_current: RuntimeContext | None = None


def bind_runtime(ctx: RuntimeContext) -> RuntimeContext:
    """Make ``ctx`` the process's runtime (once; rebinding another generation is an error).

    Raises:
        GenerationError: a runtime with another generation is already bound.
    """
    global _current
    if _current is not None and _current.generation != ctx.generation:
        raise GenerationError(
            "this process already runs another generation", generation=_current.generation
        )
    _current = ctx
    return ctx


def unbind_runtime() -> None:
    """Forget the bound runtime (tests and orderly shutdown)."""
    global _current
    _current = None


def current_runtime() -> RuntimeContext:
    """The bound runtime.

    Raises:
        GenerationError: no runtime was bound (the entrypoint did not call bind_runtime).
    """
    if _current is None:
        raise GenerationError("no running generation: call spectral_core.bind_runtime() at boot")
    return _current
