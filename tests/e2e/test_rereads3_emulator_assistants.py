"""The emulator's Assistants API (emulator/assistants.py), faithful where it was not:
a run made with `"stream": true` answers Azure's event stream (was: a 400), a request
whose messages hold a bad role leaves nothing behind (was: the messages before it kept,
a thread made), a message's `content` given as content parts keeps each as its block,
and a run without `assistant_id` is Azure's 400 (was: 404). Driven by the official
SDK's Azure client where it can send the request."""

from __future__ import annotations

import httpx
import openai
import pytest

from azure_openai_proxy.emulator.app import STATE_KEY
from tests.e2e.conftest import AZURE_KEY, Emulator

pytestmark = [
    pytest.mark.filterwarnings("ignore:The Assistants API is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning"),
]
_VERSION = "2024-05-01-preview"


def _azure(emulator: Emulator) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(azure_endpoint=emulator.url, api_key=AZURE_KEY,
                              api_version=_VERSION, max_retries=0)


def _post(emulator: Emulator, path: str, body: object) -> httpx.Response:
    return httpx.post(f"{emulator.url}/openai/{path}", json=body, timeout=10,
                      params={"api-version": _VERSION}, headers={"api-key": AZURE_KEY})


def test_a_streamed_run_answers_azures_events_with_its_usage(emulator: Emulator) -> None:
    client = _azure(emulator)
    helper = client.beta.assistants.create(model="gpt-4o", instructions="Be brief.")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Hi there"}])
    events = list(client.beta.threads.runs.create(thread_id=thread.id,
                                                  assistant_id=helper.id, stream=True))
    names = [event.event for event in events]
    assert names == [
        "thread.run.created", "thread.run.queued", "thread.run.in_progress",
        "thread.run.step.created", "thread.run.step.in_progress",
        "thread.message.created", "thread.message.in_progress",
        *["thread.message.delta"] * (len(names) - 10),
        "thread.message.completed", "thread.run.step.completed", "thread.run.completed"]
    assert len(names) > 10
    text = "".join(block.text.value for event in events if event.event == "thread.message.delta"
                   for block in event.data.delta.content or () if block.type == "text"
                   and block.text is not None and block.text.value is not None)
    done = events[-1].data
    assert done.status == "completed" and done.usage is not None
    assert done.usage.total_tokens == done.usage.prompt_tokens + done.usage.completion_tokens
    # what the stream made is what a read shows
    assert client.beta.threads.runs.retrieve(done.id, thread_id=thread.id).usage == done.usage
    [answer] = client.beta.threads.messages.list(thread_id=thread.id, run_id=done.id).data
    assert answer.content[0].type == "text" and answer.content[0].text.value == text
    [step] = client.beta.threads.runs.steps.list(done.id, thread_id=thread.id).data
    assert step.usage is not None and step.usage.total_tokens == done.usage.total_tokens
    # the wire: `event:` lines, and Azure's `done` event last
    raw = _post(emulator, f"threads/{thread.id}/runs", {"assistant_id": helper.id,
                                                        "stream": True})
    assert raw.status_code == 200 and raw.headers["content-type"].startswith(
        "text/event-stream")
    assert raw.text.startswith("event: thread.run.created\ndata: {")
    assert raw.text.endswith("event: done\ndata: [DONE]\n\n")


def test_a_bad_role_leaves_nothing_behind(emulator: Emulator) -> None:
    client = _azure(emulator)
    helper = client.beta.assistants.create(model="gpt-4o")
    stores = emulator.server.app[STATE_KEY].stores
    threads = len(stores.threads)
    bad = [{"role": "user", "content": "kept?"}, {"role": "system", "content": "no"}]
    answer = _post(emulator, "threads", {"messages": bad})
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "role"
    assert len(stores.threads) == threads  # main: a thread made, its first message in it
    thread = client.beta.threads.create()
    answer = _post(emulator, f"threads/{thread.id}/runs",
                   {"assistant_id": helper.id, "additional_messages": bad})
    assert answer.status_code == 400
    assert client.beta.threads.messages.list(thread_id=thread.id).data == []  # main: one
    assert client.beta.threads.runs.list(thread_id=thread.id).data == []


def test_content_parts_keep_their_text_each_as_a_block(emulator: Emulator) -> None:
    client = _azure(emulator)
    thread = client.beta.threads.create()
    made = client.beta.threads.messages.create(
        thread_id=thread.id, role="user",
        content=[{"type": "text", "text": "Hello"}, {"type": "text", "text": "there"}])
    assert [(b.type, b.text.value) for b in made.content] == [  # type: ignore[union-attr]
        ("text", "Hello"), ("text", "there")]  # main: one block, "Hello\nthere"
    [listed] = client.beta.threads.messages.list(thread_id=thread.id).data
    assert listed.content == made.content


def test_a_run_without_an_assistant_is_a_400(emulator: Emulator) -> None:
    thread = _azure(emulator).beta.threads.create()
    answer = _post(emulator, f"threads/{thread.id}/runs", {})
    assert answer.status_code == 400, answer.text  # main: 404
    error = answer.json()["error"]
    assert (error["param"], error["code"]) == ("assistant_id", "missing_required_parameter")
