"""A background response whose stream ended before Azure's usage (the emulator cut it,
or its client left) is recorded at an estimate by its `POST` (the prompt, what was
relayed); Azure goes on and the first read (`GET responses/{id}`) or resumed stream
shows its usage. That read counts only what the estimate did not (gateway/rereads.py
`_less`): over the key's records the prompt is counted once, the output once. Was: the
read counted Azure's whole usage, so the prompt (and what was relayed) counted twice.

The gateway with a ledger and a virtual key without a budget (a budgeted key may not
start a background response), over the emulator."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from azure_openai_proxy.emulator import create_emulator_app
from azure_openai_proxy.governance.model import UsageRecord
from tests.e2e.conftest import CLIENT_KEY, Emulator, emulator_config
from tests.e2e.test_ledger import _DEAR, _virtual_key, ledger_gateway, records, sdk  # noqa: F401
from tests.support import ServerThread, serve
from tests.waiting import until

_PROMPT = "tell me about the weather in Lisbon today, " * 8


def _mine(gateway: ServerThread, key_id: str | None) -> list[UsageRecord]:
    return [r for r in records(gateway) if r.key_id == key_id and r.usage_source != "none"]


def _post(gateway: ServerThread, secret: str, **extra: object) -> httpx.Response:
    return httpx.post(gateway.url + "/v1/responses", timeout=30,
                      headers={"Authorization": f"Bearer {secret}"},
                      json={"model": "gpt-4o", "input": _PROMPT, "background": True,
                            "stream": True, "max_output_tokens": 40, **extra})


def _events(answer: httpx.Response) -> list[dict[str, object]]:
    return [json.loads(line[6:]) for line in answer.text.splitlines()
            if line.startswith("data: ")]


def _once(gateway: ServerThread, key_id: str | None, azure: tuple[int, int]) -> None:
    """The key's records count Azure's usage once: the cut stream's estimate and the
    read's rest add up to Azure's counts (or to the estimate's, where it was over)."""
    mine = _mine(gateway, key_id)
    [estimated] = [r for r in mine if r.usage_source == "estimated"]
    prompt = sum(r.prompt_tokens for r in mine)
    completion = sum(r.completion_tokens for r in mine)
    assert estimated.prompt_tokens > 0
    # main: the estimate's prompt and Azure's (and the relayed output twice)
    assert (prompt, completion) == (max(azure[0], estimated.prompt_tokens),
                                    max(azure[1], estimated.completion_tokens)), mine


@pytest.fixture
def keyed(emulator: Emulator, ledger_gateway: Callable[..., ServerThread],  # noqa: F811
          tmp_path: Path) -> tuple[ServerThread, str, str]:
    gateway = ledger_gateway(emulator, **_DEAR)
    key_id, secret = _virtual_key(gateway, tmp_path / "gw.db", "cut")
    return gateway, key_id, secret


def test_a_cut_background_stream_then_read_counts_the_prompt_once(
        emulator: Emulator, keyed: tuple[ServerThread, str, str]) -> None:
    gateway, key_id, secret = keyed
    emulator.fault("gpt-4o", "cut", after_frames=3)
    events = _events(_post(gateway, secret))
    assert not any(e.get("type") == "response.completed" for e in events)
    response_id = str(events[0]["response"]["id"])  # type: ignore[index]
    client = sdk(gateway, secret)
    read = client.responses.retrieve(response_id)
    assert read.status == "completed" and read.usage is not None
    _once(gateway, key_id, (read.usage.input_tokens, read.usage.output_tokens))
    assert client.responses.retrieve(response_id).usage is not None  # a second read:
    _once(gateway, key_id, (read.usage.input_tokens, read.usage.output_tokens))  # nothing


def test_a_cut_background_stream_then_resumed_counts_the_prompt_once(
        emulator: Emulator, keyed: tuple[ServerThread, str, str]) -> None:
    gateway, key_id, secret = keyed
    emulator.fault("gpt-4o", "cut", after_frames=3)
    events = _events(_post(gateway, secret))
    response_id = str(events[0]["response"]["id"])  # type: ignore[index]
    last = [e["sequence_number"] for e in events if "sequence_number" in e][-1]
    client = sdk(gateway, secret)
    resumed = list(client.responses.retrieve(response_id, stream=True,
                                             starting_after=int(str(last))))
    final = resumed[-1].response  # type: ignore[union-attr]
    assert resumed[-1].type == "response.completed" and final.usage is not None
    _once(gateway, key_id, (final.usage.input_tokens, final.usage.output_tokens))


@pytest.fixture
def slow_emulator() -> Iterator[Emulator]:
    with serve(lambda: create_emulator_app(emulator_config(token_ms=20))) as server:
        yield Emulator(server)


def left_stream(gateway: ServerThread, secret: str) -> str:
    """A background stream (`_PROMPT`, 200 output tokens at most) its client leaves at
    its first output text: its response's id."""
    response_id = None
    with httpx.stream("POST", gateway.url + "/v1/responses", timeout=30,
                      headers={"Authorization": f"Bearer {secret}"},
                      json={"model": "gpt-4o", "input": _PROMPT, "background": True,
                            "stream": True, "max_output_tokens": 200}) as answer:
        for line in answer.iter_lines():
            if not line.startswith("data: "):
                continue
            event = json.loads(line[6:])
            if event["type"] == "response.created":
                response_id = event["response"]["id"]
            if event["type"] == "response.output_text.delta":
                break  # the client leaves
    assert response_id is not None
    return str(response_id)


@pytest.mark.parametrize("static", [False, True], ids=["virtual-key", "static-key"])
def test_a_background_stream_its_client_left_then_read_counts_the_prompt_once(
        slow_emulator: Emulator, ledger_gateway: Callable[..., ServerThread],  # noqa: F811
        tmp_path: Path, static: bool) -> None:
    """The client leaves after the first output text (its handler ends with an error:
    the `POST`'s record is the relay's estimate, its prompt and what it relayed), Azure
    finishes, the key reads the response. A static client key's records (no key id)
    count it once too."""
    gateway = ledger_gateway(slow_emulator, **_DEAR)
    key_id: str | None
    key_id, secret = (None, CLIENT_KEY) if static else _virtual_key(
        gateway, tmp_path / "gw.db", "left")
    response_id = left_stream(gateway, secret)
    until(lambda: [r.usage_source for r in _mine(gateway, key_id)] == ["estimated"],
          timeout=20, message="the left stream's record never written")
    client = sdk(gateway, secret)
    until(lambda: client.responses.retrieve(response_id).status == "completed",
          timeout=30, message="the background response never completed")
    read = client.responses.retrieve(response_id)
    assert read.usage is not None
    _once(gateway, key_id, (read.usage.input_tokens, read.usage.output_tokens))
