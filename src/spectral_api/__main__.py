"""``python -m spectral_api`` (same as ``spectral-api``)."""

from .main import main

raise SystemExit(main())
