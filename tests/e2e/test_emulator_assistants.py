"""The emulator's Assistants API (emulator/assistants.py) driven by the official SDK's
Azure client, as Azure serves it: dated preview api-versions from 2024-05-01-preview, not
a GA version nor the v1 API (404); a run `queued` when made, done with its usage when
read; its step repeating that usage; a done run's cancel a 400."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.e2e.conftest import AZURE_KEY, Emulator

pytestmark = [
    pytest.mark.filterwarnings("ignore:The Assistants API is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning"),
]


def _azure(emulator: Emulator, version: str = "2024-05-01-preview") -> openai.AzureOpenAI:
    return openai.AzureOpenAI(azure_endpoint=emulator.url, api_key=AZURE_KEY,
                              api_version=version, max_retries=0)


def test_a_run_is_queued_then_done_with_its_usage_and_one_step(emulator: Emulator) -> None:
    client = _azure(emulator)
    helper = client.beta.assistants.create(model="gpt-4o", instructions="Be brief.")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Hi there"}])
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=helper.id)
    assert (run.status, run.usage, run.object) == ("queued", None, "thread.run")
    done = client.beta.threads.runs.create_and_poll(thread_id=thread.id,
                                                    assistant_id=helper.id)
    assert done.status == "completed" and done.usage is not None
    assert done.usage.total_tokens == done.usage.prompt_tokens + done.usage.completion_tokens
    [step] = client.beta.threads.runs.steps.list(done.id, thread_id=thread.id).data
    assert step.type == "message_creation" and step.usage is not None
    assert step.usage.model_dump() == done.usage.model_dump()
    messages = client.beta.threads.messages.list(thread_id=thread.id, run_id=done.id).data
    assert [m.role for m in messages] == ["assistant"]
    assert step.step_details.type == "message_creation"
    assert step.step_details.message_creation.message_id == messages[0].id
    with pytest.raises(openai.BadRequestError):
        client.beta.threads.runs.cancel(done.id, thread_id=thread.id)
    assert emulator.last()["headers"].get("openai-beta") == "assistants=v2"


def test_a_run_cancelled_before_it_is_read_has_no_usage(emulator: Emulator) -> None:
    client = _azure(emulator, "2025-04-01-preview")
    helper = client.beta.assistants.create(model="gpt-4o")
    thread = client.beta.threads.create()
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=helper.id)
    cancelled = client.beta.threads.runs.cancel(run.id, thread_id=thread.id)
    assert (cancelled.status, cancelled.usage) == ("cancelled", None)
    assert client.beta.threads.runs.steps.list(run.id, thread_id=thread.id).data == []


@pytest.mark.parametrize("path", ["/openai/threads?api-version=2024-10-21",  # GA
                                  "/openai/v1/threads"])
def test_versions_without_assistants_answer_404(emulator: Emulator, path: str) -> None:
    answer = httpx.post(emulator.url + path, json={}, headers={"api-key": AZURE_KEY},
                        timeout=10)
    assert answer.status_code == 404


def test_unknown_objects_are_azures_404(emulator: Emulator) -> None:
    client = _azure(emulator)
    with pytest.raises(openai.NotFoundError):
        client.beta.threads.retrieve("thread_missing")
    thread = client.beta.threads.create()
    with pytest.raises(openai.NotFoundError):
        client.beta.threads.runs.retrieve("run_missing", thread_id=thread.id)
