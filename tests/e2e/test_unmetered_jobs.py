"""Work Azure bills outside any request the gateway meters (independent review of issue
13): a key with a budget was refused a batch but could start fine-tuning jobs, whose
training tokens no budget ever saw, and background responses, whose POST answers with
`"usage": null` ($0) and whose output a streamed `GET responses/{id}` reads unmetered,
and Assistants runs, whose output is read as the thread's messages (no usage)."""

from __future__ import annotations

import io
from typing import Any

import httpx
import openai
import pytest

from azure_openai_proxy.gateway.ownership import Owned
from azure_openai_proxy.governance.model import Limits
from tests.e2e.conftest import Emulator
from tests.e2e.test_virtual_keys import Governed, governed  # noqa: F401  (fixture)

_TRAINING = b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n'


def _job_reached_azure(emulator: Emulator) -> bool:
    return any("fine_tuning/jobs" in str(r.get("path", "")) for r in emulator.requests())


def test_a_key_with_a_budget_may_not_start_a_fine_tuning_job(
        governed: Governed, emulator: Emulator) -> None:  # noqa: F811
    _, secret = governed.key("budget", limits=Limits(budget_usd=100.0))
    client = governed.client(secret)
    uploaded = client.files.create(file=("train.jsonl", io.BytesIO(_TRAINING)),
                                   purpose="fine-tune")
    with pytest.raises(openai.PermissionDeniedError) as refused:
        client.fine_tuning.jobs.create(model="gpt-4o", training_file=uploaded.id)
    assert refused.value.code == "not_metered"
    assert "Fine-tuning jobs are not available" in str(refused.value)
    assert not _job_reached_azure(emulator)


def test_a_key_without_a_budget_may(governed: Governed, emulator: Emulator) -> None:  # noqa: F811
    _, secret = governed.key("no-budget")
    client = governed.client(secret)
    uploaded = client.files.create(file=("train.jsonl", io.BytesIO(_TRAINING)),
                                   purpose="fine-tune")
    try:
        client.fine_tuning.jobs.create(model="gpt-4o", training_file=uploaded.id)
    except openai.APIStatusError as exc:  # the emulator has no fine-tuning: its answer
        assert exc.code != "not_metered"
    assert _job_reached_azure(emulator)


def test_a_key_with_a_budget_may_not_ask_for_a_background_response(
        governed: Governed, emulator: Emulator) -> None:  # noqa: F811
    _, budgeted = governed.key("budget", limits=Limits(budget_usd=100.0))
    _, free = governed.key("no-budget")
    served = len(emulator.requests())
    with pytest.raises(openai.PermissionDeniedError) as refused:
        governed.client(budgeted).responses.create(model="gpt-4o", input="hi",
                                                   background=True)
    assert refused.value.code == "not_metered"
    assert len(emulator.requests()) == served  # Azure never saw it
    # in the foreground it is metered, and a key without a budget may ask for either
    assert governed.client(budgeted).responses.create(model="gpt-4o", input="hi",
                                                      background=False).usage
    assert governed.client(free).responses.create(model="gpt-4o", input="hi",
                                                  background=True).id


def test_a_key_with_a_budget_may_not_start_an_assistants_run(
        governed: Governed, emulator: Emulator) -> None:  # noqa: F811
    budget_id, budgeted = governed.key("budget", limits=Limits(budget_usd=100.0))
    free_id, free = governed.key("no-budget")
    url = governed.server.url
    owners = governed.server.app.gateway.owners

    async def made(key_id: str, *ids: str) -> None:  # as if each key had created them
        for object_id in ids:
            await owners.remember(object_id, Owned(key_id))

    governed.server.call(lambda: made(budget_id, "asst_1", "thread_1", "run_1"))
    governed.server.call(lambda: made(free_id, "asst_2"))
    run: Any = {"assistant_id": "asst_1", "thread": {"messages": [
        {"role": "user", "content": "hi"}]}}
    for path in ("/v1/threads/runs", "/v1/threads/thread_1/runs",
                 "/openai/threads/thread_1/runs/run_1/submit_tool_outputs"):
        served = len(emulator.requests())
        answer = httpx.post(url + path, json=run, headers={"api-key": budgeted})
        assert answer.status_code == 403, (path, answer.text)
        assert answer.json()["error"]["code"] == "not_metered"
        assert len(emulator.requests()) == served  # Azure never saw it
    # listing runs is no run; a key without a budget is sent on to Azure
    listed = httpx.get(url + "/v1/threads/thread_1/runs", headers={"api-key": budgeted})
    assert listed.status_code != 403
    served = len(emulator.requests())
    answer = httpx.post(url + "/v1/threads/runs", json={**run, "assistant_id": "asst_2"},
                        headers={"api-key": free})
    assert answer.status_code != 403 and len(emulator.requests()) == served + 1
