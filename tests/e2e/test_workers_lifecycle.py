"""`--workers N` as an operator meets it: a port someone else holds, a parent that is
killed. Real gateway processes in front of the emulator."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from tests.e2e.pools import chat, pool_emulator
from tests.e2e.test_reload_shutdown import (
    finish,
    gateway_process,
    paced_emulator,
    refused,
    stream_of,
    write_config,
)
from tests.e2e.test_shared_limits import _worker_pids
from tests.processes import cli, running
from tests.waiting import until


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


def _running(pid: int) -> bool:
    """`pid` exists and is not a zombie (an orphan's exit may wait for a reaper)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_workers_whose_parent_is_killed_finish_their_streams_and_exit(tmp_path: Path) -> None:
    """A SIGKILLed parent (kill -9, the OOM killer) used to leave its workers serving
    forever, orphans nobody would signal, holding the port beside the next server."""
    config = tmp_path / "config.yaml"
    with paced_emulator() as emulator:
        write_config(config, emulator.url, [("dep-a", {})])
        with gateway_process(config, "--workers", "2") as (process, client):
            parent = process.popen.pid
            try:
                workers = _worker_pids(client.port, 2, time.monotonic() + 30)
                assert len(workers) == 2
                stream = stream_of(client)
                next(stream)
                os.kill(parent, signal.SIGKILL)
                assert process.popen.wait(5) == -signal.SIGKILL
                finish(stream)  # its worker drains it first
                until(lambda: not any(map(_running, workers)), 15,
                      f"workers {workers} still run without their parent")
                assert refused(client.port)
                assert process.output().count("the parent process is gone") == 2
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(parent, signal.SIGKILL)  # orphans left by a failure
