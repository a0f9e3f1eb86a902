"""Chained Responses turns through the gateway with the official `openai` SDK (review of
issue 13): the context table is per key, so another key's flood of responses leaves a
key's entries; a turn whose predecessor this worker never saw reserves a guess, not 0;
and a turn too large for the minute because of its context is told so, with the count."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from azure_openai_proxy.gateway.chained import ChainedContext
from azure_openai_proxy.governance.model import Limits
from tests.e2e.conftest import Emulator
from tests.e2e.test_virtual_keys import Governed, governed  # noqa: F401  (fixture)


@pytest.fixture
def small(governed: Governed) -> Iterator[Governed]:  # noqa: F811
    """The gateway with a chained table of 4 ids a key, 8 in all."""
    governed.server.app.gateway.owners.chained = ChainedContext(per_key=4, total=8)
    yield governed


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
        small: Governed) -> None:
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
    with pytest.raises(openai.RateLimitError) as waiting:
        client.responses.create(model="gpt-4o", input="again", max_output_tokens=16,
                                previous_response_id=first.id)
    # the guess (128,000) cut to the minute (100,000, with the turn's own): it waits
    # for a full minute's tokens, the few the earlier turns used (milliseconds here)
    assert "Please try again in" in str(waiting.value)
    assert "not known to this gateway" in str(waiting.value)
    guessed = small.client(secret, max_retries=2).responses.with_raw_response.create(
        model="gpt-4o", input="again", max_output_tokens=16, previous_response_id=first.id)
    assert int(guessed.headers["x-ratelimit-remaining-tokens"]) == 0
    assert guessed.parse().usage is not None  # and it was served
