"""`responses/compact` and `responses/input_tokens` are operations, not response ids
(session 15's gaps): the ownership check reads only the objects their body names, a
compaction is refused to a hard budget (its hold is not made yet), counting input tokens
holds nothing; and vector-store storage (billed per GB-day) is refused to a hard budget."""

from __future__ import annotations

import pytest

from azure_openai_proxy.auth import Caller
from azure_openai_proxy.errors import MethodNotAllowed
from azure_openai_proxy.gateway.budgethold import NotMetered, refuse_unmetered, unmetered_work
from azure_openai_proxy.gateway.governed import hold
from azure_openai_proxy.gateway.ownership import object_ids
from azure_openai_proxy.governance.budget import BudgetGuard
from azure_openai_proxy.governance.model import Limits, VirtualKey
from azure_openai_proxy.governance.prices import PriceTable
from azure_openai_proxy.governance.ratelimit import RateLimiter
from azure_openai_proxy.routing import Pool, classify
from azure_openai_proxy.settings import DeploymentSettings

INPUT = {"model": "gpt-4o", "input": "x" * 4000, "previous_response_id": "resp_prev",
         "conversation": {"id": "conv_1"}}


@pytest.mark.parametrize("operation", ["responses/compact", "responses/input_tokens"])
def test_the_operation_is_no_object_and_its_references_are(operation: str) -> None:
    body = {**INPUT, "input": [{"type": "item_reference", "id": "msg_1"}]}
    assert object_ids(operation, body) == (["resp_prev", "conv_1", "msg_1"], [])
    assert object_ids(operation, {"model": "gpt-4o", "input": "hi"}) == ([], [])


def test_a_response_id_and_a_threads_run_are_still_read_as_before() -> None:
    assert object_ids("responses/resp_1", None) == (["resp_1"], [])
    assert object_ids("responses/resp_1/input_items", None) == (["resp_1"], [])
    assert object_ids("threads/runs", {"assistant_id": "asst_1"}) == (["asst_1"], [])


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_the_operations_take_a_post_only(method: str) -> None:
    for path in ("/v1/responses/compact", "/v1/responses/input_tokens"):
        with pytest.raises(MethodNotAllowed):
            classify(method, path, "/v1")
    assert classify(method, "/v1/responses/resp_1", "/v1").operation == "responses/resp_1"


def _caller(limits: Limits) -> Caller:
    return Caller(None, VirtualKey("k1", "k", "hash", "sk-aop-abc", limits=limits))


def test_a_compaction_is_metered_not_refused() -> None:
    """Refused to a hard budget in session 15 (its hold was not made); held since 16."""
    assert unmetered_work("responses/compact", INPUT) is None
    refuse_unmetered(_caller(Limits(budget_usd=5.0)), "responses/compact", INPUT)
    assert unmetered_work("responses/input_tokens", INPUT) is None
    # Its answer would carry no usage to meter: refused as a background response is.
    work = unmetered_work("responses/compact", {**INPUT, "background": True})
    assert work is not None and work[0] == "Background compactions"


def _pool() -> Pool:
    return Pool("gpt-4o", (DeploymentSettings(
        model_name="gpt-4o", deployment_name="gpt-4o",
        endpoint="https://r.openai.azure.com/", api_key="k"),))


def test_counting_input_tokens_holds_nothing_and_a_create_still_does() -> None:
    guard = BudgetGuard(lambda: 1000.0)
    guard.prices = PriceTable.shipped()
    caller = _caller(Limits(budget_usd=100.0))
    limiter = RateLimiter(lambda: 1000.0)
    counted = hold(limiter, guard, caller, INPUT, (_pool(), "gpt-4o"),
                  "responses/input_tokens", 1024)
    assert counted[1] is None  # free: no budget hold to settle
    created = hold(limiter, guard, caller, INPUT, (_pool(), "gpt-4o"), "responses", 1024)
    assert created[1] is not None and created[1].usd > 0


@pytest.mark.parametrize(("operation", "body"), [
    ("vector_stores", {"name": "docs", "file_ids": ["file-1"]}),
    ("vector_stores", None),
    ("vector_stores/vs_1/files", {"file_id": "file-1"}),
    ("vector_stores/vs_1/file_batches", {"file_ids": ["file-1"]}),
    ("assistants", {"model": "gpt-4o", "tool_resources": {"file_search": {
        "vector_stores": [{"file_ids": ["file-1"]}]}}}),
    ("assistants/asst_1", {"tool_resources": {"file_search": {"vector_stores": [{}]}}}),
    ("threads", {"tool_resources": {"file_search": {"vector_stores": [{"file_ids": []}]}}}),
])
def test_vector_store_storage_is_refused_to_a_hard_budget(operation: str,
                                                          body: dict[str, object] | None) -> None:
    work = unmetered_work(operation, body)
    assert work is not None and work[0].startswith("Vector stores")
    with pytest.raises(NotMetered) as refused:
        refuse_unmetered(_caller(Limits(budget_usd=5.0)), operation, body)
    assert "GB-day" in refused.value.message
    for served in (_caller(Limits()), _caller(Limits(soft_budget_usd=5.0)), Caller(None)):
        refuse_unmetered(served, operation, body)


@pytest.mark.parametrize(("operation", "body"), [
    ("vector_stores/vs_1", {"name": "renamed"}),  # modified: no new storage
    ("vector_stores/vs_1/search", {"query": "q"}),
    ("vector_stores/vs_1/files/file-1", {"attributes": {"a": 1}}),
    ("vector_stores/vs_1/file_batches/vsfb_1/cancel", None),
    ("assistants", {"model": "gpt-4o", "tool_resources": {"file_search": {
        "vector_store_ids": ["vs_1"]}}}),  # an existing store named: nothing new
    ("threads", {"messages": [{"role": "user", "content": "hi"}]}),
    ("threads/thread_1/messages", {"role": "user", "content": "hi"}),
])
def test_what_starts_no_storage_is_served(operation: str, body: dict[str, object] | None) -> None:
    assert unmetered_work(operation, body) is None
