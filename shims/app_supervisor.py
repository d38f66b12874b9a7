"""Container entrypoint shim: ``python shims/app_supervisor.py`` == ``spectral-app``.

The supervisor itself lives in ``spectral_cli.supervisor`` (standard library only) so it
is installed with the package as the ``spectral-app`` console script.
"""

from spectral_cli.supervisor import main

if __name__ == "__main__":
    raise SystemExit(main())
