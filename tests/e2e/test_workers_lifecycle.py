"""`--workers N` as an operator meets it: a port someone else holds. Real gateway
processes in front of the emulator."""

from __future__ import annotations

import signal
import socket
import subprocess
from pathlib import Path

from tests.e2e.pools import chat, pool_emulator
from tests.e2e.test_reload_shutdown import gateway_process, write_config
from tests.processes import cli, running


def _refused_start(config: Path, port: int, *args: str) -> tuple[int, str]:
    """Start a gateway on `port`; it must exit by itself within 20 s: (code, output)."""
    with running(cli("-c", str(config), "-l", f"127.0.0.1:{port}", *args)) as process:
        try:
            code = process.popen.wait(20)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running on a taken port:\n{process.output()}") from None
        return code, process.output()


def test_a_second_server_with_workers_on_a_taken_port_refuses_to_start(tmp_path: Path) -> None:
    """SO_REUSEPORT lets any process of the same user bind a port whose listeners set it
    too: a second `--workers 2` server on the first one's port used to start, and the
    kernel then spread the clients over both servers' workers (two configurations,
    two limits tables: a key's RPM admitted twice)."""
    config = tmp_path / "config.yaml"
    with pool_emulator() as emulator:
        write_config(config, emulator.url, [("dep-a", {})])
        with gateway_process(config, "--workers", "2") as (first, client):
            code, output = _refused_start(config, client.port, "--workers", "2")
            assert code == 1, output
            assert f"cannot listen on 127.0.0.1:{client.port}" in output, output
            assert "Address already in use" in output and "Traceback" not in output, output
            assert chat(client, max_tokens=1).choices  # the first one serves on
            first.signal(signal.SIGTERM)
            assert first.popen.wait(15) == 0


def test_a_port_another_program_listens_on_is_one_clear_line_not_a_traceback_per_worker(
        tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    with pool_emulator() as emulator, socket.socket() as other:
        write_config(config, emulator.url, [("dep-a", {})])
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        for args in (("--workers", "2"), ()):
            code, output = _refused_start(config, port, *args)
            assert code == 1, output
            assert f"cannot listen on 127.0.0.1:{port}" in output, output
            assert "Traceback" not in output, output

