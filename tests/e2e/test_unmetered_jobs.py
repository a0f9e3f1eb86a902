"""A fine-tuning job is billed by Azure later, outside any request the gateway meters,
as a batch is (independent review of issue 13): a key with a budget was refused a batch
but could start fine-tuning jobs, whose training tokens no budget ever saw."""

from __future__ import annotations

import io

import openai
import pytest

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
    assert refused.value.code == "batch_not_allowed"
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
        assert exc.code != "batch_not_allowed"
    assert _job_reached_azure(emulator)
