"""Session 15's three gaps of issue 13's governance, through the real gateway and the
emulator, driven by the official `openai` SDK:

- `responses/input_tokens` and `responses/compact` are operations, not response ids: a
  key with an allow-list or a budget got 404 (read as an object of unknown owner); now
  its model is judged by the allow-list and the objects its body names as the key's own,
  counting is served to a budgeted key and (since session 16) a compaction metered;
- a fine-tuning checkpoint's permissions (`ft:...:ckpt-step-N`, with `:`) are reachable,
  by the key that owns the checkpoint only (for a restricted key);
- vector-store storage, billed per GB-day, is refused to a key with a budget."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from azure_openai_proxy.gateway.ownership import Owned
from azure_openai_proxy.governance.model import Limits
from tests.e2e.conftest import Emulator
from tests.e2e.test_virtual_keys import Governed, governed  # noqa: F401  (fixture)

CHECKPOINT = "ft:gpt-4o-mini-2024-07-18:org:weather:ckpt-step-100"
HI: Any = [{"role": "user", "content": "hello there, how are you"}]


def _remember(governed: Governed, key_id: str, *ids: str) -> None:  # noqa: F811
    owners = governed.server.app.gateway.owners

    async def made() -> None:  # as if the key had created them
        for object_id in ids:
            await owners.remember(object_id, Owned(key_id))

    governed.server.call(made)


def test_a_restricted_key_counts_and_compacts_its_own_conversation(
        governed: Governed, emulator: Emulator) -> None:  # noqa: F811
    _, secret = governed.key("restricted", models=("gpt-4o",))
    client = governed.client(secret)
    counted = client.responses.input_tokens.count(model="gpt-4o", input=HI)
    assert counted.object == "response.input_tokens" and counted.input_tokens > 0
    first = client.responses.create(model="gpt-4o", input=HI)
    compacted = client.responses.compact(model="gpt-4o", previous_response_id=first.id)
    assert compacted.object == "response.compaction"
    assert compacted.output[-1].type == "compaction"
    assert first.usage is not None and compacted.usage.input_tokens > first.usage.input_tokens
    assert [seen["path"] for seen in emulator.requests()[-3:]] == [
        "/openai/responses/input_tokens", "/openai/responses", "/openai/responses/compact"]


def test_the_allow_list_and_ownership_judge_them_as_a_create(
        governed: Governed, emulator: Emulator) -> None:  # noqa: F811
    _, a_secret = governed.key("a")
    _, b_secret = governed.key("b", models=("gpt-4o",))
    a, b = governed.client(a_secret), governed.client(b_secret)
    theirs = a.responses.create(model="gpt-4o", input=HI).id
    seen = len(emulator.requests())
    for call in (lambda: b.responses.input_tokens.count(model="gpt-4o-mini", input=HI),
                 lambda: b.responses.compact(model="gpt-4o-mini", input=HI)):
        with pytest.raises(openai.NotFoundError) as refused:
            call()
        assert refused.value.code == "model_not_found"
    for call in (lambda: b.responses.input_tokens.count(model="gpt-4o", input=HI,
                                                        previous_response_id=theirs),
                 lambda: b.responses.compact(model="gpt-4o", previous_response_id=theirs),
                 lambda: b.responses.input_tokens.count(model="gpt-4o", input=HI,
                                                        conversation="conv_theirs")):
        with pytest.raises(openai.NotFoundError) as refused:
            call()
        assert refused.value.body["message"].startswith("No such object: ")  # type: ignore[index]
    assert len(emulator.requests()) == seen  # none reached Azure
    for path in ("/v1/responses/compact", "/v1/responses/input_tokens"):
        answer = httpx.get(governed.server.url + path, headers={"api-key": b_secret})
        assert answer.status_code == 405, answer.text


def test_a_budgeted_key_counts_for_free_and_compacts_metered(
        governed: Governed, emulator: Emulator) -> None:  # noqa: F811
    """Compactions were refused to a budgeted key (session 15) until their hold was made
    (session 16): now served and held like a Responses call (tests/e2e/
    test_gov16_compact.py checks the ledger's record and the budget)."""
    _, secret = governed.key("budget", limits=Limits(budget_usd=100.0))
    client = governed.client(secret)
    assert client.responses.input_tokens.count(model="gpt-4o", input=HI).input_tokens > 0
    seen = len(emulator.requests())
    compacted = client.responses.compact(model="gpt-4o", input=HI)
    assert compacted.usage.output_tokens > 0
    assert len(emulator.requests()) == seen + 1


def test_vector_store_storage_is_refused_to_a_budgeted_key_only(
        governed: Governed, emulator: Emulator) -> None:  # noqa: F811
    key_id, budgeted = governed.key("budget", limits=Limits(budget_usd=100.0))
    free_id, free = governed.key("free")
    _remember(governed, key_id, "vs_mine", "file-mine")
    _remember(governed, free_id, "vs_free", "file-free")
    client = governed.client(budgeted)
    seen = len(emulator.requests())
    for call in (lambda: client.vector_stores.create(name="docs"),
                 lambda: client.vector_stores.files.create("vs_mine", file_id="file-mine"),
                 lambda: client.vector_stores.file_batches.create("vs_mine",
                                                                  file_ids=["file-mine"])):
        with pytest.raises(openai.PermissionDeniedError) as refused:
            call()
        assert refused.value.code == "not_metered" and "GB-day" in refused.value.message
    assert len(emulator.requests()) == seen  # none reached Azure
    # A key without a budget is served as before (the emulator has no vector stores:
    # its 404 says the request reached it).
    unbudgeted = governed.client(free)
    for call in (lambda: unbudgeted.vector_stores.create(name="docs"),
                 lambda: unbudgeted.vector_stores.files.create("vs_free", file_id="file-free")):
        with pytest.raises(openai.NotFoundError) as answered:
            call()
        assert "(Resource not found)" in answered.value.message
    assert len(emulator.requests()) == seen + 2


@pytest.mark.filterwarnings("ignore:Retrieve is deprecated:DeprecationWarning")
def test_a_checkpoints_permissions_are_its_owners_only(
        governed: Governed, emulator: Emulator) -> None:  # noqa: F811
    owner_id, owner = governed.key("owner", models=("gpt-4o",))
    _, other = governed.key("other", models=("gpt-4o",))
    _remember(governed, owner_id, "ftjob-1", CHECKPOINT)  # as the job's read claims it
    seen = len(emulator.requests())
    permissions = governed.client(other).fine_tuning.checkpoints.permissions
    for call in (lambda: permissions.retrieve(CHECKPOINT),
                 lambda: permissions.create(CHECKPOINT, project_ids=["proj_1"]),
                 lambda: permissions.delete("cp_1", fine_tuned_model_checkpoint=CHECKPOINT)):
        with pytest.raises(openai.NotFoundError) as refused:
            call()
        assert refused.value.body["message"] == f"No such object: {CHECKPOINT}"  # type: ignore[index]
    assert len(emulator.requests()) == seen  # none reached Azure
    mine = governed.client(owner).fine_tuning.checkpoints.permissions
    for call in (lambda: mine.retrieve(CHECKPOINT),
                 lambda: mine.delete("cp_1", fine_tuned_model_checkpoint=CHECKPOINT)):
        with pytest.raises(openai.NotFoundError) as answered:  # the emulator's 404
            call()
        assert "(Resource not found)" in answered.value.message
    paths = [seen["path"] for seen in emulator.requests()[-2:]]
    assert paths == [f"/openai/fine_tuning/checkpoints/{CHECKPOINT}/permissions",
                     f"/openai/fine_tuning/checkpoints/{CHECKPOINT}/permissions/cp_1"]
