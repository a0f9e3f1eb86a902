"""The emulator's `POST threads/runs` (create a thread and run it, emulator/assistants.py):
the run answered with the new thread's id, the thread made with its messages, `stream:
true` answered as a streamed run is with `thread.created` first, and bad input Azure's
400 with nothing made. Driven by the official SDK's Azure client where it can send it."""

from __future__ import annotations

import pytest

from azure_openai_proxy.emulator.app import STATE_KEY
from tests.e2e.conftest import Emulator
from tests.e2e.test_rereads3_emulator_assistants import _azure, _post, pytestmark  # noqa: F401


def test_a_thread_and_its_run_are_made_in_one_call(emulator: Emulator) -> None:
    client = _azure(emulator)
    helper = client.beta.assistants.create(model="gpt-4o", instructions="Be brief.")
    run = client.beta.threads.create_and_run(
        assistant_id=helper.id, metadata={"k": "v"},
        thread={"messages": [{"role": "user", "content": "Hi there"}],
                "metadata": {"t": "1"}})
    assert run.object == "thread.run" and run.status == "queued" and run.usage is None
    assert run.assistant_id == helper.id and run.metadata == {"k": "v"}
    thread = client.beta.threads.retrieve(run.thread_id)
    assert thread.metadata == {"t": "1"}
    done = client.beta.threads.runs.retrieve(run.id, thread_id=run.thread_id)
    assert done.status == "completed" and done.usage is not None
    listed = client.beta.threads.messages.list(thread_id=run.thread_id, order="asc").data
    assert [m.role for m in listed] == ["user", "assistant"]
    assert listed[0].content[0].type == "text" and listed[0].content[0].text.value == "Hi there"
    assert listed[1].run_id == run.id


def test_a_streamed_thread_and_run_tells_the_thread_first(emulator: Emulator) -> None:
    client = _azure(emulator)
    helper = client.beta.assistants.create(model="gpt-4o", instructions="Be brief.")
    events = list(client.beta.threads.create_and_run(
        assistant_id=helper.id, thread={"messages": [{"role": "user", "content": "Hi"}]},
        stream=True))
    names = [event.event for event in events]
    assert names[:3] == ["thread.created", "thread.run.created", "thread.run.queued"]
    assert names[-1] == "thread.run.completed" and "thread.message.delta" in names
    thread, done = events[0].data, events[-1].data
    assert done.thread_id == thread.id and done.usage is not None
    read = client.beta.threads.runs.retrieve(done.id, thread_id=thread.id)
    assert read.usage == done.usage
    roles = [m.role for m in client.beta.threads.messages.list(thread_id=thread.id).data]
    assert sorted(roles) == ["assistant", "user"]


@pytest.mark.parametrize("body", [
    {"thread": {"messages": [{"role": "user", "content": "Hi"}]}},  # no assistant_id
    {"assistant_id": "ASST", "thread": "not an object"},
    {"assistant_id": "ASST", "thread": {"messages": [{"role": "system", "content": "x"}]}},
    {"assistant_id": "ASST", "thread": {"messages": "not a list"}},
    {"assistant_id": "ASST", "instructions": 3},
], ids=["no assistant", "thread not an object", "a bad role", "messages not a list",
        "instructions not a string"])
def test_bad_input_is_azures_400_and_makes_nothing(emulator: Emulator,
                                                    body: dict[str, object]) -> None:
    helper = _azure(emulator).beta.assistants.create(model="gpt-4o")
    state = emulator.server.app[STATE_KEY]
    before = len(state.stores.threads)
    sent = {k: helper.id if v == "ASST" else v for k, v in body.items()}
    answer = _post(emulator, "threads/runs", sent)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["message"]  # Azure's error body, nothing made
    assert len(state.stores.threads) == before


def test_an_unknown_assistant_is_a_404(emulator: Emulator) -> None:
    state = emulator.server.app[STATE_KEY]
    before = len(state.stores.threads)
    answer = _post(emulator, "threads/runs", {
        "assistant_id": "asst_nope", "thread": {"messages": [{"role": "user", "content": "Hi"}]}})
    assert answer.status_code == 404, answer.text
    assert len(state.stores.threads) == before  # (review: nothing made, as for a 400)
