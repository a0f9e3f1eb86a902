"""A background response read through two gateways on one database (what `--workers 2`
shares; each worker has its own once-only table) counts Azure's usage once: the second
gateway finds the first one's count in the database's `counted_usage` (gateway/
rereads.py `recall`). Was: counted by each. Over the emulator, with the OpenAI SDK, a
virtual key's reads and a static client key's alike."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from azure_openai_proxy.store.ownership import OwnerStore
from tests.e2e.conftest import CLIENT_KEY, Emulator
from tests.e2e.test_ledger import _DEAR, _virtual_key, ledger_gateway, records, sdk  # noqa: F401
from tests.support import ServerThread
from tests.waiting import until


def _noted(database: Path, response_id: str) -> bool:
    """Whether the database holds a count of it (written in the background: the read
    after it is what is tested; two reads at the same moment may each count, as
    documented in gateway/rereads.py)."""
    store = OwnerStore.open(database)
    try:
        return store.counted(response_id) is not None
    finally:
        store.close()


@pytest.mark.parametrize("static", [False, True], ids=["virtual-key", "static-key"])
def test_a_background_response_read_on_two_workers_counts_once(
        emulator: Emulator, ledger_gateway: Callable[..., ServerThread],  # noqa: F811
        tmp_path: Path, static: bool) -> None:
    one, two = ledger_gateway(emulator, **_DEAR), ledger_gateway(emulator, **_DEAR)
    key_id: str | None
    key_id, secret = (None, CLIENT_KEY) if static else _virtual_key(
        one, tmp_path / "gw.db", "shared")
    if not static:  # the second gateway loads the key too
        _virtual_key(two, tmp_path / "gw.db", "unused")
    first, second = sdk(one, secret), sdk(two, secret)
    made = first.responses.create(model="gpt-4o", input="hello there", background=True,
                                  max_output_tokens=16)
    until(lambda: first.responses.retrieve(made.id).status == "completed", timeout=20,
          message="the background response never completed")
    until(lambda: _noted(tmp_path / "gw.db", made.id), timeout=10,
          message="the first gateway's count never written")  # main: never
    read = second.responses.retrieve(made.id)
    assert read.usage is not None and first.responses.retrieve(made.id).usage is not None
    records(two)  # its records written too
    counted = [(r.prompt_tokens, r.completion_tokens) for r in records(one)
               if r.key_id == key_id and r.route == "responses" and r.usage_source != "none"]
    # main: twice (the first gateway's first read, then the second gateway's)
    assert counted == [(read.usage.input_tokens, read.usage.output_tokens)]
