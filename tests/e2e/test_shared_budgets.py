"""A key's budget holds across `--workers N` (issue 13: "budgets bypassed"): what one
worker holds for requests in flight counts in the others, and a worker killed while
holding leaves nothing held. A real gateway process with two workers, the emulator
behind it."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from azure_openai_proxy.governance.model import Limits
from azure_openai_proxy.governance.sharedholds import MAX_LINGER
from azure_openai_proxy.store.keys import KeyStore
from tests.e2e.pools import chat_deployment, pool_config, pool_emulator
from tests.e2e.test_reload_shutdown import gateway_process
from tests.e2e.test_shared_limits import _worker_pids
from tests.processes import Process, cli, running
from tests.support import reserved_socket
from tests.waiting import until

# A request's reservation is its max_tokens at the output price (input is free): 10
# tokens at $1,000 per million, one cent.
_PRICES = {"gpt-4o": {"input": 0.0, "output": 1000.0}}
_BODY = {"model": "gpt-4o", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
_RESERVATION = 0.01


def _budgeted_key(database: Path, budget_usd: float) -> str:
    store = KeyStore.open(database)
    try:
        _, secret = store.create_key("budgeted", now=time.time(), limits=Limits(
            budget_usd=budget_usd, budget_period="daily"))
    finally:
        store.close()
    return secret


@contextmanager
def _two_workers(tmp_path: Path, budget_usd: float,
                 **emulator: Any) -> Iterator[tuple[Process, int, str, Any, set[int]]]:
    """A two-worker gateway over one emulator deployment, a key with `budget_usd`:
    (the process, its port, the key's secret, the emulator, the workers' pids)."""
    config, database = tmp_path / "config.yaml", tmp_path / "gw.db"
    secret = _budgeted_key(database, budget_usd)
    with pool_emulator(chat_deployment("dep-a"), **emulator) as upstream:
        config.write_text(yaml.safe_dump({
            **pool_config(upstream.url, [("dep-a", {})]), "prices": _PRICES,
            "database": f"sqlite:///{database}", "log_level": "warning"}))
        with gateway_process(config, "--workers", "2") as (process, client):
            pids = _worker_pids(client.port, 2, time.monotonic() + 30)
            assert len(pids) == 2
            yield process, client.port, secret, upstream, pids


def _connect(port: int) -> http.client.HTTPConnection:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.connect()
    return connection


def _send(connection: http.client.HTTPConnection, secret: str) -> None:
    connection.request("POST", "/v1/chat/completions", body=json.dumps(_BODY),
                       headers={"Authorization": f"Bearer {secret}",
                                "Content-Type": "application/json"})


def _answer(connection: http.client.HTTPConnection) -> tuple[int, dict[str, Any], str]:
    response = connection.getresponse()
    body = json.loads(response.read())
    return response.status, body, response.headers.get("x-should-retry", "")


def test_a_burst_over_two_workers_admits_what_the_budget_allows_as_one_worker_would(
        tmp_path: Path) -> None:
    # 2.5 reservations wide: with every request in flight at once, one worker admits
    # three (each while less than the budget is held), and refuses the rest.
    with _two_workers(tmp_path, 2.5 * _RESERVATION, ttft_ms=3000) as (
            process, port, secret, upstream, _):
        answers: list[tuple[int, dict[str, Any], str]] = []
        lock, start = threading.Lock(), threading.Barrier(12)

        def call() -> None:
            connection = _connect(port)  # a connection of its own: spread over the workers
            try:
                start.wait(30)
                _send(connection, secret)
                answer = _answer(connection)
            finally:
                connection.close()
            with lock:
                answers.append(answer)

        threads = [threading.Thread(target=call) for _ in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert sorted(status for status, _, _ in answers) == [200] * 3 + [429] * 9
        refused = [(body["error"]["code"], retry) for status, body, retry in answers
                   if status == 429]
        assert refused == [("insufficient_quota", "false")] * 9
        assert len([r for r in upstream.requests() if r["status"] == 200]) == 3
        process.signal(signal.SIGTERM)
        assert process.popen.wait(15) == 0


def _server_socket_inode(port: int, client_port: int) -> str | None:
    """The inode of the gateway's side of the loopback connection from `client_port`."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1].split(":"), fields[2].split(":")
        if int(local[1], 16) == port and int(remote[1], 16) == client_port:
            return fields[9]
    return None


def _worker_of(connection: http.client.HTTPConnection, port: int, pids: set[int]) -> int | None:
    """Which worker accepted `connection` (None: none has yet)."""
    assert connection.sock is not None
    inode = _server_socket_inode(port, connection.sock.getsockname()[1])
    if inode is None:
        return None
    for pid in pids:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                    return pid
            except OSError:
                continue  # closed meanwhile
    return None


def _connect_to(port: int, pids: set[int], wanted: int) -> http.client.HTTPConnection:
    """A connection the worker `wanted` accepted (the kernel spreads new ones)."""
    for _ in range(200):  # bounded: each new connection goes to either worker
        connection = _connect(port)
        accepted: list[int | None] = [None]

        def seen(c: http.client.HTTPConnection = connection, a: list[int | None] = accepted) -> bool:
            a[0] = _worker_of(c, port, pids)
            return a[0] is not None

        until(seen, 10, "no worker accepted the connection")
        if accepted[0] == wanted:
            return connection
        connection.close()
    raise AssertionError(f"no connection reached worker {wanted}")


