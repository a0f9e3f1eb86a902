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


def _session(leader: int) -> set[int]:
    """The live processes of `leader`'s session (its workers, orphaned or not)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rpartition(")")[2].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if stat[0] != "Z" and int(stat[3]) == leader:
                found.add(int(entry.name))
    return found


def _holds_sighup(pid: int) -> bool:
    """The server's first step (cli.py `_serve`), whose neighbour installs the SIGTERM
    handler: from here on a stop must be clean (before, Python itself starts)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    blocked = next(line for line in status.splitlines() if line.startswith("SigBlk:"))
    return bool(int(blocked.split()[1], 16) & 1 << (signal.SIGHUP - 1))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["term", "int"])
@pytest.mark.parametrize(("moment", "workers"), [
    ("parent", ("--workers", "2")), ("worker", ("--workers", "2")), ("parent", ())],
    ids=["workers-parent-starting", "workers-worker-starting", "one-starting"])
def test_a_stop_while_the_server_starts_is_a_clean_stop(
        tmp_path: Path, signum: signal.Signals, moment: str, workers: tuple[str, ...]) -> None:
    """SIGINT or SIGTERM before the server serves (systemd's stop right after its start,
    a Ctrl-C): it ended with Python's traceback (of a worker's or the parent's import,
    KeyboardInterrupt) and exit 1 or -2, or killed by SIGTERM's default action (-15).
    Expected: the exit of a stop (0; 130 for SIGINT), no traceback, nothing left."""
    config = tmp_path / "config.yaml"
    write_config(config, UNREACHABLE, [("dep-a", {})])
    with running(cli("-c", str(config), "-l", "127.0.0.1:0", *workers)) as process:
        parent = process.popen.pid
        if moment == "parent":
            until(lambda: _holds_sighup(parent) or process.popen.poll() is not None, 30)
        else:  # a worker spawned, importing
            until(lambda: len(_session(parent)) > 2 or process.popen.poll() is not None, 30)
        assert "listening on" not in process.output(), "it served before the stop"
        process.signal(signum)
        try:
            code = process.popen.wait(30)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"no exit 30 s after the stop:\n{process.output()}") from None
        output = process.output()
        assert code == (130 if signum == signal.SIGINT else 0), output
        assert "Traceback" not in output and "KeyboardInterrupt" not in output, output
        until(lambda: not _session(parent), 15, f"left behind: {_session(parent)}")
