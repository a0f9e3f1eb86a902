"""The systems under test and the upstreams behind them, each as a child process.

- `start_nginx_upstream`: nginx answering every chat call with a fixed Azure body.
- `start_emulator`: the bundled Azure emulator (zero latency, or a per-token delay).
- `start_nginx_proxy`: nginx doing the bare URL rewrite with `proxy_pass` (the limit).
- `start_gateway`: this gateway through its real CLI, default features on.
- `start_gateway_granian`: the same gateway and settings served by granian (RSGI, one
  worker) instead of FastServer: `python -m bench.granian_engine`.
- `start_gateway_governed`: the same gateway, one worker, with governance on: 100 virtual
  keys in a SQLite database, RPM/TPM limits on each, the usage ledger writing to it.
- `start_litellm`: LiteLLM's proxy from its own virtualenv, an `azure/` deployment.

Each returns a `System`: where to send requests and which headers to send.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sqlite3
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from azure_openai_proxy.governance.model import Limits
from azure_openai_proxy.store.keys import KeyStore
from bench.procs import HOST, Child, Children, free_port, http_ok, wait_until

REPO = Path(__file__).resolve().parent.parent
AZURE_KEY = "bench-azure-key-0123456789"
CLIENT_KEY = "sk-bench-client-key"
DEPLOYMENT = "gpt-4o"
SLOW_DEPLOYMENT = "gpt-4o-slow"
ADMIN_KEY = "bench-admin-key-0123456789abcdef"
GOV_KEYS = 100
# The key wrk sends: limits so high that nothing is ever refused, so the limiter does its
# whole work on every request and every answer is a 200.
GOV_KEY_LIMITS = Limits(rpm=100_000_000, tpm=10_000_000_000)
# The other 99 keys: the limits a person or an app would get.
OTHER_KEY_LIMITS = Limits(rpm=600, tpm=200_000)
API_VERSION = "2024-10-21"
AZURE_PATH = f"/openai/deployments/{DEPLOYMENT}/chat/completions?api-version={API_VERSION}"

# What an OpenAI client sends: a system prompt, a user turn, the usual parameters.
CHAT_BODY: dict[str, object] = {
    "model": "gpt-4o",
    "messages": [
        {"role": "system", "content": "You are a helpful assistant for an online shop. Answer in "
                                      "two sentences at most and never invent order numbers."},
        {"role": "user", "content": "My parcel 4411 was due on Tuesday and the tracking page "
                                    "has not changed since Monday. What should I do?"},
    ],
    "temperature": 0.2,
    "max_tokens": 64,
    "user": "bench-user-1",
}

_SAFE = {"filtered": False, "severity": "safe"}
_FILTERS = {"hate": _SAFE, "self_harm": _SAFE, "sexual": _SAFE, "violence": _SAFE}
# What Azure answers (gpt-4o, default content filter), byte for byte in shape.
AZURE_ANSWER: dict[str, object] = {
    "choices": [{
        "content_filter_results": _FILTERS,
        "finish_reason": "stop",
        "index": 0,
        "logprobs": None,
        "message": {
            "content": "I am sorry your parcel is late. Please wait one more working day, then "
                       "reply to your shipping e-mail so we can open a claim with the carrier.",
            "refusal": None,
            "role": "assistant",
        },
    }],
    "created": 1727000000,
    "id": "chatcmpl-AzBench0001",
    "model": "gpt-4o-2024-08-06",
    "object": "chat.completion",
    "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": _FILTERS}],
    "system_fingerprint": "fp_5b26d85e12",
    "usage": {"completion_tokens": 33, "prompt_tokens": 61, "total_tokens": 94},
}


@dataclass(frozen=True)
class System:
    """Something to load: a URL and the headers a client of it sends."""

    name: str
    url: str
    headers: dict[str, str]
    child: Child | None = None
    extra: dict[str, float] = field(default_factory=dict)
    # With governance on: the database the usage ledger writes to.
    database: Path | None = None

    @property
    def pid(self) -> int | None:
        return self.child.pid if self.child is not None else None


def have_nginx() -> bool:
    return shutil.which("nginx") is not None


def _nginx_conf(workdir: Path, name: str, server: str, upstream: str = "") -> Path:
    tmp = workdir / name
    tmp.mkdir(exist_ok=True)
    user = "user root;\n" if os.geteuid() == 0 else ""
    paths = "\n".join(f"  {kind}_temp_path {tmp / kind};"
                      for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    conf = tmp / "nginx.conf"
    conf.write_text(
        f"{user}worker_processes 1;\npid {tmp / 'nginx.pid'};\nerror_log {tmp / 'error.log'} warn;\n"
        "events { worker_connections 8192; multi_accept on; }\n"
        f"http {{\n  access_log off;\n{paths}\n  keepalive_requests 1000000;\n"
        f"{upstream}\n  server {{\n{server}\n  }}\n}}\n"
    )
    return conf


def _start_nginx(children: Children, name: str, conf: Path, port: int) -> Child:
    tmp = conf.parent
    argv = ["nginx", "-p", str(tmp), "-e", str(tmp / "error.log"), "-c", str(conf),
            "-g", "daemon off;"]
    return children.start(name, argv, port)


def start_nginx_upstream(children: Children) -> System:
    port = free_port()
    body = json.dumps(AZURE_ANSWER, separators=(",", ":"))
    server = (
        f"    listen {HOST}:{port} backlog=4096;\n"
        "    location ~ ^/openai/deployments/[^/]+/chat/completions$ {\n"
        "      default_type application/json;\n"
        "      add_header apim-request-id 5a1b2c3d-bench always;\n"
        "      add_header x-ms-region \"East US\" always;\n"
        f"      return 200 '{body}';\n"
        "    }\n"
    )
    child = _start_nginx(children, "upstream-nginx", _nginx_conf(children.workdir, "upstream", server),
                         port)
    system = System("direct", f"http://{HOST}:{port}{AZURE_PATH}", {"api-key": AZURE_KEY}, child)
    wait_until(child, lambda: _chat_ok(system), 10)
    return system


def start_emulator(children: Children, ttft_ms: float = 0, token_ms: float = 0,
                   slow_token_ms: float = 250) -> System:
    """The emulator: `gpt-4o` with the given timing, `gpt-4o-slow` for long streams."""
    port = free_port()
    config = children.workdir / f"emulator-{port}.yaml"
    config.write_text(
        "deployments:\n"
        f"  - {{name: {DEPLOYMENT}, model: gpt-4o-2024-08-06, kind: chat, tpm: null, rpm: null,"
        f" ttft_ms: {ttft_ms}, token_ms: {token_ms}, precise_timing: true}}\n"
        f"  - {{name: {SLOW_DEPLOYMENT}, model: gpt-4o-2024-08-06, kind: chat, tpm: null,"
        f" rpm: null, ttft_ms: 100, token_ms: {slow_token_ms}}}\n"
    )
    argv = [sys.executable, "-m", "azure_openai_proxy", "emulate", "--listen", f"{HOST}:{port}",
            "--api-key", AZURE_KEY, "--config", str(config)]
    child = children.start("emulator", argv, port, env=_python_env())
    system = System("direct", f"http://{HOST}:{port}{AZURE_PATH}", {"api-key": AZURE_KEY}, child)
    wait_until(child, lambda: _chat_ok(system), 30)
    return system


def start_nginx_proxy(children: Children, upstream_port: int) -> System:
    port = free_port()
    upstream = f"  upstream azure {{ server {HOST}:{upstream_port}; keepalive 256; }}"
    server = (
        f"    listen {HOST}:{port} backlog=4096;\n"
        "    location ~ ^/v1/(chat/completions)$ {\n"
        f"      proxy_pass http://azure/openai/deployments/{DEPLOYMENT}/$1?api-version={API_VERSION};\n"
        "      proxy_http_version 1.1;\n"
        "      proxy_set_header Connection \"\";\n"
        "      proxy_set_header Authorization \"\";\n"
        f"      proxy_set_header api-key {AZURE_KEY};\n"
        "      proxy_buffering off;\n"
        "    }\n"
    )
    child = _start_nginx(children, f"nginx-proxy-{port}", _nginx_conf(children.workdir, f"proxy-{port}",
                                                                     server, upstream), port)
    system = System("nginx", f"http://{HOST}:{port}/v1/chat/completions", _client_headers(), child)
    wait_until(child, lambda: _chat_ok(system), 10)
    return system


def _gateway_config(children: Children, port: int, upstream_port: int,
                    engine: str | None = None, database: Path | None = None,
                    scheme: str = "http") -> Path:
    """Client keys, stream normalization, metrics and the info-level access log (to a
    file) all on, as a user runs it; with `database`, governance on too (virtual keys,
    limits, the usage ledger, the admin API). `scheme`: the deployments' endpoints'."""
    config = children.workdir / f"gateway-{port}.yaml"
    governance = (f"database: \"sqlite:///{database}\"\nadmin_key: \"{ADMIN_KEY}\"\n"
                  if database is not None else "")
    config.write_text(
        f"listen: \"{HOST}:{port}\"\n"
        f"client_keys: [\"{CLIENT_KEY}\"]\n"
        "log_level: info\n"
        "metrics: true\n"
        + (f"server_engine: {engine}\n" if engine else "")
        + governance
        + "deployment_config:\n"
        f"  - {{deployment_name: {DEPLOYMENT}, model_name: gpt-4o, endpoint: \"{scheme}://{HOST}:{upstream_port}/\","
        f" api_key: \"{AZURE_KEY}\", api_version: \"{API_VERSION}\"}}\n"
        f"  - {{deployment_name: {SLOW_DEPLOYMENT}, model_name: gpt-4o-slow,"
        f" endpoint: \"{scheme}://{HOST}:{upstream_port}/\", api_key: \"{AZURE_KEY}\","
        f" api_version: \"{API_VERSION}\"}}\n"
    )
    return config


def start_gateway(children: Children, upstream_port: int, workers: int, name: str,
                  engine: str | None = None) -> System:
    """The gateway through its CLI (FastServer), with `_gateway_config`'s settings."""
    port = free_port()
    config = _gateway_config(children, port, upstream_port, engine)
    argv = [sys.executable, "-m", "azure_openai_proxy", "-c", str(config), "--workers", str(workers)]
    return _start_gateway_child(children, name, argv, port)


