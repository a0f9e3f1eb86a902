"""`unmetered_work`: which resource POSTs start work Azure bills outside any answer the
gateway meters (gateway/budgethold.py), and `refuse_unmetered` for a hard budget only."""

from __future__ import annotations

import pytest

from azure_openai_proxy.auth import Caller
from azure_openai_proxy.gateway.budgethold import NotMetered, refuse_unmetered, unmetered_work
from azure_openai_proxy.governance.model import Limits, Team, VirtualKey


@pytest.mark.parametrize(("operation", "body", "what"), [
    ("batches", {"input_file_id": "file-1"}, "Batches"),
    ("fine_tuning/jobs", {"model": "gpt-4o"}, "Fine-tuning jobs"),
    ("fine_tuning/jobs/ftjob-1/resume", None, "Fine-tuning jobs"),
    ("fine_tuning/alpha/graders/run", {"grader": {}}, "Grader runs"),
    ("evals/eval_1/runs", {}, "Evaluation runs"),
    ("threads/runs", {}, "Assistants runs"),
    ("threads/thread_1/runs", {}, "Assistants runs"),
    ("threads/thread_1/runs/run_1/submit_tool_outputs", {}, "Assistants runs"),
    ("responses", {"background": True}, "Background responses"),
])
def test_work_billed_outside_any_metered_answer(operation: str, body: dict[str, object] | None,
                                                what: str) -> None:
    work = unmetered_work(operation, body)
    assert work is not None and work[0] == what


@pytest.mark.parametrize(("operation", "body"), [
    ("responses", {"background": False}), ("responses", {"input": "hi"}), ("responses", None),
    ("batches/batch_1/cancel", None), ("fine_tuning/jobs/ftjob-1/pause", None),
    ("fine_tuning/jobs/ftjob-1/cancel", None), ("fine_tuning/alpha/graders/validate", {}),
    ("fine_tuning/checkpoints/ckpt-1/permissions", {}), ("threads/thread_1/runs/run_1/cancel", {}),
    ("threads/thread_1/messages", {}), ("threads", {}), ("files", None), ("evals", {}),
    ("vector_stores/vs_1", {}), ("conversations", {}), ("uploads/u1/complete", {}),
    ("evals/eval_1/runs/run_1", {}),
])
def test_the_rest_starts_no_unmetered_work(operation: str, body: dict[str, object] | None) -> None:
    assert unmetered_work(operation, body) is None


def _caller(key: Limits, team: Limits | None = None) -> Caller:
    owner = Team("t1", "t", team) if team is not None else None
    return Caller(None, VirtualKey("k1", "k", "hash", "sk-aop-abc", limits=key,
                                   team_id=owner.id if owner else None), owner)


def test_only_a_hard_budget_refuses_it() -> None:
    resume = "fine_tuning/jobs/ftjob-1/resume"
    for hard in (_caller(Limits(budget_usd=1.0)), _caller(Limits(), Limits(budget_usd=1.0))):
        with pytest.raises(NotMetered) as refused:
            refuse_unmetered(hard, resume, None)
        assert refused.value.code == "not_metered" and refused.value.status == 403
        assert "Fine-tuning jobs are not available to keys with a budget" in refused.value.message
    for served in (_caller(Limits()), _caller(Limits(soft_budget_usd=1.0)),
                   Caller(None)):  # no budget, a soft one, a static key
        refuse_unmetered(served, resume, None)
