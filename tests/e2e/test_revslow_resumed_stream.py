"""A background response's stream that broke off (the client left it, or it was cut),
resumed with `GET responses/{id}?stream=true&starting_after=N`: the resumed stream's
`response.completed` carries Azure's usage, and the gateway records it, once. Without a
meter on the resumed stream the generation was recorded only at the broken stream's
estimate (its few relayed characters), unless the client also read the response back.

The gateway with a ledger and a virtual key, the emulator cutting the first stream."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from azure_openai_proxy.governance.model import UsageRecord
from tests.e2e.conftest import Emulator
from tests.e2e.test_acct_background_cut import keyed  # noqa: F401  (the fixture: a dear key's gateway)
from tests.e2e.test_ledger import ledger_gateway, records, sdk  # noqa: F401
from tests.support import ServerThread


def _mine(gateway: ServerThread, key_id: str) -> list[UsageRecord]:
    """The key's records that counted something (its /v1/models calls do not)."""
    return [r for r in records(gateway) if r.key_id == key_id and r.usage_source != "none"]


def _cut_stream(gateway: ServerThread, secret: str) -> tuple[str, int]:
    """POST a background stream that the emulator cuts after 3 events: its response's
    id and the last sequence number relayed."""
    answer = httpx.post(gateway.url + "/v1/responses", timeout=30,
                        headers={"Authorization": f"Bearer {secret}"},
                        json={"model": "gpt-4o", "input": "hello", "background": True,
                              "stream": True, "max_output_tokens": 16})
    events = [json.loads(line[6:]) for line in answer.text.splitlines()
              if line.startswith("data: ")]
    assert answer.status_code == 200 and events[0]["type"] == "response.created"
    assert not any(e.get("type") == "response.completed" for e in events)
    sequenced = [e["sequence_number"] for e in events if "sequence_number" in e]
    return events[0]["response"]["id"], sequenced[-1]


def test_a_resumed_background_stream_records_azures_usage_once(
        emulator: Emulator, keyed: tuple[ServerThread, str, str]) -> None:  # noqa: F811
    gateway, key_id, secret = keyed
    emulator.fault("gpt-4o", "cut", after_frames=3)
    response_id, last = _cut_stream(gateway, secret)
    [left] = _mine(gateway, key_id)
    assert left.usage_source == "estimated"

    client = sdk(gateway, secret)
    resumed = list(client.responses.retrieve(response_id, stream=True, starting_after=last))
    final = resumed[-1].response  # type: ignore[union-attr]
    assert resumed[-1].type == "response.completed" and final.usage is not None
    # Azure's, less what the cut stream's estimate counted (test_acct_background_cut.py)
    azure = (max(0, final.usage.input_tokens - left.prompt_tokens),
             max(0, final.usage.output_tokens - left.completion_tokens))
    measured = [(r.prompt_tokens, r.completion_tokens) for r in _mine(gateway, key_id)
                if r.usage_source == "measured"]
    assert measured == [azure]  # main: [] (the resumed stream recorded nothing)

    # Counted by the resumed stream: neither a read nor resuming again counts it twice.
    assert client.responses.retrieve(response_id).usage is not None
    list(client.responses.retrieve(response_id, stream=True, starting_after=last))
    measured = [(r.prompt_tokens, r.completion_tokens) for r in _mine(gateway, key_id)
                if r.usage_source == "measured"]
    assert measured == [azure]


def test_a_resumed_stream_of_a_response_read_already_counts_nothing(
        keyed: tuple[ServerThread, str, str]) -> None:  # noqa: F811
    gateway, key_id, secret = keyed
    client = sdk(gateway, secret)
    events = list(client.responses.create(model="gpt-4o", input="hello", background=True,
                                          stream=True, max_output_tokens=16))
    final = events[-1].response  # type: ignore[union-attr]
    once = [(r.prompt_tokens, r.completion_tokens) for r in _mine(gateway, key_id)]
    resumed = list(client.responses.retrieve(final.id, stream=True, starting_after=2))
    assert resumed[-1].type == "response.completed"
    assert [(r.prompt_tokens, r.completion_tokens) for r in _mine(gateway, key_id)
            ] == once  # counted by its stream (main: too, as nothing was recorded)


def test_a_foreground_responses_refused_resume_records_nothing(
        keyed: tuple[ServerThread, str, str]) -> None:  # noqa: F811
    gateway, key_id, secret = keyed
    client = sdk(gateway, secret)
    made = client.responses.create(model="gpt-4o", input="hello", max_output_tokens=16)
    with pytest.raises(openai.BadRequestError):
        list(client.responses.retrieve(made.id, stream=True))
    assert [r.usage_source for r in _mine(gateway, key_id)] == ["measured"]