def start_gateway_granian(children: Children, upstream_port: int,
                          name: str = "gateway-1w-granian") -> System:
    """The same gateway, settings and config file as `start_gateway` with one worker,
    served by granian (its process manager, one worker process) instead of FastServer."""
    port = free_port()
    config = _gateway_config(children, port, upstream_port)
    argv = [sys.executable, "-m", "bench.granian_engine", "-c", str(config)]
    return _start_gateway_child(children, name, argv, port)


def start_gateway_governed(children: Children, upstream_port: int,
                           name: str = "gateway-1w-gov") -> System:
    """`start_gateway` with one worker and governance on: the same config plus a SQLite
    database (made before the start, holding `GOV_KEYS` virtual keys with RPM/TPM limits)
    and an admin key. The client sends the secret of the first key."""
    port = free_port()
    database = children.workdir / f"gov-{port}" / "gateway.db"
    secret = create_keys(database, GOV_KEYS)
    config = _gateway_config(children, port, upstream_port, database=database)
    argv = [sys.executable, "-m", "azure_openai_proxy", "-c", str(config), "--workers", "1"]
    return _start_gateway_child(children, name, argv, port,
                                {"Authorization": f"Bearer {secret}"}, database)


def create_keys(database: Path, count: int) -> str:
    """`count` virtual keys in a new database, each with RPM/TPM limits; the secret of
    the first, whose limits (`GOV_KEY_LIMITS`) never refuse during a run."""
    store = KeyStore.open(database)
    try:
        now = time.time()
        _, secret = store.create_key("bench-wrk", limits=GOV_KEY_LIMITS, now=now)
        for index in range(1, count):
            store.create_key(f"bench-{index:03d}", limits=OTHER_KEY_LIMITS, now=now)
    finally:
        store.close()
    return secret


