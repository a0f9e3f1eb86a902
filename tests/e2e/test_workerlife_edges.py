"""`--workers N` and the single server at their edges: port 0, and a stop that comes
while the server still starts. Real gateway processes; nothing is sent upstream."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.test_reload_shutdown import write_config
from tests.processes import cli, running
from tests.waiting import until

UNREACHABLE = "http://127.0.0.1:9"  # (no request goes upstream in these tests)


def _ports(output: str) -> list[int]:
    return [int(port) for port in re.findall(r"listening on http://127\.0\.0\.1:(\d+) ", output)]


@pytest.mark.parametrize("workers", [("--workers", "2"), ()], ids=["workers", "one"])
def test_port_0_logs_the_port_each_server_took(tmp_path: Path, workers: tuple[str, ...]) -> None:
    """The log said `listening on http://127.0.0.1:0`: the port a client needs (each
    worker's own, with port 0) was nowhere."""
    config = tmp_path / "config.yaml"
    write_config(config, UNREACHABLE, [("dep-a", {})])
    count = 2 if workers else 1
    with running(cli("-c", str(config), "-l", "127.0.0.1:0", *workers)) as process:
        until(lambda: len(_ports(process.output())) == count or process.popen.poll() is not None,
              30, process.output())
        ports = _ports(process.output())
        assert len(ports) == count and 0 not in ports, process.output()
        for port in ports:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as answer:
                assert answer.status == 200
        process.signal(signal.SIGTERM)
        assert process.popen.wait(15) == 0, process.output()


def test_check_config_and_healthcheck_say_what_port_0_means(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    write_config(config, UNREACHABLE, [("dep-a", {})])
    env = {"AZURE_OPENAI_PROXY_LISTEN": "127.0.0.1:0"}
    shown = _cli("check-config", "-c", str(config), env=env)
    assert shown.returncode == 0, shown
    assert "listen: 127.0.0.1:0" in shown.stdout and "a free port of its own" in shown.stdout
    probe = _cli("healthcheck", "--listen", "127.0.0.1:0")
    assert probe.returncode == 1, probe
    # it was "unhealthy: ... failed: ConnectionRefusedError", as if a server were down
    assert "has port 0" in probe.stderr and "Refused" not in probe.stdout + probe.stderr, probe


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cli(*args), capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})
