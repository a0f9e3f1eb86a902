"""Session 14's review of `refuse_unmetered` (gateway/budgethold.py), through the real
gateway and the emulator:

- a resource path in another case (`fine_tuning/Jobs`, `threads/{t}/Runs`): the router
  keeps a resource path's case after its root (only the root is matched, exactly: `/v1/
  Batches` is a 404), and Azure's routes may not care, so it starts the same unmetered
  work: refused to a hard budget as the lower-case path is;
- who is budgeted: a key without a budget whose team has one is refused, as a key with
  one whose team has none (a pin: both were right)."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from azure_openai_proxy.gateway.ownership import Owned
from azure_openai_proxy.governance.model import Limits
from tests.e2e.conftest import Emulator
from tests.e2e.test_virtual_keys import Governed, governed  # noqa: F401  (fixture)

_RUN: Any = {"assistant_id": "asst_1", "thread": {"messages": [
    {"role": "user", "content": "hi"}]}}


def _remember(governed: Governed, key_id: str, *ids: str) -> None:  # noqa: F811
    owners = governed.server.app.gateway.owners

    async def made() -> None:  # as if the key had created them
        for object_id in ids:
            await owners.remember(object_id, Owned(key_id))

    governed.server.call(made)


@pytest.mark.parametrize("path", [
    "/openai/fine_tuning/Jobs",
    "/v1/fine_tuning/JOBS",
    "/v1/fine_tuning/jobs/ftjob-1/Resume",
    "/v1/fine_tuning/alpha/Graders/Run",
    "/v1/threads/thread_1/RUNS",
    "/openai/threads/thread_1/runs/run_1/Submit_Tool_Outputs",
])
def test_a_case_variant_of_unmetered_work_never_reaches_azure(
        governed: Governed, emulator: Emulator, path: str) -> None:  # noqa: F811
    # The router refuses an API name in other letters (it would pass every exact check
    # and Azure may read it as the name), before any budget rule; `unmetered_work` also
    # folds the case itself (tests/unit/test_fixes14_unmetered_case.py).
    key_id, budgeted = governed.key("budget", limits=Limits(budget_usd=100.0))
    _remember(governed, key_id, "asst_1", "thread_1", "run_1", "ftjob-1", "file-1")
    served = len(emulator.requests())
    answer = httpx.post(governed.server.url + path, json={
        **_RUN, "model": "gpt-4o", "training_file": "file-1"}, headers={"api-key": budgeted})
    assert answer.status_code == 404, answer.text
    assert answer.json()["error"]["code"] == "unknown_url"
    assert len(emulator.requests()) == served  # Azure never saw it


@pytest.mark.parametrize("path", ["/v1/fine_tuning/Jobs", "/v1/fine_tuning/jobs/ftjob-1/Events",
                                  "/openai/vector_stores/vs_1/Files"])
def test_a_case_variant_of_a_list_or_object_never_reaches_azure(
        governed: Governed, emulator: Emulator, path: str) -> None:  # noqa: F811
    # Read exactly, `fine_tuning/Jobs` was no list to filter and named no job to own: a
    # key with an allow-list would have seen every key's jobs, had Azure read it as `jobs`.
    _, restricted = governed.key("restricted", models=("gpt-4o",))
    served = len(emulator.requests())
    answer = httpx.get(governed.server.url + path, headers={"api-key": restricted})
    assert answer.status_code == 404, answer.text
    assert answer.json()["error"]["code"] == "unknown_url"
    assert len(emulator.requests()) == served


def test_a_root_in_another_case_is_no_route(governed: Governed,  # noqa: F811
                                            emulator: Emulator) -> None:
    _, budgeted = governed.key("budget", limits=Limits(budget_usd=100.0))
    served = len(emulator.requests())
    for path in ("/v1/Batches", "/openai/Fine_Tuning/jobs", "/v1/Threads/runs"):
        answer = httpx.post(governed.server.url + path, json={"input_file_id": "file-1"},
                            headers={"api-key": budgeted})
        assert answer.status_code == 404, (path, answer.text)
        assert "error" in answer.json()
    assert len(emulator.requests()) == served


def test_a_team_budget_refuses_a_key_without_one(governed: Governed,  # noqa: F811
                                                 emulator: Emulator) -> None:
    team = governed.store.create_team("budgeted", limits=Limits(budget_usd=5.0),
                                      now=time.time())
    free_team = governed.store.create_team("free", now=time.time())
    in_team_id, in_team = governed.key("in-team", team=team.id)
    own_id, own = governed.key("own", team=free_team.id, limits=Limits(budget_usd=5.0))
    soft_id, soft = governed.key("soft", team=free_team.id,
                                 limits=Limits(soft_budget_usd=5.0))
    for key_id in (in_team_id, own_id, soft_id):
        _remember(governed, key_id, f"file-{key_id}")
    for key_id, secret in ((in_team_id, in_team), (own_id, own)):
        served = len(emulator.requests())
        answer = httpx.post(governed.server.url + "/v1/batches", json={
            "input_file_id": f"file-{key_id}", "endpoint": "/chat/completions",
            "completion_window": "24h"}, headers={"api-key": secret})
        assert answer.status_code == 403, answer.text
        assert answer.json()["error"]["code"] == "not_metered"
        assert len(emulator.requests()) == served
    # a soft budget only warns: its batch goes on (to the ownership check, then Azure)
    answer = httpx.post(governed.server.url + "/v1/batches", json={
        "input_file_id": f"file-{soft_id}", "endpoint": "/chat/completions",
        "completion_window": "24h"}, headers={"api-key": soft})
    assert answer.json().get("error", {}).get("code") != "not_metered"
