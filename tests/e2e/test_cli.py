"""The console script as users run it: the Go tool's env mode and config.yaml, flags,
check-config, open-relay refusal, config errors, logs, and the demo."""

from __future__ import annotations

import contextlib
import json
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.conftest import AZURE_KEY, MASKED_AZURE_KEY, Emulator
from tests.processes import Process, cli, running
from tests.waiting import until


def post_chat(port: int, key: str, model: str = "gpt-3.5-turbo") -> dict[str, object]:
    from openai import OpenAI

    client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0)
    reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "secret prompt text"}])
    return reply.model_dump()


def wait_for_output(process: Process, text: str, count: int = 1) -> str:
    """Access lines are buffered (flushed every 200 ms); wait for them."""
    with contextlib.suppress(AssertionError):  # the caller's asserts say what is missing
        until(lambda: process.output().count(text) >= count, timeout=5)
    return process.output()


def test_go_tool_env_mode(emulator: Emulator, reserve_port: Callable[[], int]) -> None:
    port = reserve_port()
    env = {
        "AZURE_OPENAI_ENDPOINT": emulator.url + "/",
        "AZURE_OPENAI_API_VER": "2024-02-01",
        "AZURE_OPENAI_MODEL_MAPPER": "gpt-3.5-turbo=gpt-35-turbo",
    }
    with running(cli("-l", f"127.0.0.1:{port}"), port=port, env=env) as gateway:
        reply = post_chat(port, AZURE_KEY)  # passthrough: the client's key is the Azure key
        assert reply["model"] == "gpt-3.5-turbo"
        entry = emulator.last()
        assert entry["path"] == "/openai/deployments/gpt-35-turbo/chat/completions"
        assert entry["query_params"] == {"api-version": ["2024-02-01"]}
        assert entry["headers"]["api-key"] == MASKED_AZURE_KEY
        # An unmapped model goes to the endpoint through the '.'/':' fallback.
        post_chat(port, AZURE_KEY, model="gpt-4o")
        assert emulator.last()["path"] == "/openai/deployments/gpt-4o/chat/completions"
        output = wait_for_output(gateway, '"route":"chat/completions"', count=2)
    # One structured line per request; no prompts and no keys in the log.
    lines = [json.loads(line) for line in output.splitlines() if line.startswith('{"request_id"')]
    assert len(lines) == 2
    assert lines[0]["route"] == "chat/completions" and lines[0]["status"] == 200
    assert lines[0]["deployment"] == "gpt-35-turbo" and lines[0]["usage"]["total_tokens"] > 0
    assert lines[0]["ts"].endswith("Z") and lines[0]["upstream_ms"] > 0
    assert "secret prompt text" not in output and AZURE_KEY not in output


def test_go_tool_config_file(emulator: Emulator, tmp_path: Path, reserve_port: Callable[[], int]) -> None:
    port = reserve_port()
    (tmp_path / "config.yaml").write_text(f"""\
api_base: "/v1"
deployment_config:
  - deployment_name: "gpt-35-turbo"
    model_name: "gpt-3.5-turbo"
    endpoint: "{emulator.url}/"
    api_key: "{AZURE_KEY}"
    api_version: 2024-02-01
client_keys: ["team-key"]
""")
    # Run where the file is, with no -c: ./config.yaml is the default, as in the Go tool.
    with running(cli("--listen", f"127.0.0.1:{port}"), port=port, cwd=tmp_path):
        post_chat(port, "team-key")
        entry = emulator.last()
        assert entry["query_params"] == {"api-version": ["2024-02-01"]}
        assert entry["headers"]["api-key"] == MASKED_AZURE_KEY
        from openai import AuthenticationError

        with pytest.raises(AuthenticationError):
            post_chat(port, AZURE_KEY)  # the Azure key is not a gateway key


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cli(*args), capture_output=True, text=True, timeout=30, env=env, cwd=cwd)


