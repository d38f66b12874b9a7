"""spectral_api: the thin Starlette entrypoint over spectral_core (binary ``spectral-api``)."""

from .app import Services, build_services, create_app

__all__ = ["Services", "build_services", "create_app"]
