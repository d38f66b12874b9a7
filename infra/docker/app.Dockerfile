# syntax=docker/dockerfile:1
#
# The app image: `spectral-app` supervising `spectral-api` and `spectral-workers`.
#
#   docker build -f infra/docker/app.Dockerfile -t spectral-app:1.4.2 .      # repo root
#   docker run --rm -p 8000:8000 \
#       -e SPECTRAL_GENERATION="$GEN" \
#       -e SPECTRAL_DATABASE_URL='postgresql://user:pass@db:5432/spectral' \
#       spectral-app:1.4.2
#
# SPECTRAL_GENERATION is a run-time variable on purpose: one image runs any allocated
# generation (`spectral deploy allocate` prints it), so it is never baked in here. Without
# it (or with a generation that was never allocated) both children exit 3 and the
# supervisor stops with exit code 3 instead of restarting them.
# See docs/howto/container.md.

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

# An unprivileged user owns nothing in the install; the app only needs to read it.
RUN groupadd --system --gid 10001 spectral \
 && useradd --system --uid 10001 --gid spectral --home-dir /home/spectral \
        --create-home --shell /usr/sbin/nologin spectral

WORKDIR /opt/spectral

# Only what the wheel needs (pyproject's readme and packages), then the entrypoint shim.
COPY pyproject.toml README.md ./
COPY src/ ./src/
# the operator console's static files: the wheel ships them as spectral_api/console
COPY apps/console/ ./apps/console/
COPY shims/app_supervisor.py ./shims/app_supervisor.py
# DL3013 (pin versions): this installs the project itself from the build context; its
# dependency ranges live in pyproject.toml, and the image tag pins the result.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir '.[api,workers]' \
 && rm -rf /opt/spectral/src /opt/spectral/apps

# Listen on every interface inside the container (the default 127.0.0.1 would be
# unreachable through a published port). The port stays at the settings default.
ENV SPECTRAL_API_HOST=0.0.0.0 \
    SPECTRAL_API_PORT=8000 \
    SPECTRAL_HOME_DIR=/home/spectral/.spectral

# Numeric ids so orchestrators can verify runAsNonRoot without an /etc/passwd lookup.
USER 10001:10001
WORKDIR /home/spectral

EXPOSE 8000

# `/health` answers 200 for pass/warn and 503 for fail; urlopen raises on anything but
# 2xx, so a failing or unreachable API marks the container unhealthy (no curl in slim).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('SPECTRAL_API_PORT', '8000'); sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:' + port + '/health', timeout=4).status == 200 else 1)"]

# The supervisor forwards SIGTERM/SIGINT to both children (TERM -> grace -> KILL).
# Exec form: spectral-app is PID 1 and receives `docker stop`'s signal itself.
STOPSIGNAL SIGTERM
ENTRYPOINT ["spectral-app"]
