# azure-openai-proxy: drop-in replacement for the Go azure-openai-proxy image.
# Same port (8080), same config path (/app/config.yaml), same environment variables.
#
#   docker build -t azure-openai-proxy .
#
# BASE is any Debian-like image with python3 (>= 3.11) and its venv module: the official
# image by default; tests/container/run.sh builds with a Debian base it makes itself.
ARG BASE=python:3.12-slim

# -- build: install the package and its dependencies into /opt/venv ------------------------
FROM ${BASE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY azure_openai_proxy ./azure_openai_proxy
# The building machine's package index settings and CA certificates may be passed as
# BuildKit secrets (`--secret id=pipconf,src=...`, `--secret id=cacert,src=...`): they are
# mounted for this one step and never stored in a layer or in the final image.
RUN --mount=type=secret,id=pipconf --mount=type=secret,id=cacert \
    set -eu; \
    if [ -s /run/secrets/pipconf ]; then export PIP_CONFIG_FILE=/run/secrets/pipconf; fi; \
    if [ -s /run/secrets/cacert ]; then export PIP_CERT=/run/secrets/cacert; fi; \
    python3 -m venv /opt/venv; \
    /opt/venv/bin/python -m pip install --no-cache-dir ".[entra]"; \
    /opt/venv/bin/python -m pip uninstall -y -q pip setuptools; \
    /opt/venv/bin/python -m compileall -q /opt/venv/lib >/dev/null

# -- the image: the venv only, owned by root, run as a numeric non-root user ---------------
FROM ${BASE}
ARG VERSION=0.1.0
ARG SOURCE=
ARG REVISION=
LABEL org.opencontainers.image.title="azure-openai-proxy" \
      org.opencontainers.image.description="OpenAI-compatible gateway in front of Azure OpenAI, with an Azure emulator" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.revision="${REVISION}"

# Debian's base-passwd already has a user named `proxy` (uid 13): ours is `aoproxy`.
# Its home and the writable paths are the declared volumes; everything else is root's.
RUN set -eu; \
    groupadd --system --gid 10001 aoproxy; \
    useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /var/lib/azure-openai-proxy --shell /usr/sbin/nologin aoproxy; \
    mkdir -p /app /var/lib/azure-openai-proxy; \
    chown 10001:10001 /var/lib/azure-openai-proxy; \
    chmod 0750 /var/lib/azure-openai-proxy
COPY --from=build /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    HOME=/var/lib/azure-openai-proxy
# With no -c flag, ./config.yaml (/app/config.yaml, mount it read-only) is read if present.
WORKDIR /app
# The only paths the gateway writes (multipart uploads are spooled to /tmp), so the
# container runs with `--read-only`.
VOLUME ["/tmp", "/var/lib/azure-openai-proxy"]
USER 10001:10001

EXPOSE 8080
# The gateway is PID 1 and handles SIGTERM itself: it stops accepting, lets requests and
# streams in flight finish for up to shutdown_grace_seconds (default 30), then exits 0.
# Give it longer than that to stop: `docker stop -t 40`, compose `stop_grace_period: 40s`,
# Kubernetes `terminationGracePeriodSeconds: 40`.
STOPSIGNAL SIGTERM
# Probes /health on the address the running server was told to listen on (its flags,
# AZURE_OPENAI_PROXY_LISTEN or the config file), so it follows a changed port, and
# `demo`/`emulate` containers too.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["azure-openai-proxy", "healthcheck"]
ENTRYPOINT ["azure-openai-proxy"]
CMD ["serve"]
