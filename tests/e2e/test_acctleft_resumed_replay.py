"""A background response's stream cut (or left) is recorded at an estimate of what it
relayed; resumed from an earlier event than its last (from the start, as the SDK's
`retrieve(stream=True)` does without `starting_after`) and cut again, the resumed stream
replays events the first stream relayed. Its estimate counts only the text deltas past
the last one an earlier stream of the response counted (gateway/rereads.py, by their
`sequence_number`): the output relayed twice is counted once. Was: in both estimates.

The gateway with a ledger and a virtual key over the emulator, whose `cut` fault ends
each stream after a known number of events (so what was relayed is known exactly)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from azure_openai_proxy.governance.estimate import tokens_for_chars
from tests.e2e.conftest import CLIENT_KEY, Emulator
from tests.e2e.test_ledger import _DEAR, _virtual_key, ledger_gateway, records, sdk  # noqa: F401
from tests.support import ServerThread

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


@pytest.mark.parametrize("static", [False, True], ids=["virtual-key", "static-key"])
def test_a_resumed_stream_counts_the_output_an_earlier_stream_relayed_once(
        emulator: Emulator, ledger_gateway: Callable[..., ServerThread],  # noqa: F811
        tmp_path: Path, static: bool) -> None:
    gateway = ledger_gateway(emulator, **_DEAR)
    key_id: str | None
    key_id, secret = (None, CLIENT_KEY) if static else _virtual_key(
        gateway, tmp_path / "gw.db", "replayed")
    headers = {"Authorization": f"Bearer {secret}"}
    emulator.fault("gpt-4o", "cut", after_frames=6)
    posted = _events(httpx.post(
        gateway.url + "/v1/responses", timeout=30, headers=headers,
        json={"model": "gpt-4o", "input": "hello", "background": True, "stream": True,
              "max_output_tokens": 40}))
    assert not any(e.get("type") == "response.completed" for e in posted)
    response_id = str(posted[0]["response"]["id"])  # type: ignore[index]
    first = _last_delta(posted)

    emulator.fault("*", "cut", after_frames=9)  # from the start: replays the above
    resumed = _events(httpx.get(f"{gateway.url}/v1/responses/{response_id}", timeout=30,
                                headers=headers, params={"stream": "true"}))
    assert not any(e.get("type") == "response.completed" for e in resumed)
    assert _last_delta(resumed) > first and _chars(resumed, first) > 0

    mine = [r for r in records(gateway) if r.key_id == key_id and r.usage_source != "none"]
    assert [(r.route, r.usage_source) for r in mine
            ] == [("responses", "estimated")] * 2
    post, restream = mine
    assert post.completion_tokens == tokens_for_chars(_chars(posted))
    # main: tokens_for_chars(_chars(resumed)), the first stream's deltas again
    assert restream.completion_tokens == tokens_for_chars(_chars(resumed, first))
    assert restream.prompt_tokens == 0

    # Azure's usage, at a read, counts what both estimates did not (once in all)
    read = sdk(gateway, secret).responses.retrieve(response_id)
    assert read.usage is not None
    mine = [r for r in records(gateway) if r.key_id == key_id and r.usage_source != "none"]
    assert sum(r.completion_tokens for r in mine) == max(
        read.usage.output_tokens, post.completion_tokens + restream.completion_tokens)
