"""Fine-tuning checkpoint ids hold `:` (`ft:gpt-4o-mini-2024-07-18:org:name:ckpt-step-100`):
the router lets `:` through exactly where OpenAI puts such an id in a resource path
(`fine_tuning/checkpoints/{id}/permissions[/{pid}]`), still checked, and percent-encoded
into the upstream URL; a checkpoint is the key's that owns the fine-tuning job that made
it (claimed when the owner reads the job, its checkpoints or the job list)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from azure_openai_proxy.auth import Caller
from azure_openai_proxy.config import load_settings
from azure_openai_proxy.errors import HostileInput, MethodNotAllowed
from azure_openai_proxy.gateway.modellist import models_answer
from azure_openai_proxy.gateway.ownership import (
    ObjectNotFound,
    ObjectOwners,
    Owned,
    object_ids,
    owned_answer,
)
from azure_openai_proxy.http.interface import Answer
from azure_openai_proxy.observability.record import RequestRecord
from azure_openai_proxy.routing import RoutingTable, classify
from azure_openai_proxy.translate import upstream_url

CHECKPOINT = "ft:gpt-4o-mini-2024-07-18:org:weather:ckpt-step-100"
MODEL = "ft:gpt-4o-mini-2024-07-18:org:weather:B7R9VjQd"
PERMISSIONS = f"/v1/fine_tuning/checkpoints/{CHECKPOINT}/permissions"


@pytest.mark.parametrize(("method", "path", "operation"), [
    ("GET", PERMISSIONS, f"fine_tuning/checkpoints/{CHECKPOINT}/permissions"),
    ("POST", PERMISSIONS, f"fine_tuning/checkpoints/{CHECKPOINT}/permissions"),
    ("DELETE", PERMISSIONS + "/cp_zXfT", f"fine_tuning/checkpoints/{CHECKPOINT}/permissions/cp_zXfT"),
    ("GET", PERMISSIONS.replace(":", "%3A"), f"fine_tuning/checkpoints/{CHECKPOINT}/permissions"),
    ("GET", f"/openai/fine_tuning/checkpoints/{MODEL}/permissions",
     f"fine_tuning/checkpoints/{MODEL}/permissions"),
])
def test_a_checkpoint_id_with_colons_reaches_its_permissions(method: str, path: str,
                                                             operation: str) -> None:
    target = classify(method, path, "/v1")
    assert (target.kind, target.operation) == ("resource", operation)


@pytest.mark.parametrize("path", [
    "/v1/files/file:1",  # `:` only where a fine-tuned model's id goes
    "/v1/fine_tuning/jobs/ft:x/events",
    f"{PERMISSIONS}/cp:1",
    "/v1/vector_stores/vs:1/files",
    "/v1/fine_tuning/checkpoints/ft:a..b/permissions",  # still checked: no `..`,
    "/v1/fine_tuning/checkpoints/ft:a%2Fb/permissions",  # no `/`, `?`, `#`, `%`,
    "/v1/fine_tuning/checkpoints/ft:a%3Fb/permissions",  # controls, spaces
    "/v1/fine_tuning/checkpoints/ft:a%23b/permissions",
    "/v1/fine_tuning/checkpoints/ft:a%25b/permissions",
    "/v1/fine_tuning/checkpoints/ft:a%0Ab/permissions",
    "/v1/fine_tuning/checkpoints/ft:a%20b/permissions",
    "/v1/fine_tuning/checkpoints/..%2F..%2Ffiles/permissions",
])
def test_a_colon_elsewhere_or_a_hostile_id_is_refused(path: str) -> None:
    with pytest.raises(HostileInput):
        classify("GET", path, "/v1")


def test_the_upstream_url_percent_encodes_the_id() -> None:
    settings = load_settings({"deployment_config": [{
        "model_name": "gpt-4o", "deployment_name": "gpt-4o",
        "endpoint": "https://r.openai.azure.com/", "api_key": "k"}]}, {})
    deployment = settings.deployments[0]
    url = upstream_url(deployment, classify("GET", PERMISSIONS, "/v1"), "2025-04-01-preview")
    assert url == ("https://r.openai.azure.com/openai/fine_tuning/checkpoints/"
                   "ft%3Agpt-4o-mini-2024-07-18%3Aorg%3Aweather%3Ackpt-step-100/permissions"
                   "?api-version=2025-04-01-preview")


def test_a_fine_tuned_model_is_read_from_the_configuration_and_never_deleted() -> None:
    settings = load_settings({"deployment_config": [{
        "model_name": MODEL, "deployment_name": "weather",
        "endpoint": "https://r.openai.azure.com/", "api_key": "k"}]}, {})
    target = classify("GET", f"/v1/models/{MODEL}", "/v1")
    answer = models_answer(RoutingTable(settings), target, Caller(None))
    assert orjson.loads(answer.body)["id"] == MODEL
    with pytest.raises(MethodNotAllowed) as refused:
        classify("DELETE", f"/v1/models/{MODEL}", "/v1")
    assert "Delete a fine-tuned model on Azure itself" in refused.value.message


def test_the_checkpoint_is_an_object_the_key_must_own() -> None:
    named, inner = object_ids(f"fine_tuning/checkpoints/{CHECKPOINT}/permissions", {})
    assert (named, inner) == ([CHECKPOINT], [])
    named, inner = object_ids(f"fine_tuning/checkpoints/{CHECKPOINT}/permissions/cp_1", None)
    assert (named, inner) == ([CHECKPOINT], ["cp_1"])
    assert object_ids("fine_tuning/jobs/ftjob-1/checkpoints", None) == (["ftjob-1"], [])


def _answer(data: dict[str, Any]) -> Answer:
    return Answer(200, {"content-type": "application/json"}, orjson.dumps(data))


async def _read(owners: ObjectOwners, key: str, operation: str, data: dict[str, Any]) -> Answer:
    reply = await owned_answer(owners, "GET", operation, key, RequestRecord("r", "GET"),
                               _answer(data), None)
    assert isinstance(reply, Answer)
    return reply


def test_the_jobs_owner_owns_its_checkpoints_and_model() -> None:
    checkpoints = {"object": "list", "has_more": False, "data": [
        {"object": "fine_tuning.job.checkpoint", "id": "ftckpt_1", "fine_tuning_job_id": "ftjob-a",
         "fine_tuned_model_checkpoint": CHECKPOINT, "step_number": 100}]}
    job = {"object": "fine_tuning.job", "id": "ftjob-a", "status": "succeeded",
           "fine_tuned_model": MODEL}

    async def scenario() -> None:
        owners = ObjectOwners()
        await owners.remember("ftjob-a", Owned("key-a"))
        # Another key reading the job (unrestricted, say) claims nothing.
        await _read(owners, "key-b", "fine_tuning/jobs/ftjob-a/checkpoints", checkpoints)
        await _read(owners, "key-b", "fine_tuning/jobs/ftjob-a", job)
        assert await owners.get(CHECKPOINT) is None and await owners.get(MODEL) is None
        with pytest.raises(ObjectNotFound):  # unknown: refused to a restricted key
            await owners.check([CHECKPOINT], "key-a", restricted=True)
        await _read(owners, "key-a", "fine_tuning/jobs/ftjob-a/checkpoints", checkpoints)
        await _read(owners, "key-a", "fine_tuning/jobs/ftjob-a", job)
        await owners.check([CHECKPOINT, MODEL], "key-a", restricted=True)
        for restricted in (True, False):
            with pytest.raises(ObjectNotFound):
                await owners.check([CHECKPOINT], "key-b", restricted=restricted)
            with pytest.raises(ObjectNotFound):
                await owners.check([MODEL], "key-b", restricted=restricted)

    asyncio.run(scenario())


def test_the_job_list_gives_the_key_its_own_jobs_models_only() -> None:
    listing = {"object": "list", "has_more": False, "data": [
        {"object": "fine_tuning.job", "id": "ftjob-a", "fine_tuned_model": MODEL},
        {"object": "fine_tuning.job", "id": "ftjob-b", "fine_tuned_model": "ft:gpt-4o:org:b:x"}]}

    async def scenario() -> None:
        owners = ObjectOwners()
        await owners.remember("ftjob-a", Owned("key-a"))
        await owners.remember("ftjob-b", Owned("key-b"))
        reply = await _read(owners, "key-a", "fine_tuning/jobs", listing)
        assert [job["id"] for job in orjson.loads(reply.body)["data"]] == ["ftjob-a"]
        assert await owners.get(MODEL) == Owned("key-a")
        assert await owners.get("ft:gpt-4o:org:b:x") is None

    asyncio.run(scenario())
