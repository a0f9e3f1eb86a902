"""A background response's stream cut (or left) is recorded at an estimate of what it
relayed; resumed from an earlier event than its last (from the start, as the SDK's
`retrieve(stream=True)` does without `starting_after`) and cut again, the resumed stream
replays events the first stream relayed. Its estimate counts only the text deltas past
the last one an earlier stream of the response counted (gateway/rereads.py, by their
`sequence_number`): the output relayed twice is counted once. Was: in both estimates.
Resumed on another worker than the first stream's (two gateways on one database, what
`--workers 2` shares), likewise: that worker reads the first stream's estimate from the
database (`counted_usage`) before it relays the replay (`replaying`). Was: it knew only
its own memory, and estimated the replayed output a second time.

The gateway with a ledger and a virtual key over the emulator, whose `cut` fault ends
each stream after a known number of events (so what was relayed is known exactly)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from azure_openai_proxy.governance.estimate import tokens_for_chars
from azure_openai_proxy.store.ownership import OwnerStore
from tests.e2e.conftest import CLIENT_KEY, Emulator
from tests.e2e.test_ledger import _DEAR, _virtual_key, ledger_gateway, records, sdk  # noqa: F401
from tests.e2e.test_rereads_claimed import two_workers
from tests.support import ServerThread
from tests.waiting import until

_DELTA = "response.output_text.delta"


def _events(answer: httpx.Response) -> list[dict[str, object]]:
    assert answer.status_code == 200, answer.text
    return [json.loads(line[6:]) for line in answer.text.splitlines()
            if line.startswith("data: ")]


def _chars(events: list[dict[str, object]], after: int = -1) -> int:
    return sum(len(str(e["delta"])) for e in events
               if e.get("type") == _DELTA and int(str(e["sequence_number"])) > after)


def _last_delta(events: list[dict[str, object]]) -> int:
    return max(int(str(e["sequence_number"])) for e in events if e.get("type") == _DELTA)


def _through(database: Path, response_id: str) -> int:
    """The last text delta the database notes as counted by an estimate (-1: none)."""
    store = OwnerStore.open(database)
    try:
        noted = store.counted(response_id)
    finally:
        store.close()
    return -1 if noted is None else noted[3]


@pytest.mark.parametrize("elsewhere", [False, True], ids=["same-worker", "other-worker"])
@pytest.mark.parametrize("static", [False, True], ids=["virtual-key", "static-key"])
def test_a_resumed_stream_counts_the_output_an_earlier_stream_relayed_once(
        emulator: Emulator, ledger_gateway: Callable[..., ServerThread],  # noqa: F811
        tmp_path: Path, static: bool, elsewhere: bool) -> None:
    database = tmp_path / "gw.db"
    key_id: str | None
    if elsewhere:  # the POST and the read on one, the resumed stream on the other
        gateway, resumer, key_id, secret = two_workers(ledger_gateway, emulator, database,
                                                       static)
    else:
        gateway = resumer = ledger_gateway(emulator, **_DEAR)
        key_id, secret = (None, CLIENT_KEY) if static else _virtual_key(
            gateway, database, "replayed")
    headers = {"Authorization": f"Bearer {secret}"}
    emulator.fault("gpt-4o", "cut", after_frames=6)
    posted = _events(httpx.post(
        gateway.url + "/v1/responses", timeout=30, headers=headers,
        json={"model": "gpt-4o", "input": "hello", "background": True, "stream": True,
              "max_output_tokens": 40}))
    assert not any(e.get("type") == "response.completed" for e in posted)
    response_id = str(posted[0]["response"]["id"])  # type: ignore[index]
    first = _last_delta(posted)
    until(lambda: _through(database, response_id) == first, timeout=10,
          message="the first stream's estimate never noted")

    emulator.fault("*", "cut", after_frames=9)  # from the start: replays the above
    resumed = _events(httpx.get(f"{resumer.url}/v1/responses/{response_id}", timeout=30,
                                headers=headers, params={"stream": "true"}))
    assert not any(e.get("type") == "response.completed" for e in resumed)
    assert _last_delta(resumed) > first and _chars(resumed, first) > 0

    records(resumer)  # its records written (the same database's ledger)
    mine = [r for r in records(gateway) if r.key_id == key_id and r.usage_source != "none"]
    assert [(r.route, r.usage_source) for r in mine
            ] == [("responses", "estimated")] * 2
    post, restream = mine
    assert post.completion_tokens == tokens_for_chars(_chars(posted))
    # main: tokens_for_chars(_chars(resumed)), the first stream's deltas again (on the
    # same worker until session 28, on another until session 29)
    assert restream.completion_tokens == tokens_for_chars(_chars(resumed, first))
    assert restream.prompt_tokens == 0

    # Azure's usage, at a read, counts what both estimates did not (once in all)
    read = sdk(gateway, secret).responses.retrieve(response_id)
    assert read.usage is not None
    mine = [r for r in records(gateway) if r.key_id == key_id and r.usage_source != "none"]
    assert sum(r.completion_tokens for r in mine) == max(
        read.usage.output_tokens, post.completion_tokens + restream.completion_tokens)
