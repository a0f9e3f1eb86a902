"""A virtual key's read of a response whose owner this worker does not hold in memory
(made through another worker) waits at most about a second for the object owners'
database, as a read's count does (gateway/ownership.py `_LOOK_WAIT`): past it the owner
is unknown, as when the database fails (a key without restrictions is served). Was: it
waited as long as the owners' one database thread was held up by the writes queued
before it, each up to SQLite's 5 s busy timeout while another writer held the lock.

Two gateways on one database, over the emulator; the second's queue of owner writes
made by a streamed Responses call of its own while another connection holds the
database's write lock (until the read is answered)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.conftest import Emulator
from tests.e2e.test_ledger import _DEAR, _virtual_key, ledger_gateway, sdk  # noqa: F401
from tests.support import ServerThread


def read_behind_queued_writes(
        emulator: Emulator, ledger_gateway: Callable[..., ServerThread],  # noqa: F811
        database: Path, **limits: Any,
) -> tuple[httpx.Response, float, str, Callable[[], httpx.Response]]:
    """A key's (`limits`) read, on a second gateway, of a response it made on the first,
    while the second's owner writes queue behind another connection's write lock: the
    answer, the seconds it took, the response's id, and the same read again (after)."""
    one, two = ledger_gateway(emulator, **_DEAR), ledger_gateway(emulator, **_DEAR)
    _, secret = _virtual_key(one, database, "reader", **limits)
    _virtual_key(two, database, "unused")
    made = sdk(one, secret).responses.create(model="gpt-4o", input="hello",
                                             max_output_tokens=16)  # its owner written
    headers = {"Authorization": f"Bearer {secret}"}

    def read() -> httpx.Response:
        return httpx.get(f"{two.url}/v1/responses/{made.id}", headers=headers, timeout=30)

    answer, took = behind_queued_writes(two, database, headers, read)
    return answer, took, made.id, read


def behind_queued_writes(gateway: ServerThread, database: Path, headers: dict[str, str],
                         ask: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    """`ask`'s answer, and the seconds it took, while `gateway`'s owner writes (a
    streamed Responses call's ids) queue behind another connection's write lock."""
    lock = sqlite3.connect(database, isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")  # another writer: reads pass, writes wait
    try:
        streamed = httpx.post(gateway.url + "/v1/responses", timeout=30, headers=headers,
                              json={"model": "gpt-4o", "input": "hi", "stream": True,
                                    "max_output_tokens": 16})  # its ids claimed: queued
        assert streamed.status_code == 200 and "response.completed" in streamed.text
        started = time.monotonic()
        answer = ask()
        return answer, time.monotonic() - started
    finally:
        lock.execute("ROLLBACK")
        lock.close()


def test_a_read_whose_owner_is_not_in_memory_waits_a_bounded_time(
        emulator: Emulator, ledger_gateway: Callable[..., ServerThread],  # noqa: F811
        tmp_path: Path) -> None:
    # no limits: not restricted
    read, took, made, _ = read_behind_queued_writes(emulator, ledger_gateway,
                                                    tmp_path / "gw.db")
    # main: about 5 s a write queued before it (3 here), here about 2 s (the owner's
    # look-up, then the output items' holder's, each bounded at 1 s; room for a loaded
    # machine below the first write's 5 s)
    assert took < 4.0, took
    assert read.status_code == 200, read.text
    assert read.json()["id"] == made
