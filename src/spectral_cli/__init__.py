"""The ``spectral`` operator CLI (an entrypoint package: it may read the environment)."""
