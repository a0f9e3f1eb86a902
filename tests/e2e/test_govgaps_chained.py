"""Chained Responses turns through the gateway with the official `openai` SDK (review of
issue 13): the context table is per key, so another key's flood of responses leaves a
key's entries; a turn whose predecessor this worker never saw reserves a guess, not 0;
and a turn too large for the minute because of its context is told so, with the count.

The gateway's limits run on a clock the test holds (still until it is moved): on the
real one, the few tokens the earlier turns used came back within milliseconds (a
100,000 TPM refills 1,667 a second), so a turn sent a little later, as under load, found
a full minute and was served where the test expected it to wait."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from azure_openai_proxy.gateway.app import create_app
from azure_openai_proxy.gateway.chained import ChainedContext
from azure_openai_proxy.governance.model import Limits
from azure_openai_proxy.settings import Settings
from tests.e2e.conftest import Emulator
from tests.e2e.pools import FakeClock
from tests.e2e.test_virtual_keys import Governed, governed_gateway
from tests.support import ServerThread


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def small(tmp_path: Path, emulator: Emulator, clock: FakeClock) -> Iterator[Governed]:
    """The gateway, its limits on `clock`, with a chained table of 4 ids a key, 8 in all."""
    started: list[ServerThread] = []

    def start(settings: Settings) -> ServerThread:
        started.append(ServerThread(lambda: create_app(settings, clock=clock)).start())
        return started[-1]

    try:
        with governed_gateway(tmp_path, emulator.url, start) as governed:
            governed.server.app.gateway.owners.chained = ChainedContext(per_key=4, total=8)
            yield governed
    finally:
        for server in started:
            server.stop()


def _context(response: Any) -> int:
    return int(response.usage.input_tokens + response.usage.output_tokens)


@pytest.mark.parametrize("limits", [Limits(tpm=2000), Limits(rpm=100, tpm=2000)],
                         ids=["general", "usual"])  # `hold`, and the limiter's short path
def test_a_turn_too_large_for_the_minute_is_told_its_context_is_counted(
        small: Governed, emulator: Emulator, limits: Limits) -> None:
    _, alice = small.key("alice", limits=limits)
    _, mallory = small.key("mallory")
    client = small.client(alice)
    first: Any = client.responses.create(model="gpt-4o", input="word " * 1500,
                                         max_output_tokens=16)
    flood = small.client(mallory)
    for _ in range(10):  # more than the whole table: its own oldest go, not alice's
        flood.responses.create(model="gpt-4o", input="hi", max_output_tokens=16)
    before = len(emulator.requests())
    with pytest.raises(openai.RateLimitError) as refused:
        client.responses.create(model="gpt-4o", input="x" * 2400, max_output_tokens=16,
                                previous_response_id=first.id)
    message = str(refused.value)
    assert f"counting the {_context(first):,} tokens of earlier turns" in message
    assert "lower max_tokens or the prompt" not in message
    assert refused.value.response.headers["x-should-retry"] == "false"
    assert len(emulator.requests()) == before  # never sent


def test_a_turn_whose_predecessor_no_worker_knows_reserves_a_guess(
        small: Governed, clock: FakeClock) -> None:
    _, secret = small.key("wide", limits=Limits(rpm=100, tpm=100_000))
    client = small.client(secret)
    first: Any = client.responses.create(model="gpt-4o", input="hi", max_output_tokens=16)
    known = client.responses.with_raw_response.create(
        model="gpt-4o", input="again", max_output_tokens=16, previous_response_id=first.id)
    assert int(known.headers["x-ratelimit-remaining-tokens"]) > 90_000
    # as if it had been noted nowhere (the database failing then): no worker knows it
    small.server.call(small.server.app.gateway.owners.written)
    with sqlite3.connect(small.database) as database:
        database.execute("DELETE FROM chained_context")
    small.server.app.gateway.owners.chained = ChainedContext()

    def again() -> Any:
        return client.responses.with_raw_response.create(
            model="gpt-4o", input="again", max_output_tokens=16, previous_response_id=first.id)

    # the guess (128,000) cut to the minute (100,000, with the turn's own): it waits
    # for a full minute's tokens, the few the earlier turns used (no time has passed)
    with pytest.raises(openai.RateLimitError) as waiting:
        again()
    assert "Please try again in" in str(waiting.value)
    assert "not known to this gateway" in str(waiting.value)
    wait_ms = int(waiting.value.response.headers["retry-after-ms"])
    clock.advance(wait_ms / 2_000)  # half the wait: the minute is not full yet
    with pytest.raises(openai.RateLimitError):
        again()
    clock.advance((wait_ms / 2 + 1) / 1_000)  # the rest (the header is rounded to 1 ms)
    guessed = again()
    assert int(guessed.headers["x-ratelimit-remaining-tokens"]) == 0  # the whole minute
    assert guessed.parse().usage is not None  # and it was served
