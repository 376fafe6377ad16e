# syntax=docker/dockerfile:1
# Carnet's production image: `carnet serve` by default; the same image runs
# `migrate`, `idp` and `dispatcher` (see docker-compose.yml).
#
#   docker build -t carnet .
#   docker run --rm -p 8000:8000 -e CARNET_DATABASE_URL=postgresql://... carnet
#
# Both stages use the same base image: the virtual environment built in the first
# one points at that image's Python.
ARG PYTHON_IMAGE=python:3.11-slim

# --- builder: the project as a wheel, installed with its dependencies in /opt/venv ---
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/venv

# Dependencies first, in their own layer: it is rebuilt only when pyproject.toml changes.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
 && /opt/venv/bin/pip install -r /tmp/requirements.txt

COPY service ./service
COPY auth ./auth
COPY storage ./storage
COPY fhir_profiles ./fhir_profiles
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/venv/bin/pip install --no-deps /wheels/carnet-*.whl \
 && /opt/venv/bin/pip check

# --- final: Python, the virtual environment, nothing to compile with ---
FROM ${PYTHON_IMAGE}

# A fixed, unprivileged uid/gid, so that volumes and orchestrators (runAsNonRoot) can rely on it.
# /var/lib/carnet/keys exists in the image so that a named volume mounted there starts
# owned by carnet (mode 0700, as the key store wants it).
RUN groupadd --system --gid 10001 carnet \
 && useradd --system --uid 10001 --gid carnet --home-dir /var/lib/carnet --no-create-home \
        --shell /usr/sbin/nologin carnet \
 && install -d -o carnet -g carnet -m 0750 /var/lib/carnet \
 && install -d -o carnet -g carnet -m 0700 /var/lib/carnet/keys

COPY --from=builder /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CARNET_DATA_DIR=/var/lib/carnet \
    CARNET_HOST=0.0.0.0 \
    CARNET_LOG_FORMAT=json

WORKDIR /var/lib/carnet
USER 10001:10001
EXPOSE 8000

# Liveness of `carnet serve` and `carnet idp` (both answer /health); a container running
# another command (dispatcher, migrate) sets its own healthcheck or disables this one.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('CARNET_PORT', '8000'), timeout=4)"]

ENTRYPOINT ["carnet"]
CMD ["serve"]
