# fixbench/base: Python 3.11, an empty venv on PATH, a non-root user and the gRPC health
# check. Every fixbench image starts here, so the choices below are made once.
#
#   BASE_IMAGE  any image with Python 3.11 (Debian bookworm, python:3.11-slim); for GPUs a
#               CUDA runtime image (Ubuntu 22.04), where python3.11 is installed by apt.
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

ARG PYTHON=python3.11
ARG FIXBENCH_UID=10001

# The venv keeps our pins apart from the distribution's Python packages; /data holds the
# store and per-service caches, owned by the service user so named volumes inherit that.
RUN set -eu; \
    if ! command -v "$PYTHON" >/dev/null 2>&1; then \
        apt-get update; \
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
            "$PYTHON" "$PYTHON-venv" ca-certificates; \
        rm -rf /var/lib/apt/lists/*; \
    fi; \
    "$PYTHON" -m venv /opt/venv; \
    groupadd --system --gid "$FIXBENCH_UID" fixbench; \
    useradd --system --uid "$FIXBENCH_UID" --gid fixbench --home-dir /home/fixbench --create-home \
        --shell /usr/sbin/nologin fixbench; \
    mkdir -p /app /data/store /data/cache; \
    chown fixbench:fixbench /data/store /data/cache

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    FIXBENCH_HOST=0.0.0.0 \
    FIXBENCH_PORT=50051 \
    FIXBENCH_CACHE=/data/cache

# Every service image serves grpc.health.v1 on FIXBENCH_PORT (the orchestrator image turns
# this off). The check is a Python script because grpc_health_probe is not on PyPI.
COPY docker/healthcheck.py /usr/local/lib/fixbench/healthcheck.py
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
    CMD ["python", "/usr/local/lib/fixbench/healthcheck.py"]

WORKDIR /app
EXPOSE 50051
USER fixbench
