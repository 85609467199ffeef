# syntax=docker/dockerfile:1
# The operator image: `docker build -t sandbox-operator:0.1.0 .` (BuildKit).
# The base is pinned to an exact Python patch release; bump it deliberately.

# Build stage: the project's wheel, plus wheels of all its dependencies, so the runtime stage
# installs offline. Dependencies must come as binary wheels: nothing is compiled anywhere.
FROM python:3.11.17-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip wheel --no-deps --wheel-dir /dist . \
 && pip wheel --only-binary=:all: --wheel-dir /wheels /dist/*.whl

# Runtime stage: the wheels only, installed from the build stage's directory (bind-mounted,
# so no wheel files stay in a layer).
FROM python:3.11.17-slim-bookworm
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="sandbox-operator" \
      org.opencontainers.image.description="Kubernetes operator that gives every AgentSession its own Hugging Face Space sandbox" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11.17-slim-bookworm"
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --disable-pip-version-check --no-index --find-links=/wheels sandbox-operator \
 && pip uninstall --yes pip setuptools wheel
# After the install, which precompiles the bytecode that the read-only filesystem could not hold.
# HOME and HF_HOME live in /tmp: the chart mounts the root filesystem read-only, /tmp writable.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    HF_HOME=/tmp/hf-home
# Numeric, so the kubelet can verify runAsNonRoot without reading /etc/passwd.
USER 65532:65532
WORKDIR /tmp
# 8080: kopf's liveness endpoint; 9090: metrics.
EXPOSE 8080 9090
ENTRYPOINT ["sandbox-operator", "run"]
