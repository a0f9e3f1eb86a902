"""A static client key's reads of a stored response (`GET /v1/responses/{id}`, a resumed
stream) count its generation no more than a virtual key's do (gateway/rereads.py): the
tokens metric (no database) and the ledger (a database beside the static keys) count
each response once. Was: the static path never went through `CountedUsage`, so each read
of a stored response counted its whole usage again (a foreground response read twice:
its tokens three times)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from azure_openai_proxy.settings import Settings
from tests.e2e.conftest import CLIENT_KEY, Emulator, gateway_settings
from tests.e2e.test_ledger import ledger_gateway, records, sdk  # noqa: F401
from tests.e2e.test_metrics import P, scrape, value
from tests.support import ServerThread
from tests.waiting import until


def _traffic(gateway: ServerThread, emulator: Emulator) -> tuple[int, int, int]:
    """A foreground response read twice, a background one read until done and once
    more, a background stream read to its end then read and resumed, a background
    stream cut then read twice: (Azure's input, output tokens of the four, requests)."""
    client = sdk(gateway, CLIENT_KEY)
    made = client.responses.create(model="gpt-4o", input="hello there", max_output_tokens=16)
    ids = [made.id]
    back = client.responses.create(model="gpt-4o", input="in the background",
                                   max_output_tokens=16, background=True)
    until(lambda: client.responses.retrieve(back.id).status == "completed", timeout=20,
          message="the background response never completed")
    ids.append(back.id)
    streamed = list(client.responses.create(model="gpt-4o", input="streamed", stream=True,
                                            background=True, max_output_tokens=16))
    ids.append(streamed[-1].response.id)  # type: ignore[union-attr]
    list(client.responses.retrieve(ids[-1], stream=True, starting_after=2))
    emulator.fault("gpt-4o", "cut", after_frames=3)
    cut = httpx.post(gateway.url + "/v1/responses", timeout=30,
                     headers={"Authorization": f"Bearer {CLIENT_KEY}"},
                     json={"model": "gpt-4o", "input": "cut short " * 20, "background": True,
                           "stream": True, "max_output_tokens": 16})
    first = json.loads(next(line[6:] for line in cut.text.splitlines()
                            if line.startswith("data: ")))
    ids.append(first["response"]["id"])
    tokens_in = tokens_out = 0
    for response_id in ids:
        for _ in range(2):
            read = client.responses.retrieve(response_id)
        assert read.usage is not None
        tokens_in += read.usage.input_tokens
        tokens_out += read.usage.output_tokens
    return tokens_in, tokens_out, 5 + 2 * len(ids) + 1  # (a poll or more besides)


def test_a_static_keys_rereads_count_nothing_more_in_the_tokens_metric(
        emulator: Emulator, start_gateway: Callable[[Settings], ServerThread]) -> None:
    gateway = start_gateway(gateway_settings(emulator.url))
    tokens_in, tokens_out, requests = _traffic(gateway, emulator)
    until(lambda: value(scrape(gateway.url), P + "requests_total", route="responses")
          >= requests, timeout=10, message="requests not counted")
    samples = scrape(gateway.url)
    counted_in = value(samples, P + "tokens_total", direction="in")
    counted_out = value(samples, P + "tokens_total", direction="out")
    # The cut stream's estimate counts its prompt and what it relayed, its read the rest
    # (never below Azure's): at least Azure's, less than twice (main: each read again).
    assert tokens_in <= counted_in < tokens_in + 40 and counted_out == tokens_out, (
        counted_in, counted_out, tokens_in, tokens_out)


def test_a_static_keys_rereads_count_nothing_more_in_the_ledger(
        emulator: Emulator, ledger_gateway: Callable[..., ServerThread]) -> None:  # noqa: F811
    gateway = ledger_gateway(emulator)
    tokens_in, tokens_out, _ = _traffic(gateway, emulator)
    mine: list[Any] = [r for r in records(gateway) if r.key_id is None]
    counted_in = sum(r.prompt_tokens for r in mine)
    assert tokens_in <= counted_in < tokens_in + 40, (counted_in, tokens_in)
    assert sum(r.completion_tokens for r in mine) == tokens_out


def test_a_static_keys_foreground_read_is_answered_as_before(
        start_gateway: Callable[[Settings], ServerThread], emulator: Emulator) -> None:
    """What the client sees is unchanged: the read carries Azure's usage."""
    gateway = start_gateway(gateway_settings(emulator.url))
    client = sdk(gateway, CLIENT_KEY)
    made = client.responses.create(model="gpt-4o", input="hello", max_output_tokens=8)
    read = client.responses.retrieve(made.id)
    assert read.usage is not None and made.usage is not None
    assert read.usage.input_tokens == made.usage.input_tokens
    with pytest.raises(openai.NotFoundError):  # Azure's 404, relayed as it was
        client.responses.retrieve("resp_nope")
