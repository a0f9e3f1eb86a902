"""A background response's stream cut on one worker (recorded at an estimate of what it
relayed), then resumed from the start on another worker and cut again: the resumed
stream's estimate counts only the text deltas past the last one the first stream's
estimate counted, which the second worker reads from the database (`counted_usage`)
before it relays the replay (gateway/rereads.py `replaying`). Was: it knew only its own
memory, and estimated the replayed output a second time.

Two gateways on one database (what `--workers 2` shares), over the emulator, whose `cut`
fault ends each stream after a known number of events."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from azure_openai_proxy.governance.estimate import tokens_for_chars
from azure_openai_proxy.store.ownership import OwnerStore
from tests.e2e.conftest import CLIENT_KEY, Emulator
from tests.e2e.test_acctleft_resumed_replay import _chars, _events, _last_delta
from tests.e2e.test_ledger import _DEAR, _virtual_key, ledger_gateway, records, sdk  # noqa: F401
from tests.support import ServerThread
from tests.waiting import until


def _through(database: Path, response_id: str) -> int:
    """The last text delta the database notes as counted by an estimate (-1: none)."""
    store = OwnerStore.open(database)
    try:
        noted = store.counted(response_id)
    finally:
        store.close()
    return -1 if noted is None else noted[3]


@pytest.mark.parametrize("static", [False, True], ids=["virtual-key", "static-key"])
def test_a_stream_resumed_on_another_worker_estimates_the_replay_once(
        emulator: Emulator, ledger_gateway: Callable[..., ServerThread],  # noqa: F811
        tmp_path: Path, static: bool) -> None:
    database = tmp_path / "gw.db"
    one, two = ledger_gateway(emulator, **_DEAR), ledger_gateway(emulator, **_DEAR)
    key_id: str | None
    key_id, secret = (None, CLIENT_KEY) if static else _virtual_key(one, database, "replayed")
    if not static:
        _virtual_key(two, database, "unused")  # the second gateway loads the key too
    headers = {"Authorization": f"Bearer {secret}"}
    emulator.fault("gpt-4o", "cut", after_frames=6)
    posted = _events(httpx.post(
        one.url + "/v1/responses", timeout=30, headers=headers,
        json={"model": "gpt-4o", "input": "hello", "background": True, "stream": True,
              "max_output_tokens": 40}))
    assert not any(e.get("type") == "response.completed" for e in posted)
    response_id = str(posted[0]["response"]["id"])  # type: ignore[index]
    first = _last_delta(posted)
    until(lambda: _through(database, response_id) == first, timeout=10,
          message="the first gateway's estimate never noted")

    emulator.fault("*", "cut", after_frames=9)  # from the start: replays the above
    resumed = _events(httpx.get(f"{two.url}/v1/responses/{response_id}", timeout=30,
                                headers=headers, params={"stream": "true"}))
    assert not any(e.get("type") == "response.completed" for e in resumed)
    assert _last_delta(resumed) > first and _chars(resumed, first) > 0

    records(two)
    mine = [r for r in records(one) if r.key_id == key_id and r.usage_source != "none"]
    assert [(r.route, r.usage_source) for r in mine] == [("responses", "estimated")] * 2
    post, restream = mine
    assert post.completion_tokens == tokens_for_chars(_chars(posted))
    # main: tokens_for_chars(_chars(resumed)), the first stream's deltas again
    assert restream.completion_tokens == tokens_for_chars(_chars(resumed, first))
    assert restream.prompt_tokens == 0

    # Azure's usage, at a read on either worker, counts what both estimates did not
    read = sdk(one, secret).responses.retrieve(response_id)
    assert read.usage is not None
    records(two)
    mine = [r for r in records(one) if r.key_id == key_id and r.usage_source != "none"]
    assert sum(r.completion_tokens for r in mine) == max(
        read.usage.output_tokens, post.completion_tokens + restream.completion_tokens)
