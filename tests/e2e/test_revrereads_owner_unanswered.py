"""A restricted key (a budget, or an allow-list) whose read names its own object, made
through another worker, while the owners' database keeps the look-up waiting past its
1 s bound: answered 503 `service_unavailable` with `retry-after`, not 404. A 404 says
the object is gone (a client may drop what it kept of it); the owner is merely not
known yet, and the same read a moment later is served. Was (rereads): 404.

Two gateways on one database, over the emulator; the second's owners' database thread
held up by owner writes queued behind another connection's write lock (until the read is answered)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.e2e.conftest import Emulator
from tests.e2e.test_ledger import ledger_gateway  # noqa: F401
from tests.e2e.test_rereads_owner_wait import read_behind_queued_writes
from tests.support import ServerThread


def test_a_restricted_keys_read_the_database_cannot_answer_is_retryable(
        emulator: Emulator, ledger_gateway: Callable[..., ServerThread],  # noqa: F811
        tmp_path: Path) -> None:
    read, _, _, again = read_behind_queued_writes(
        emulator, ledger_gateway, tmp_path / "gw.db", budget_usd=10_000.0)  # restricted
    # rereads: 404 `No such object`
    assert read.status_code == 503, read.text
    assert read.json()["error"]["code"] == "service_unavailable"
    assert int(read.headers["retry-after"]) >= 1
    assert again().status_code == 200  # the owner read now: the key's own