def test_a_worker_killed_while_holding_a_budget_does_not_block_the_key(
        tmp_path: Path) -> None:
    # One reservation wide: a request in flight holds the whole budget.
    with _two_workers(tmp_path, _RESERVATION) as (process, port, secret, upstream, pids):
        # Long enough to outlast the steps up to the kill (about a second; checked below),
        # short enough not to keep the emulator's shutdown waiting long after.
        upstream.fault("dep-a", "hang", count=1, seconds=8)
        first = _connect(port)
        _send(first, secret)
        until(lambda: len(upstream.requests()) == 1, 10, "Azure never got the request")
        holder = _worker_of(first, port, pids)
        assert holder is not None
        [other] = pids - {holder}
        # The other worker sees the hold: refused, as the holder would.
        second = _connect_to(port, pids, other)
        _send(second, secret)
        status, body, retry = _answer(second)
        second.close()
        assert status == 429
        assert (body["error"]["code"], retry) == ("insufficient_quota", "false")
        assert len(upstream.requests()) == 1

        os.kill(holder, signal.SIGKILL)
        assert upstream.requests()[0]["status"] is None  # killed while it held the budget
        until(lambda: f"(pid {holder}) exited" in process.output(), 10,
              "the parent never saw the worker die")
        first.close()
        # Its column is let go once the other worker's book was read after the exit
        # (what it committed last is in it then): a few seconds, MAX_LINGER at most.
        statuses: list[int] = []

        def served() -> bool:
            third = _connect(port)  # only the other worker listens now
            _send(third, secret)
            statuses.append(_answer(third)[0])
            third.close()
            return statuses[-1] == 200

        until(served, MAX_LINGER + 5, "the killed worker's hold was never let go",
              interval=0.2)
        assert set(statuses[:-1]) <= {429}


def test_a_cost_one_worker_spent_stops_the_other_before_its_book_has_the_record(
        tmp_path: Path) -> None:
    # One reservation wide: the first request's cost (one cent) spends it all.
    with _two_workers(tmp_path, _RESERVATION) as (_, port, secret, upstream, pids):
        first = _connect(port)
        until(lambda: _worker_of(first, port, pids) is not None, 10, "never accepted")
        holder = _worker_of(first, port, pids)
        _send(first, secret)
        status, _, _ = _answer(first)
        first.close()
        assert status == 200
        [other] = pids - {holder}
        # At once: the other worker's book (read every 2 s) may not have the record yet.
        second = _connect_to(port, pids, other)
        _send(second, secret)
        status, body, _ = _answer(second)
        second.close()
        assert status == 429
        assert body["error"]["code"] == "insufficient_quota"
        assert len(upstream.requests()) == 1


def _can_mount() -> bool:
    """Whether this test may make a mount namespace of its own (root, no seccomp ban)."""
    try:
        return subprocess.run(["unshare", "-m", "true"], capture_output=True,
                               timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


# In a mount namespace of its own: /dev/shm and the temp dir each a tmpfs of one page,
# so a shared table (1.3 MB) fits in neither (posix_fallocate: ENOSPC), as on a host
# whose /dev/shm and /tmp are full.
_FULL_TMPFS = ('mount -t tmpfs -o size=4k tmpfs /dev/shm && mount -t tmpfs -o size=4k tmpfs '
               '"$TMPDIR" && exec "$@"')


def test_with_no_room_for_the_shared_tables_the_gateway_serves_per_worker_and_says_so(
        tmp_path: Path) -> None:
    # Failed before: the parent's OSError ended the server before it listened.
    if not _can_mount():
        pytest.skip("no mount namespace here (unshare -m)")
    config, database, full = tmp_path / "config.yaml", tmp_path / "gw.db", tmp_path / "full"
    full.mkdir()
    secret = _budgeted_key(database, 10 * _RESERVATION)
    with pool_emulator(chat_deployment("dep-a")) as upstream:
        config.write_text(yaml.safe_dump({
            **pool_config(upstream.url, [("dep-a", {})]), "prices": _PRICES,
            "database": f"sqlite:///{database}", "log_level": "warning"}))
        with reserved_socket() as held:
            port = held.getsockname()[1]
            command = ["unshare", "-m", "sh", "-c", _FULL_TMPFS, "sh",
                       *cli("-c", str(config), "-l", f"127.0.0.1:{port}", "--workers", "2")]
            with running(command, port=port, env={**os.environ, "TMPDIR": str(full)}) as process:
                assert len(_worker_pids(port, 2, time.monotonic() + 30)) == 2
                connection = _connect(port)
                _send(connection, secret)
                status, _, _ = _answer(connection)
                connection.close()
                assert status == 200
                output = process.output()
                assert "cannot make the shared table of rate limits" in output
                assert "cannot make the shared table of budget holds" in output
                process.signal(signal.SIGTERM)
                assert process.popen.wait(15) == 0
