"""A virtual key's list (`GET /v1/files`) on a worker that does not hold its objects'
owners in memory (made through another worker), while the object owners' database
keeps the look-up waiting past its 1 s bound: a retryable 503 `service_unavailable`
with `retry-after`, as a restricted key's read of one of them is; the same list a moment
later shows the key's file. Was: 200 without it (the key's own file left out, as if
gone).

Two gateways on one database, over the emulator; the second's owners' thread held up by
owner writes (a streamed Responses call's ids) queued behind another connection's write
lock, until the list is answered."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx

from tests.e2e.conftest import Emulator
from tests.e2e.test_ledger import _DEAR, _virtual_key, ledger_gateway, sdk  # noqa: F401
from tests.e2e.test_rereads_owner_wait import behind_queued_writes
from tests.support import ServerThread


def test_a_list_whose_owners_are_not_read_in_time_is_retryable(
        emulator: Emulator, ledger_gateway: Callable[..., ServerThread],  # noqa: F811
        tmp_path: Path) -> None:
    database = tmp_path / "gw.db"
    one, two = ledger_gateway(emulator, **_DEAR), ledger_gateway(emulator, **_DEAR)
    _, secret = _virtual_key(one, database, "lister")
    _virtual_key(two, database, "unused")
    made = sdk(one, secret).files.create(file=("notes.jsonl", b"{}\n"), purpose="batch")
    headers = {"Authorization": f"Bearer {secret}"}

    def listed() -> httpx.Response:
        return httpx.get(f"{two.url}/v1/files", headers=headers, timeout=30)

    answer, _ = behind_queued_writes(two, database, headers, listed)
    # main: 200 `{"data": []}` (the key's file left out)
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"]["code"] == "service_unavailable"
    assert made.id not in answer.text
    assert int(answer.headers["retry-after"]) >= 1
    again = listed()
    assert again.status_code == 200
    assert [item["id"] for item in again.json()["data"]] == [made.id]
