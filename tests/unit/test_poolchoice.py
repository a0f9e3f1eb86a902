"""The pool for a request that names no model (gateway/poolchoice.py): the home pool, or
for a virtual key with an allow-list the first pool it may use that holds objects."""

from __future__ import annotations

from typing import Any

import pytest

from azure_openai_proxy.config import load_settings
from azure_openai_proxy.gateway.affinity import ResourceAffinity
from azure_openai_proxy.gateway.governed import pool_allowed
from azure_openai_proxy.gateway.poolchoice import NoPoolAllowed, PoolChooser
from azure_openai_proxy.gateway.requestbody import RequestBody
from azure_openai_proxy.routing import RoutingTable, Target

FILES = Target("resource", "files")
NO_MODEL = RequestBody(json={"purpose": "batch"})


def _chooser(config: dict[str, Any], environ: dict[str, str] | None = None) -> PoolChooser:
    settings = load_settings(config, environ or {})
    return PoolChooser(settings, RoutingTable(settings), ResourceAffinity())


def _deployment(model: str, name: str, endpoint: str, **extra: Any) -> dict[str, Any]:
    return {"model_name": model, "deployment_name": name, "endpoint": endpoint,
            "api_key": "k", **extra}


CONFIG = {"deployment_config": [
    _deployment("gpt-4o-mini", "mini", "https://home.example/"),
    _deployment("gpt-4o", "east-4o", "https://east.example/"),
    _deployment("gpt-4o", "west-4o", "https://west.example/"),
    _deployment("llama", "Llama-3-70B", "https://ai.example/", api="foundry"),
    _deployment("mixed", "Phi-4", "https://ai.example/", api="foundry"),
    _deployment("mixed", "mixed-4o", "https://north.example/"),
]}


def _endpoints(chooser: PoolChooser, allowed: tuple[str, ...]) -> list[str]:
    pool, model = chooser.pool_for(FILES, NO_MODEL, allowed)
    assert model is None
    return [d.endpoint for d in pool.deployments]


def test_without_an_allow_list_the_home_pool_is_the_first_in_the_file() -> None:
    assert _endpoints(_chooser(CONFIG), ()) == ["https://home.example"]


@pytest.mark.parametrize(
    ("allowed", "endpoints"),
    [
        (("gpt-4o",), ["https://east.example", "https://west.example"]),
        (("gpt-4o*",), ["https://home.example"]),  # the mini matches first
        (("llama", "gpt-4o"), ["https://east.example", "https://west.example"]),
        (("mixed",), ["https://north.example"]),  # its Foundry member holds no files
    ],
)
def test_an_allow_list_keeps_the_request_in_a_pool_it_may_use(
        allowed: tuple[str, ...], endpoints: list[str]) -> None:
    assert _endpoints(_chooser(CONFIG), allowed) == endpoints


@pytest.mark.parametrize("allowed", [("llama",), ("nothing-here",), ("gpt-5*",)])
def test_no_pool_that_holds_objects_is_a_403(allowed: tuple[str, ...]) -> None:
    with pytest.raises(NoPoolAllowed) as refused:
        _chooser(CONFIG).pool_for(FILES, NO_MODEL, allowed)
    assert refused.value.http_status == 403


def test_a_named_model_is_not_changed_by_the_allow_list() -> None:
    pool, model = _chooser(CONFIG).pool_for(FILES, RequestBody(json={"model": "gpt-4o-mini"}),
                                            ("gpt-4o",))
    assert model == "gpt-4o-mini" and pool.model == "gpt-4o-mini"  # judged by the caller


def test_env_mode_a_name_that_reaches_the_default_endpoint_keeps_it() -> None:
    environ = {"AZURE_OPENAI_ENDPOINT": "https://default.example/",
               "AZURE_OPENAI_MODEL_MAPPER": "gpt-4o-mini=mini"}
    chooser = _chooser({}, environ)
    assert _endpoints(chooser, ("gpt-4o",)) == ["https://default.example"]
    assert _endpoints(chooser, ("gpt-4o-mini*",)) == ["https://default.example"]


def test_env_mode_a_pattern_reaches_the_default_endpoint() -> None:
    """A key allowed `o3*` chats with o3-mini on the default endpoint (a pool made for
    the client's name): its uploads go there too, not a 403 (a regression of `gaps`)."""
    chooser = _chooser({}, {"AZURE_OPENAI_ENDPOINT": "https://default.example/"})
    assert _endpoints(chooser, ("o3*",)) == ["https://default.example"]
    assert _endpoints(chooser, ("gpt-4?",)) == ["https://default.example"]


def test_a_pattern_reaches_the_default_endpoint_after_configured_pools() -> None:
    """With configured pools and a default endpoint, a configured pool the pattern allows
    is not skipped for the default endpoint only because the pattern could reach it."""
    config = {"deployment_config": [_deployment("gpt-4o", "east-4o", "https://east.example/")]}
    chooser = _chooser(config, {"AZURE_OPENAI_ENDPOINT": "https://default.example/"})
    assert _endpoints(chooser, ("gpt-4o",)) == ["https://east.example"]
    assert _endpoints(chooser, ("o3*",)) == ["https://default.example"]


MIXED_VERSIONS = {"deployment_config": [
    _deployment("gpt-4o", "old-4o", "https://old.example/", api_version="2024-10-21"),
    _deployment("gpt-4o", "new-4o", "https://new.example/"),
    _deployment("gpt-4o", "v1-4o", "https://v1.example/", api="v1"),
    _deployment("tts", "old-tts", "https://old.example/", api_version="2024-10-21"),
    _deployment("tts", "older-tts", "https://older.example/", api_version="2024-06-01"),
]}
GPT_4O = RequestBody(json={"model": "gpt-4o"})


