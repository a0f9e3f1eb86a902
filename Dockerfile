# azure-openai-proxy: drop-in replacement for the Go azure-openai-proxy image.
# Same port (8080), same config path (/app/config.yaml), same environment variables.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY azure_openai_proxy ./azure_openai_proxy
RUN pip install ".[entra]" && useradd --system --uid 10001 --home /app proxy \
    && chown -R proxy /app
USER proxy

EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s --start-period=5s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=2).status == 200 else 1)"
# With no -c flag, ./config.yaml (/app/config.yaml) is read if it exists.
ENTRYPOINT ["azure-openai-proxy"]
CMD ["serve", "--listen", "0.0.0.0:8080"]
