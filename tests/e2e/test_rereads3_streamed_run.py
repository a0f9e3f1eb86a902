"""A streamed Assistants run through the gateway (`runs.create(stream=True)`, the
official SDK), for a virtual key and a static one (`CountedSend`): relayed event by event, its usage recorded once, from
`thread.run.completed`'s, and the reads of the run after it count nothing. A message
given as content parts reaches Azure with its text.

A gateway with a ledger over the emulator (emulator/assistants_stream.py); the records
read from the database."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.conftest import CLIENT_KEY, Emulator
from tests.e2e.test_ledger import _DEAR, _virtual_key, ledger_gateway, records, sdk  # noqa: F401
from tests.support import ServerThread

pytestmark = [
    pytest.mark.filterwarnings("ignore:The Assistants API is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning"),
]


@pytest.mark.parametrize("static", [False, True], ids=["a virtual key", "a static key"])
def test_a_streamed_runs_usage_is_recorded_once(
        emulator: Emulator, ledger_gateway: Callable[..., ServerThread],  # noqa: F811
        tmp_path: Path, static: bool) -> None:
    gateway = ledger_gateway(emulator, **_DEAR)
    key_id, secret = ((None, CLIENT_KEY) if static
                      else _virtual_key(gateway, tmp_path / "gw.db", "streamed-run"))
    client = sdk(gateway, secret)
    helper = client.beta.assistants.create(model="gpt-4o", instructions="Be brief.")
    thread = client.beta.threads.create()
    made = client.beta.threads.messages.create(
        thread_id=thread.id, role="user",
        content=[{"type": "text", "text": "Hello"}, {"type": "text", "text": "there"}])
    assert [b.text.value for b in made.content if b.type == "text"] == ["Hello", "there"]
    events = list(client.beta.threads.runs.create(thread_id=thread.id,
                                                  assistant_id=helper.id, stream=True))
    names = [event.event for event in events]
    assert names[0] == "thread.run.created" and names[-1] == "thread.run.completed"
    assert names.count("thread.message.delta") > 1
    done = events[-1].data
    assert done.usage is not None and done.usage.completion_tokens > 0
    again = client.beta.threads.runs.retrieve(done.id, thread_id=thread.id)  # a read
    assert again.usage == done.usage
    client.beta.threads.runs.list(thread_id=thread.id)
    mine = [r for r in records(gateway) if r.key_id == key_id]
    counted = [r for r in mine if r.usage_source != "none"]
    assert len(counted) == 1, [(r.route, r.usage_source, r.completion_tokens) for r in mine]
    [run_record] = counted
    assert run_record.stream, [(r.route, r.stream, r.usage_source, r.completion_tokens) for r in mine]
    assert (run_record.prompt_tokens, run_record.completion_tokens) == (
        done.usage.prompt_tokens, done.usage.completion_tokens)
    assert run_record.usage_source == "measured" and run_record.cost_usd > 0