@pytest.mark.parametrize("target", [Target("resource", "responses"),
                                    Target("resource", "vector_stores"),
                                    Target("deployment", "audio/speech", "gpt-4o")])
def test_a_member_whose_explicit_version_cannot_serve_the_operation_is_left_out(
        target: Target) -> None:
    """Not refused or sent depending on which member the balancer tries first."""
    pool, _ = _chooser(MIXED_VERSIONS).pool_for(target, GPT_4O)
    assert [d.deployment_name for d in pool.deployments] == ["new-4o", "v1-4o"]


def test_every_member_serves_what_its_version_serves() -> None:
    chat = Target("deployment", "chat/completions", "gpt-4o")
    pool, _ = _chooser(MIXED_VERSIONS).pool_for(chat, GPT_4O)
    assert len(pool.deployments) == 3
    # None can: the pool is kept, and the request gets the gateway's 400 naming the version.
    speech = Target("deployment", "audio/speech", "tts")
    pool, _ = _chooser(MIXED_VERSIONS).pool_for(speech, RequestBody(json={}))
    assert len(pool.deployments) == 2
    # A native client's own api-version is sent as it is: no member is judged by config.
    native = Target("resource", "responses", native=True)
    pool, _ = _chooser(MIXED_VERSIONS).pool_for(native, GPT_4O)
    assert len(pool.deployments) == 3


def test_a_chained_request_naming_another_model_stays_on_its_objects_resource() -> None:
    """A response made by east's gpt-4o, chained with `model: gpt-4o-mini`: the mini
    deployment on east (the resource holding the response) serves it, as the client
    asked; not east's gpt-4o (on 87db8cd every worker learns the home from the database
    and sent it to the exact deployment that made it: another model than the one named,
    priced and judged as it). With no mini on the home's resource, the home deployment
    itself, as before."""
    config = {"deployment_config": [
        _deployment("gpt-4o", "east-4o", "https://east.example/"),
        _deployment("gpt-4o", "west-4o", "https://west.example/"),
        _deployment("gpt-4o-mini", "east-mini", "https://east.example/"),
    ]}
    chooser = _chooser(config)
    chooser.affinity.remember("resp-east", ("https://east.example", "east-4o"))
    chooser.affinity.remember("resp-west", ("https://west.example", "west-4o"))
    responses = Target("resource", "responses")

    def chained(model: str, previous: str) -> list[tuple[str, str]]:
        body = RequestBody(json={"model": model, "previous_response_id": previous})
        pool, named = chooser.pool_for(responses, body)
        assert named == model
        return [(d.endpoint, d.deployment_name) for d in pool.deployments]

    assert chained("gpt-4o-mini", "resp-east") == [("https://east.example", "east-mini")]
    assert chained("gpt-4o", "resp-east") == [("https://east.example", "east-4o")]
    assert chained("gpt-4o", "resp-west") == [("https://west.example", "west-4o")]
    assert chained("gpt-4o-mini", "resp-west") == [("https://west.example", "west-4o")]
    # ... judged as what it is: a key allowed the mini alone does not reach gpt-4o
    pool, _ = chooser.pool_for(responses, RequestBody(
        json={"model": "gpt-4o-mini", "previous_response_id": "resp-west"}))
    assert not pool_allowed(("gpt-4o-mini",), "gpt-4o-mini", pool)
    assert pool_allowed(("gpt-4o",), "gpt-4o-mini", pool)


@pytest.mark.parametrize("operation", [
    "fine_tuning/jobs/ftjob-1", "fine_tuning/jobs/ftjob-1/cancel",
    "fine_tuning/jobs/ftjob-1/events", "fine_tuning/jobs/ftjob-1/checkpoints"])
def test_a_fine_tuning_job_is_asked_about_on_its_resource(operation: str) -> None:
    """A job's home is recorded with its owner (and learnt by every worker, as a
    file's), so a request about it goes there: on 87db8cd the path's job id was not
    read for the home (only `files/{id}`-shaped paths were), and a pool spanning two
    resources sent it to either (Azure's 404 for a job it does not hold)."""
    chooser = _chooser(CONFIG)
    chooser.affinity.remember("ftjob-1", ("https://west.example", "west-4o"))
    body = RequestBody(json=None)
    pool, _ = chooser.pool_for(Target("resource", operation), body, ("gpt-4o",))
    assert [d.deployment_name for d in pool.deployments] == ["west-4o"]
    pool, _ = chooser.pool_for(Target("resource", "fine_tuning/jobs"), body, ("gpt-4o",))
    assert len(pool.deployments) == 2  # a list: the key's home pool, both resources


def test_a_turn_naming_stored_items_by_reference_goes_to_their_resource() -> None:
    """A response's output items are recorded with its home (`owned_answer`, a stream's
    claim): a turn whose `input` names one by `item_reference` goes to its resource
    (on 87db8cd their homes were learnt but not read for routing: either resource)."""
    chooser = _chooser(CONFIG)
    chooser.affinity.remember("msg_1", ("https://west.example", "west-4o"))
    body = RequestBody(json={"model": "gpt-4o", "input": [
        {"role": "user", "content": "again"}, {"type": "item_reference", "id": "msg_1"}]})
    pool, _ = chooser.pool_for(Target("resource", "responses"), body, ("gpt-4o",))
    assert [d.deployment_name for d in pool.deployments] == ["west-4o"]
    # routing reads, it does not refuse: a type in other letters is the check's to refuse
    body = RequestBody(json={"model": "gpt-4o", "input": [
        {"type": "Item_Reference", "id": "msg_1"}]})
    pool, _ = chooser.pool_for(Target("resource", "responses"), body)
    assert len(pool.deployments) == 2
