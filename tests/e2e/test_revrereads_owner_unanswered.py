"""A restricted key (a budget, or an allow-list) whose read names its own object, made
through another worker, while the owners' database keeps the look-up waiting past its
1 s bound: answered 503 `service_unavailable` with `retry-after`, not 404. A 404 says
the object is gone (a client may drop what it kept of it); the owner is merely not
known yet, and the same read a moment later is served. Was (rereads): 404.

Two gateways on one database, over the emulator; the second's owners' database thread
held up by owner writes queued behind another connection's write lock (until the read is answered)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.e2e.conftest import Emulator
from tests.e2e.test_ledger import _DEAR, _virtual_key, ledger_gateway, sdk  # noqa: F401
from tests.support import ServerThread


def test_a_restricted_keys_read_the_database_cannot_answer_is_retryable(
        emulator: Emulator, ledger_gateway: Callable[..., ServerThread],  # noqa: F811
        tmp_path: Path) -> None:
    database = tmp_path / "gw.db"
    one, two = ledger_gateway(emulator, **_DEAR), ledger_gateway(emulator, **_DEAR)
    _, secret = _virtual_key(one, database, "budgeted", budget_usd=10_000.0)  # restricted
    _virtual_key(two, database, "unused")
    made = sdk(one, secret).responses.create(model="gpt-4o", input="hello",
                                             max_output_tokens=16)  # its owner written
    headers = {"Authorization": f"Bearer {secret}"}
    lock = sqlite3.connect(database, isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")  # another writer: reads pass, writes wait
    try:
        streamed = httpx.post(two.url + "/v1/responses", timeout=30, headers=headers,
                              json={"model": "gpt-4o", "input": "hi", "stream": True,
                                    "max_output_tokens": 16})  # its ids claimed: queued
        assert streamed.status_code == 200 and "response.completed" in streamed.text
        read = httpx.get(f"{two.url}/v1/responses/{made.id}", headers=headers, timeout=30)
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    # rereads: 404 `No such object`
    assert read.status_code == 503, read.text
    assert read.json()["error"]["code"] == "service_unavailable"
    assert int(read.headers["retry-after"]) >= 1
    assert secret not in read.text
    again = httpx.get(f"{two.url}/v1/responses/{made.id}", headers=headers, timeout=30)
    assert again.status_code == 200, again.text  # the owner read now: the key's own