def test_check_config_prints_routing_table_with_keys_masked(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("""\
client_keys: [client-secret-1]
models:
  gpt-4o:
    - {deployment_name: east-4o, endpoint: "https://east.example/", api_key: "azure-secret-east", priority: 1}
    - {deployment_name: west-4o, endpoint: "https://west.example/", api_key: "azure-secret-west", priority: 2, api: v1, api_version: v1}
upstream: {socks_proxy: "socks5://user:proxy-pass@127.0.0.1:1080"}
""")
    result = run_cli("check-config", "-c", str(config), env={})
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert re.search(r"gpt-4o\s+east-4o\s+https://east.example\s+dated\s+2024-10-21\s+api-key \(configured\)", out)
    assert re.search(r"gpt-4o\s+west-4o\s+https://west.example\s+v1\s+v1", out)
    for secret in ("azure-secret-east", "azure-secret-west", "client-secret-1", "proxy-pass"):
        assert secret not in out + result.stderr


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("deployment_config:\n  - {model_name: a, deployment_name: b, endpoint: 'nope'}\n",
         "deployment for model 'a': endpoint: must be an http(s) URL"),
        ("listen: [1]\n", "listen"),
        ("cors: maybe\n", "cors"),
    ],
)
def test_config_errors_stop_startup_with_one_clear_line(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    result = run_cli("-c", str(config), env={})
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_open_relay_is_refused_unless_allowed(emulator: Emulator, reserve_port: Callable[[], int]) -> None:
    env = {"AZURE_OPENAI_ENDPOINT": emulator.url, "AZURE_OPENAI_MODEL_MAPPER": "gpt-4o=gpt-4o",
           "AZURE_OPENAI_API_KEY": AZURE_KEY}
    result = run_cli("-l", f"127.0.0.1:{reserve_port()}", env=env)
    assert result.returncode == 2 and "open relay" in result.stderr
    port = reserve_port()
    with running(cli("-l", f"127.0.0.1:{port}", "--allow-open"), port=port, env=env) as gateway:
        post_chat(port, "anything", model="gpt-4o")
        assert "OPEN RELAY" in gateway.output()
        assert AZURE_KEY not in gateway.output()


def test_nothing_configured_is_a_clear_error(tmp_path: Path) -> None:
    result = run_cli(env={}, cwd=tmp_path)
    assert result.returncode == 2 and "nothing to serve" in result.stderr


def test_version_flag() -> None:
    result = run_cli("-v")
    assert result.returncode == 0 and result.stdout.startswith("azure-openai-proxy ")


def test_demo_works_as_printed(reserve_port: Callable[[], int]) -> None:
    port, emulator_port = reserve_port(), reserve_port()
    with running(cli("demo", "--listen", f"127.0.0.1:{port}", "--emulator-listen",
                     f"127.0.0.1:{emulator_port}"), port=port) as demo:
        lines = demo.output().splitlines()
        curl = next(line for line in lines if line.startswith("curl "))
        snippet = next(line for line in lines if line.startswith("python3 -c "))
        result = subprocess.run(curl, shell=True, capture_output=True, text=True, timeout=30)
        assert json.loads(result.stdout)["choices"][0]["message"]["content"]
        # The snippet, run with this interpreter (it has the openai SDK).
        code = shlex.split(snippet)[2]
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip()


def test_healthcheck_probes_the_configured_listen_address(reserve_port: Callable[[], int]) -> None:
    """Docker's HEALTHCHECK runs `azure-openai-proxy healthcheck` with the container's
    environment: it probes where `serve` listens (here a port set by the environment),
    exits 1 while nothing answers there and 0 once the gateway does, and shows no key."""
    port = reserve_port()
    env = {"AZURE_OPENAI_ENDPOINT": "http://127.0.0.1:9/", "AZURE_OPENAI_API_KEY": AZURE_KEY,
           "AZURE_OPENAI_PROXY_CLIENT_KEYS": "team-key", "AZURE_OPENAI_PROXY_LISTEN": f"127.0.0.1:{port}"}
    down = run_cli("healthcheck", env=env)
    assert down.returncode == 1 and "unhealthy" in down.stdout, down
    with running(cli(), port=port, env=env):
        up = run_cli("healthcheck", env=env)
    assert up.returncode == 0, up
    assert f"http://127.0.0.1:{port}/health answered 200" in up.stdout
    for result in (down, up):
        assert AZURE_KEY not in result.stdout + result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("command", ["serve", "demo", "emulate"])
def test_healthcheck_follows_the_running_servers_listen_flag(command: str, reserve_port: Callable[[], int]) -> None:
    """In a container the server is PID 1 and its --listen is on its command line, not in
    the healthcheck's: `--pid` (default 1) reads it there, for the gateway, the demo and
    the emulator (which has no /health: any answer from it will do)."""
    port, emulator_port = reserve_port(), reserve_port()
    args = {"serve": ["serve", "--listen", f"0.0.0.0:{port}", "--allow-open"],
            "demo": ["demo", "--listen", f"0.0.0.0:{port}", "--emulator-listen", f"127.0.0.1:{emulator_port}"],
            "emulate": ["emulate", "--listen", f"127.0.0.1:{port}"]}[command]
    env = {"AZURE_OPENAI_ENDPOINT": "http://127.0.0.1:9/", "AZURE_OPENAI_API_KEY": AZURE_KEY}
    with running(cli(*args), port=port, env=env) as server:
        result = run_cli("healthcheck", "--pid", str(server.popen.pid), env=env)
        assert result.returncode == 0, result
        assert f":{port}/health answered " in result.stdout
    # Gone, it is unhealthy (its process id no longer names it: this command's own
    # address is probed, where nothing answers).
    assert run_cli("healthcheck", "--pid", str(server.popen.pid), "--listen", f"127.0.0.1:{port}",
                   env=env).returncode == 1


def test_demo_listens_where_asked_for_a_container(reserve_port: Callable[[], int]) -> None:
    """`demo --listen 0.0.0.0:PORT` (what `docker run -p 8080:8080 ... demo` needs) takes
    connections on every local address, not only 127.0.0.1: here on 127.0.0.2."""
    port, emulator_port = reserve_port(), reserve_port()
    with running(cli("demo", "--listen", f"0.0.0.0:{port}", "--emulator-listen",
                     f"127.0.0.1:{emulator_port}"), port=port):
        from openai import OpenAI

        client = OpenAI(base_url=f"http://127.0.0.2:{port}/v1", api_key="demo-client-key", max_retries=0)
        reply = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Hi"}])
        assert reply.choices[0].message.content
