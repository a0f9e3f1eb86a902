"""Two workers reading one background response at the same moment count Azure's usage
once: the first to claim it in the database (`counted_usage`, one transaction) counts
it, the other drops it (gateway/rereads.py). Was: each looked up the database, found
nothing noted yet (the note was written after the count, in the background) and counted
it. One of the two reads is the response's stream resumed (`GET responses/{id}?stream=
true`, to its end, Azure's usage in it): it claims the response before it waits on the
database, not after.

Two gateways on one database (what `--workers 2` shares), over the emulator. The window
between the look and the note is held open by another connection holding the database's
write lock (a writer that holds it longer: the ledger's, the CLI's) until both reads
have reached Azure and a moment more, well under the 1 s a claim waits for the database
before it counts on memory alone."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import AZURE_KEY, CLIENT_KEY, Emulator
from tests.e2e.test_ledger import _DEAR, _virtual_key, ledger_gateway, records  # noqa: F401
from tests.support import ServerThread
from tests.waiting import until

# Seconds the write lock is held after both reads reached Azure: their claims then
# queue behind it, well under their 1 s bound.
_HOLD = 0.2
_SLOW = 20.0  # the longest two reads may take to reach Azure on a loaded machine


def two_workers(
        ledger_gateway: Callable[..., ServerThread], emulator: Emulator,  # noqa: F811
        database: Path, static: bool,
) -> tuple[ServerThread, ServerThread, str | None, str]:
    """Two gateways on one database, and a caller's key known to both (a virtual key's,
    or the static client key): the gateways, the key's id (None: static), its secret."""
    one, two = ledger_gateway(emulator, **_DEAR), ledger_gateway(emulator, **_DEAR)
    key_id, secret = (None, CLIENT_KEY) if static else _virtual_key(one, database, "shared")
    if not static:
        _virtual_key(two, database, "unused")  # the second gateway loads the key too
    return one, two, key_id, secret


def _done_at_azure(emulator: Emulator, response_id: str) -> bool:
    """Asked of the emulator itself: a read through a gateway would count it."""
    answer = httpx.get(f"{emulator.url}/openai/responses/{response_id}", timeout=10,
                       params={"api-version": "2025-04-01-preview"},
                       headers={"api-key": AZURE_KEY})
    return answer.status_code == 200 and answer.json().get("status") == "completed"


def _cut_background(gateway: ServerThread, emulator: Emulator, headers: dict[str, str]) -> str:
    """A background response whose stream is cut before Azure's usage (its POST recorded
    at an estimate), done at Azure: its id."""
    emulator.fault("gpt-4o", "cut", after_frames=4)
    posted = httpx.post(gateway.url + "/v1/responses", timeout=30, headers=headers,
                        json={"model": "gpt-4o", "input": "hello", "background": True,
                              "stream": True, "max_output_tokens": 40})
    assert posted.status_code == 200, posted.text
    first = next(line for line in posted.text.splitlines() if line.startswith("data: "))
    response_id = str(json.loads(first[6:])["response"]["id"])
    until(lambda: _done_at_azure(emulator, response_id), timeout=20,
          message="the background response never completed")
    return response_id


def _asked(emulator: Emulator, response_id: str) -> int:
    """How many reads of the response reached the emulator (a test's own among them)."""
    return sum(1 for seen in emulator.requests()
               if seen.get("method") == "GET" and response_id in str(seen.get("path")))


def _read(url: str, headers: dict[str, str], stream: bool, seen: list[str]) -> None:
    params = {"stream": "true"} if stream else {}
    answer = httpx.get(url, headers=headers, params=params, timeout=30)
    seen.append(f"{answer.status_code} {'completed' in answer.text}")


@pytest.mark.parametrize("static", [False, True], ids=["virtual-key", "static-key"])
@pytest.mark.parametrize("stream", [False, True], ids=["two-reads", "resumed-and-read"])
def test_two_workers_reading_a_response_at_once_count_it_once(
        emulator: Emulator, ledger_gateway: Callable[..., ServerThread],  # noqa: F811
        tmp_path: Path, static: bool, stream: bool) -> None:
    database = tmp_path / "gw.db"
    one, two, key_id, secret = two_workers(ledger_gateway, emulator, database, static)
    headers = {"Authorization": f"Bearer {secret}"}
    response_id = _cut_background(one, emulator, headers)
    records(one)  # the POST's estimate written: the lock below holds no record back
    seen: list[str] = []
    asked = _asked(emulator, response_id)
    lock = sqlite3.connect(database, isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")  # another writer: reads pass, writes wait
    try:
        readers = [threading.Thread(target=_read, args=(
            f"{server.url}/v1/responses/{response_id}", headers, stream and n == 0, seen))
            for n, server in enumerate((one, two))]
        for reader in readers:
            reader.start()
        # Held until both reads have had Azure's answer (their claims start then), and a
        # moment more: not a fixed time, which a loaded machine could spend before the
        # reads reach Azure (the race not run) or past a claim's 1 s bound (both count).
        until(lambda: _asked(emulator, response_id) >= asked + 2, timeout=_SLOW,
              message="the two reads never reached the emulator")
        time.sleep(_HOLD)
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    for reader in readers:
        reader.join(30)
    assert sorted(seen) == ["200 True", "200 True"]
    records(two)  # its records written too
    mine = [r for r in records(one) if r.key_id == key_id and r.route == "responses"]
    measured = [r for r in mine if r.usage_source == "measured"]
    # main: 2 (each worker counted Azure's usage, less the POST's estimate)
    assert len(measured) == 1, [(r.usage_source, r.completion_tokens) for r in mine]
