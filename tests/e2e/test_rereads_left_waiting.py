"""A virtual key's resumed stream (`GET responses/{id}?stream=true`) whose client leaves
while the gateway reads the database's note of the response (`replaying`, at most 1 s)
gives its request slot back: the key's `max_parallel` is not used up for good. Was: the
look-up was awaited after the key's limits held the request and before the `try` whose
`finally` releases them, so the cancelled handler kept its slot (`in_flight`) forever
and every later request of a `max_parallel: 1` key was refused 429.

One gateway with a database, over the emulator; the owners' database thread kept busy
by owner writes queued behind another connection's write lock (held 2.5 s, bounded)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import Emulator
from tests.e2e.test_ledger import _DEAR, _virtual_key, ledger_gateway  # noqa: F401
from tests.e2e.test_rereads_claimed import _done_at_azure
from tests.support import ServerThread
from tests.waiting import until

_HOLD = 2.5  # seconds the write lock is held: past the resumed stream's 1 s look-up


def test_a_resumed_stream_left_during_its_look_up_gives_its_slot_back(
        emulator: Emulator, ledger_gateway: Callable[..., ServerThread],  # noqa: F811
        tmp_path: Path) -> None:
    database = tmp_path / "gw.db"
    gateway = ledger_gateway(emulator, **_DEAR)
    _, secret = _virtual_key(gateway, database, "one-at-a-time", max_parallel=1)
    headers = {"Authorization": f"Bearer {secret}"}
    made = httpx.post(gateway.url + "/v1/responses", timeout=30, headers=headers,
                      json={"model": "gpt-4o", "input": "hello", "background": True,
                            "max_output_tokens": 16})
    assert made.status_code == 200, made.text
    response_id = made.json()["id"]
    until(lambda: _done_at_azure(emulator, response_id), timeout=20,
          message="the background response never completed")
    url = f"{gateway.url}/v1/responses/{response_id}"
    lock = sqlite3.connect(database, isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")  # another writer: reads pass, writes wait
    try:
        streamed = httpx.post(gateway.url + "/v1/responses", timeout=30, headers=headers,
                              json={"model": "gpt-4o", "input": "hi", "stream": True,
                                    "max_output_tokens": 16})  # its owner writes queue
        assert streamed.status_code == 200 and "response.completed" in streamed.text
        with pytest.raises(httpx.TimeoutException):  # its client gives up while the
            # gateway waits on the database (up to 1 s)
            httpx.get(url, headers=headers, params={"stream": "true"}, timeout=0.3)
        time.sleep(0.2)  # the disconnect reaches the gateway
    finally:
        time.sleep(max(0.0, _HOLD - 0.5))
        lock.execute("ROLLBACK")
        lock.close()
    # main (rereads): 429 from here on, the key's one slot held by the request that left
    until(lambda: httpx.get(url, headers=headers, timeout=10).status_code == 200,
          timeout=10, message="the key's request slot was never given back")
