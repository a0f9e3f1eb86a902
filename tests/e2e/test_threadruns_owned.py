"""`threads/runs` (create a thread and run it) through the gateway for a restricted
virtual key (an allow-list), with the official SDK (`client.beta.threads.create_and_run`, and
its streamed form): the new thread is the key's as its run is (it reads them, its
messages, its run's steps), another restricted key gets 404 for them, and the run's
usage is counted once: by the first read (a run is answered queued) or by the stream's
`thread.run.completed`. A gateway with a ledger over the emulator."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import openai
import pytest

from azure_openai_proxy.store.keys import KeyStore
from tests.e2e.conftest import CLIENT_KEY, Emulator
from tests.e2e.test_ledger import _DEAR, ledger_gateway, records, sdk  # noqa: F401
from tests.support import ServerThread, load_keys_now

pytestmark = [
    pytest.mark.filterwarnings("ignore:The Assistants API is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning"),
]


def _restricted_key(gateway: ServerThread, database: Path, name: str) -> tuple[str, str]:
    """A key with an allow-list (an object of unknown owner is a 404 to it; a key with a
    budget may not run assistants at all): (id, secret), loaded by the gateway."""
    store = KeyStore.open(database)
    try:
        key, secret = store.create_key(name, models=("gpt-4o",), now=time.time())
    finally:
        store.close()
    load_keys_now(gateway)
    return key.id, secret


@pytest.mark.parametrize("streamed", [False, True], ids=["answered", "streamed"])
def test_a_thread_made_with_its_run_is_the_keys_and_counted_once(
        emulator: Emulator, ledger_gateway: Callable[..., ServerThread],  # noqa: F811
        tmp_path: Path, streamed: bool) -> None:
    gateway = ledger_gateway(emulator, **_DEAR)
    key_id, secret = _restricted_key(gateway, tmp_path / "gw.db", "maker")
    _, other_secret = _restricted_key(gateway, tmp_path / "gw.db", "other")
    client, other = sdk(gateway, secret), sdk(gateway, other_secret)
    helper = client.beta.assistants.create(model="gpt-4o", instructions="Be brief.")
    thread = {"messages": [{"role": "user", "content": "Hello there"}]}
    if streamed:
        events = list(client.beta.threads.create_and_run(assistant_id=helper.id,
                                                          thread=thread, stream=True))
        assert events[0].event == "thread.created"
        assert events[-1].event == "thread.run.completed"
        run = events[-1].data
        assert run.usage is not None
    else:
        run = client.beta.threads.create_and_run(assistant_id=helper.id, thread=thread)
        assert run.status == "queued"
    # the maker reads what it made
    read = client.beta.threads.runs.retrieve(run.id, thread_id=run.thread_id)
    assert read.status == "completed" and read.usage is not None
    assert client.beta.threads.retrieve(run.thread_id).id == run.thread_id
    listed = client.beta.threads.messages.list(thread_id=run.thread_id).data
    assert sorted(m.role for m in listed) == ["assistant", "user"]
    client.beta.threads.runs.retrieve(run.id, thread_id=run.thread_id)  # again
    client.beta.threads.runs.steps.list(run.id, thread_id=run.thread_id)
    # another restricted key does not
    for call in (lambda: other.beta.threads.retrieve(run.thread_id),
                 lambda: other.beta.threads.messages.list(thread_id=run.thread_id),
                 lambda: other.beta.threads.runs.retrieve(run.id, thread_id=run.thread_id)):
        with pytest.raises(openai.NotFoundError):
            call()
    mine = [r for r in records(gateway) if r.key_id == key_id]
    counted = [r for r in mine if r.usage_source != "none"]
    assert len(counted) == 1, [(r.route, r.usage_source, r.completion_tokens) for r in mine]
    [record] = counted
    assert record.stream is streamed
    assert (record.prompt_tokens, record.completion_tokens) == (
        read.usage.prompt_tokens, read.usage.completion_tokens)
    assert record.usage_source == "measured" and record.cost_usd > 0


@pytest.mark.parametrize("streamed", [False, True], ids=["answered", "streamed"])
def test_a_static_keys_thread_and_run_is_counted_once(
        emulator: Emulator, ledger_gateway: Callable[..., ServerThread],  # noqa: F811
        streamed: bool) -> None:
    gateway = ledger_gateway(emulator, **_DEAR)
    client = sdk(gateway, CLIENT_KEY)
    helper = client.beta.assistants.create(model="gpt-4o", instructions="Be brief.")
    thread = {"messages": [{"role": "user", "content": "Hello there"}]}
    if streamed:
        run = list(client.beta.threads.create_and_run(assistant_id=helper.id, thread=thread,
                                                      stream=True))[-1].data
    else:
        run = client.beta.threads.create_and_run(assistant_id=helper.id, thread=thread)
    for _ in range(2):
        read = client.beta.threads.runs.retrieve(run.id, thread_id=run.thread_id)
    assert read.usage is not None
    counted = [r for r in records(gateway) if r.usage_source != "none"]
    assert [(r.stream, r.prompt_tokens, r.completion_tokens) for r in counted] == [
        (streamed, read.usage.prompt_tokens, read.usage.completion_tokens)]
