# syntax=docker/dockerfile:1
# The one image for the operator, the gateway sidecar and the emulator:
#   docker build -t ghcr.io/inference-operator/inference-operator:0.1.0 .
# (the chart's default image; its tag is the chart's appVersion, the version in pyproject.toml).
# Checked by tests/install/test_install_dockerfile.py.

ARG PYTHON_IMAGE=python:3.12-slim-bookworm

# Build stage: a virtualenv with the package and its runtime dependencies only (no
# test extras); build tools never reach the final image.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# python3, not python: Debian's own python3 (the base `make image` makes without a
# registry) has no `python` name; the slim image has both.
RUN python3 -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
# Behind a TLS-intercepting proxy pip needs the host's CA bundle: it comes in as a build
# secret (`--secret id=pip-ca,src=...`), mounted for this step only, never in a layer.
RUN --mount=type=secret,id=pip-ca \
    if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi; \
    /opt/venv/bin/pip install .

# Runtime stage: the same base (the virtualenv's python links to it), the virtualenv, and
# a numeric non-root user, so Kubernetes can check runAsNonRoot without a passwd lookup.
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="inference-operator" \
      org.opencontainers.image.source="https://github.com/inference-operator/inference-operator" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp
COPY --from=build /opt/venv /opt/venv
# The chart runs every container with this user and a read-only root filesystem; only
# /tmp and the admin-token volume are writable.
USER 65532:65532
WORKDIR /tmp
EXPOSE 9200 8080
ENTRYPOINT ["inference-operator"]
CMD ["run"]