def ledger_records(database: Path) -> tuple[dict[str, int], int]:
    """(the ledger's records by status, records left in its spool file): read after the
    gateway stopped (SIGTERM writes or spools every queued record)."""
    connection = sqlite3.connect(database)
    try:
        rows = connection.execute(
            "SELECT status, count(*) FROM usage_records GROUP BY status ORDER BY status").fetchall()
    finally:
        connection.close()
    spool = database.with_name(database.name + ".spool.jsonl")
    spooled = sum(1 for line in spool.read_bytes().splitlines() if line.strip()) if spool.exists() else 0
    return {str(status): int(count) for status, count in rows}, spooled


def have_granian() -> bool:
    return importlib.util.find_spec("granian") is not None


def _start_gateway_child(children: Children, name: str, argv: list[str], port: int,
                         headers: dict[str, str] | None = None,
                         database: Path | None = None) -> System:
    child = children.start(name, argv, port, env=_python_env())
    system = System(name, f"http://{HOST}:{port}/v1/chat/completions",
                    headers or _client_headers(), child, database=database)
    cold = wait_until(child, lambda: _chat_ok(system), 30)
    system.extra["cold_start_s"] = cold
    return system


def litellm_binary(venv: str | None) -> Path | None:
    if not venv:
        return None
    binary = Path(venv) / "bin" / "litellm"
    return binary if binary.is_file() else None


def start_litellm(children: Children, binary: Path, upstream_port: int) -> System:
    port = free_port()
    config = children.workdir / f"litellm-{port}.yaml"
    models = "".join(
        f"  - model_name: {model}\n    litellm_params:\n      model: azure/{model}\n"
        f"      api_base: http://{HOST}:{upstream_port}\n      api_key: {AZURE_KEY}\n"
        f"      api_version: \"{API_VERSION}\"\n"
        for model in (DEPLOYMENT, SLOW_DEPLOYMENT)
    )
    config.write_text(
        f"model_list:\n{models}"
        "litellm_settings:\n  set_verbose: false\n  drop_params: true\n"
        f"general_settings:\n  master_key: {CLIENT_KEY}\n"
    )
    env = {**os.environ, "LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False",
           "DISABLE_SCHEMA_UPDATE": "True"}
    env.pop("PYTHONPATH", None)
    argv = [str(binary), "--config", str(config), "--host", HOST, "--port", str(port),
            "--num_workers", "1"]
    child = children.start("litellm", argv, port, env=env)
    system = System("LiteLLM", f"http://{HOST}:{port}/v1/chat/completions", _client_headers(), child)
    system.extra["cold_start_s"] = wait_until(child, lambda: _chat_ok(system), 180)
    return system


def _client_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {CLIENT_KEY}"}


def _python_env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{path}" if path else str(REPO)}


def _chat_ok(system: System) -> bool:
    headers = {"Content-Type": "application/json", **system.headers}
    return http_ok(system.url, json.dumps(CHAT_BODY).encode(), headers)
