"""The Assistants API through the gateway, with the official `openai` SDK, to the
emulator's (emulator/assistants.py): a run's usage is recorded once (by the first read
that shows it done), its steps' reads count nothing though each carries the run's
usage, and a restricted key cannot read another key's thread, its messages or its run.

Two virtual keys on a gateway with a ledger; the records read from the database."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import openai
import pytest

from tests.e2e.conftest import Emulator
from tests.e2e.test_ledger import _DEAR, _virtual_key, ledger_gateway, records, sdk  # noqa: F401
from tests.support import ServerThread

pytestmark = [  # the SDK's `beta.assistants`, `beta.threads`: still what clients call
    pytest.mark.filterwarnings("ignore:The Assistants API is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning"),
]


def _run_done(client: openai.OpenAI) -> tuple[str, str, str]:
    """An assistant, a thread with a message, a run read until done: their ids."""
    helper = client.beta.assistants.create(model="gpt-4o", instructions="Be brief.")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Hello there"}])
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=helper.id)
    assert run.status == "queued" and run.usage is None  # answered before any work
    for _ in range(20):  # as `create_and_poll` does
        run = client.beta.threads.runs.retrieve(run.id, thread_id=thread.id)
        if run.status == "completed":
            break
    assert run.status == "completed" and run.usage is not None
    return helper.id, thread.id, run.id


def test_a_runs_usage_is_recorded_once_and_its_steps_count_nothing(
        emulator: Emulator, ledger_gateway: Callable[..., ServerThread],  # noqa: F811
        tmp_path: Path) -> None:
    gateway = ledger_gateway(emulator, **_DEAR)
    key_id, secret = _virtual_key(gateway, tmp_path / "gw.db", "assistants")
    client = sdk(gateway, secret)
    _, thread_id, run_id = _run_done(client)
    again = client.beta.threads.runs.retrieve(run_id, thread_id=thread_id)  # read again
    steps = client.beta.threads.runs.steps.list(run_id, thread_id=thread_id)
    [step] = steps.data
    assert step.usage is not None and step.usage.total_tokens == again.usage.total_tokens
    client.beta.threads.runs.steps.retrieve(step.id, thread_id=thread_id, run_id=run_id)
    listed = client.beta.threads.messages.list(thread_id=thread_id)
    assert [m.role for m in listed.data] == ["assistant", "user"]
    assert emulator.last()["headers"].get("openai-beta") == "assistants=v2"  # passed on
    mine = [r for r in records(gateway) if r.key_id == key_id]
    counted = [r for r in mine if r.usage_source != "none"]
    assert len(counted) == 1, [(r.route, r.usage_source, r.completion_tokens) for r in mine]
    [run_record] = counted
    assert again.usage is not None
    assert (run_record.prompt_tokens, run_record.completion_tokens) == (
        again.usage.prompt_tokens, again.usage.completion_tokens)
    assert run_record.usage_source == "measured" and run_record.cost_usd > 0


def test_a_restricted_key_cannot_read_another_keys_thread(
        emulator: Emulator, ledger_gateway: Callable[..., ServerThread],  # noqa: F811
        tmp_path: Path) -> None:
    gateway = ledger_gateway(emulator, **_DEAR)
    _, owner = _virtual_key(gateway, tmp_path / "gw.db", "owner")
    _, other = _virtual_key(gateway, tmp_path / "gw.db", "other", budget_usd=100.0,
                            budget_period="daily")  # restricted: a budget
    _, thread_id, run_id = _run_done(sdk(gateway, owner))
    intruder = sdk(gateway, other)
    reads: list[Callable[[], object]] = [
        lambda: intruder.beta.threads.retrieve(thread_id),
        lambda: intruder.beta.threads.messages.list(thread_id=thread_id),
        lambda: intruder.beta.threads.runs.retrieve(run_id, thread_id=thread_id),
        lambda: intruder.beta.threads.runs.steps.list(run_id, thread_id=thread_id),
    ]
    for read in reads:
        with pytest.raises(openai.NotFoundError):
            read()
    assert sdk(gateway, owner).beta.threads.retrieve(thread_id).id == thread_id
