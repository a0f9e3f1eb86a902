"""`--workers N` when one worker is sent a SIGTERM alone (an operator's `kill PID`, a
container runtime's stray signal): it drains and exits 0, and the parent used to leave it
unreplaced, saying nothing, the server serving one worker short for good."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.pools import chat, pool_emulator
from tests.e2e.test_reload_shutdown import _client, gateway_process, write_config
from tests.waiting import until


def _workers_of(parent: int) -> set[int]:
    """The live worker processes `parent` spawned (not its resource tracker)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rpartition(")")[2].split()
            command = (entry / "cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError):
            continue  # gone meanwhile
        if stat[0] != "Z" and int(stat[1]) == parent and b"spawn_main" in command:
            found.add(int(entry.name))
    return found


@contextmanager
def _two_workers(tmp_path: Path) -> Iterator[tuple[Any, Any, int]]:
    """A `--workers 2` gateway (a 5 s grace) whose workers both listen (a signal to one
    still importing would kill it: not a drain): (process, client, the parent's pid)."""
    config = tmp_path / "config.yaml"
    with pool_emulator() as emulator:
        write_config(config, emulator.url, [("dep-a", {})], shutdown_grace_seconds=5)
        with gateway_process(config, "--workers", "2") as (process, client):
            parent = process.popen.pid
            until(lambda: process.output().count("listening on") == 2
                  and len(_workers_of(parent)) == 2, 30, process.output())
            yield process, client, parent


def test_a_worker_sent_a_sigterm_alone_is_replaced_and_the_stop_ends_all(
        tmp_path: Path) -> None:
    with _two_workers(tmp_path) as (process, client, parent):
        workers = _workers_of(parent)
        victim = min(workers)
        os.kill(victim, signal.SIGTERM)
        until(lambda: len(_workers_of(parent)) == 2 and victim not in _workers_of(parent),
              10, f"not replaced:\n{process.output()}")
        now = _workers_of(parent)
        assert max(workers) in now, (workers, now)
        until(lambda: "listening on" in process.output().rpartition("replaced by")[2],
              30, process.output())  # the replacement serves
        for _ in range(4):  # fresh connections: either worker
            assert chat(_client(client.port), max_tokens=1).choices
        output = process.output()
        assert (f"(pid {victim}) exited with 0 while the server was not stopping"
                in output), output
        assert output.count("replaced by") == 1, output
        started = time.monotonic()
        process.signal(signal.SIGTERM)
        assert process.popen.wait(15) == 0, process.output()
        assert time.monotonic() - started < 5 + 2, "the stop outlived its grace"
        assert not [pid for pid in now if Path(f"/proc/{pid}").exists()], now  # reaped
        assert process.output().count("replaced by") == 1, process.output()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["group-term", "ctrl-c"])
def test_a_signal_to_the_whole_group_stops_it_and_replaces_none(
        tmp_path: Path, signum: signal.Signals) -> None:
    """systemd's KillMode=control-group, a terminal's Ctrl-C: the parent and every worker
    get the signal at once; the workers' clean exits are the stop's, none is replaced.
    A Ctrl-C's stop exits 130, as a shell counts it (and as it did before it served)."""
    with _two_workers(tmp_path) as (process, client, parent):
        assert chat(_client(client.port), max_tokens=1).choices
        os.killpg(parent, signum)
        expected = 130 if signum == signal.SIGINT else 0
        assert process.popen.wait(15) == expected, process.output()
        assert "replaced by" not in process.output(), process.output()
        assert "while the server was not stopping" not in process.output()
