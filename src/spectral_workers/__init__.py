"""``spectral-workers``: the worker runtime entrypoint (no HTTP surface)."""
