"""Background responses (`background: true`) through the gateway, against an emulator
that runs them as Azure does: queued at once, done when read back, a streamed one
resumable (`GET responses/{id}?stream=true&starting_after=N`). A background response's
generation is counted once: by the stream that showed its usage, else by the first read
that shows it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest

from azure_openai_proxy.governance.model import UsageRecord
from tests.e2e.conftest import AZURE_KEY, Emulator
from tests.e2e.test_ledger import _DEAR, _virtual_key, ledger_gateway, records, sdk  # noqa: F401
from tests.support import ServerThread


def _tokens(rows: list[UsageRecord], key_id: str) -> tuple[int, int]:
    mine = [r for r in rows if r.key_id == key_id]
    return sum(r.prompt_tokens for r in mine), sum(r.completion_tokens for r in mine)


def test_the_emulator_queues_a_background_response_and_resumes_its_stream(
        emulator: Emulator) -> None:
    azure = openai.OpenAI(base_url=emulator.url + "/openai/v1", api_key=AZURE_KEY,
                          max_retries=0)
    queued = azure.responses.create(model="gpt-4o", input="hello", background=True)
    assert (queued.status, queued.background, queued.usage, queued.output) == (
        "queued", True, None, [])
    done = azure.responses.retrieve(queued.id)
    assert (done.status, done.background) == ("completed", True)
    assert done.usage is not None and done.output
    streamed = list(azure.responses.create(model="gpt-4o", input="hello", background=True,
                                           stream=True))
    made = streamed[0].response  # type: ignore[union-attr]
    assert made.background is True
    resumed = list(azure.responses.retrieve(made.id, stream=True, starting_after=2))
    assert [e.sequence_number for e in resumed] == [e.sequence_number for e in streamed[3:]]
    assert resumed[-1].type == "response.completed"
    with pytest.raises(openai.BadRequestError):  # a foreground one has no events kept
        list(azure.responses.retrieve(
            azure.responses.create(model="gpt-4o", input="hello").id, stream=True))


@pytest.fixture
def keyed(emulator: Emulator, ledger_gateway: Callable[..., ServerThread],  # noqa: F811
          tmp_path: Path) -> tuple[ServerThread, str, openai.OpenAI]:
    """A gateway with a ledger, a virtual key's id and a client with its secret."""
    gateway = ledger_gateway(emulator, **_DEAR)
    key_id, secret = _virtual_key(gateway, tmp_path / "gw.db", "reader")
    return gateway, key_id, sdk(gateway, secret)


def streamed_background(keyed: tuple[ServerThread, str, openai.OpenAI]) -> tuple[
        Any, tuple[int, int]]:
    """A background response streamed to its end by the key, and the tokens counted:
    its stream's usage."""
    gateway, key_id, client = keyed
    events = list(client.responses.create(model="gpt-4o", input="hello", background=True,
                                          stream=True, max_output_tokens=16))
    final = events[-1].response  # type: ignore[union-attr]
    assert final.usage is not None
    once = _tokens(records(gateway), key_id)
    assert once == (final.usage.input_tokens, final.usage.output_tokens)
    return final, once


def test_a_streamed_background_response_is_not_counted_again_when_read(
        keyed: tuple[ServerThread, str, openai.OpenAI]) -> None:
    gateway, key_id, client = keyed
    final, once = streamed_background(keyed)
    for _ in range(2):
        read = client.responses.retrieve(final.id)
        assert read.background is True and read.usage is not None
    assert _tokens(records(gateway), key_id) == once  # read twice: counted by its stream


def test_a_background_response_is_counted_once_by_its_first_read(
        keyed: tuple[ServerThread, str, openai.OpenAI]) -> None:
    gateway, key_id, client = keyed
    queued = client.responses.create(model="gpt-4o", input="hello", background=True,
                                     max_output_tokens=16)
    assert queued.status == "queued" and queued.usage is None
    assert _tokens(records(gateway), key_id) == (0, 0)
    done = client.responses.retrieve(queued.id)
    assert done.usage is not None
    once = _tokens(records(gateway), key_id)
    assert once == (done.usage.input_tokens, done.usage.output_tokens)
    client.responses.retrieve(queued.id)
    assert _tokens(records(gateway), key_id) == once
