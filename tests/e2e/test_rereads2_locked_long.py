"""Two workers (two gateways on one database) reading one background response while
another process holds the database's write lock past a claim's 1 s bound: neither read
counts Azure's usage (their claims withdrawn, gateway/rereads.py `claimed`), and the
next read, the lock gone, counts it: one measured record in all. Was (session 29): each
read counted it on its worker's memory alone (two measured records).

Over the emulator, with a virtual key; the response's stream cut before Azure's usage,
so its POST is recorded at an estimate, flagged, which stays the only record of it
while the lock is held."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.e2e.conftest import Emulator
from tests.e2e.test_ledger import ledger_gateway, records  # noqa: F401
from tests.e2e.test_rereads_claimed import _SLOW, _asked, _cut_background, _read, two_workers
from tests.support import ServerThread
from tests.unit.test_rereads2_withdrawn import locked_by_another_process
from tests.waiting import until


def test_two_workers_reading_while_the_database_is_locked_long_count_once(
        emulator: Emulator, ledger_gateway: Callable[..., ServerThread],  # noqa: F811
        tmp_path: Path) -> None:
    database = tmp_path / "gw.db"
    one, two, key_id, secret = two_workers(ledger_gateway, emulator, database, False)
    headers = {"Authorization": f"Bearer {secret}"}
    response_id = _cut_background(one, emulator, headers)
    records(one)  # the POST's estimate written: the lock below holds no record back
    records(two)
    seen: list[str] = []
    asked = _asked(emulator, response_id)
    with locked_by_another_process(database):
        readers = [threading.Thread(target=_read, args=(
            f"{server.url}/v1/responses/{response_id}", headers, False, seen))
            for server in (one, two)]
        for reader in readers:
            reader.start()
        until(lambda: _asked(emulator, response_id) >= asked + 2, timeout=_SLOW,
              message="the two reads never reached the emulator")
        for reader in readers:  # each answered past its claim's bound, the lock held
            reader.join(30)
    assert sorted(seen) == ["200 True", "200 True"]
    records(two)  # its records written too
    mine = [r.usage_source for r in records(one) if r.key_id == key_id and r.route == "responses"]
    # session 29: ["estimated", "measured", "measured"] (each worker counted Azure's usage)
    assert sorted(mine) == ["estimated", "none", "none"]
    later = httpx.get(f"{two.url}/v1/responses/{response_id}", headers=headers, timeout=30)
    assert later.status_code == 200
    records(two)
    mine = [r.usage_source for r in records(one) if r.key_id == key_id and r.route == "responses"]
    assert sorted(mine) == ["estimated", "measured", "none", "none"]
