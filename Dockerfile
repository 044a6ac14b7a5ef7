# syntax=docker/dockerfile:1
# The processor image.
#
#   builder: uv installs the locked dependencies (uv.lock) into /opt/venv, then builds
#            the project as a wheel and installs it there (not editable).
#   runtime: slim Python with that venv only: no compiler, no uv, no sources; non-root.
#
#   docker build -t processor .
#   docker run --rm -e PROCESSOR_DATABASE_URL=... -e PROCESSOR_REDIS_URL=... processor
#   docker run --rm processor config          # any other `processor` command
#
# See docs/operations.md (deploy/docker-compose.yml runs it with its services).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
# The uv release scripts/bootstrap.sh uses.
ARG UV_VERSION=0.13.9
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1 \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3 \
    UV_PROJECT_ENVIRONMENT=/opt/venv
RUN pip install --no-cache-dir "uv==${UV_VERSION}"
WORKDIR /build
# Dependencies first, from the lock file alone: this layer is reused until uv.lock changes.
# --locked fails the build if uv.lock does not match pyproject.toml.
COPY pyproject.toml uv.lock ./
RUN uv sync --locked --no-dev --no-install-project
# Then the project: built as a wheel and installed into the venv (--no-editable).
COPY README.md ./
COPY src ./src
RUN uv sync --locked --no-dev --no-editable \
    && /opt/venv/bin/processor --help > /dev/null

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="processor" \
      org.opencontainers.image.description="Stream and domain engine of a GPS tracking platform"
RUN groupadd --system --gid 10001 processor \
    && useradd --system --uid 10001 --gid processor --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin processor
# Same base image, same interpreter path: the venv's links and script shebangs stay valid.
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PROCESSOR_HTTP_HOST=0.0.0.0 \
    PROCESSOR_LOG_FORMAT=json
# Numeric, so orchestrators can verify runAsNonRoot.
USER 10001:10001
EXPOSE 9108
# Liveness only (/readyz is for load balancers and orchestrator readiness probes).
# The HTTP server starts once the database is reachable and migrated: hence the start period.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PROCESSOR_HTTP_PORT', '9108'), timeout=4)"]
# SIGTERM: stop reading, write and acknowledge in-flight batches, exit 0. Give the container
# more than PROCESSOR_SHUTDOWN_TIMEOUT_S (20 s) to stop: docker stop -t 30, compose
# stop_grace_period, Kubernetes terminationGracePeriodSeconds.
STOPSIGNAL SIGTERM
ENTRYPOINT ["processor"]
CMD ["run"]
