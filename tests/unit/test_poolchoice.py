"""The pool for a request that names no model (gateway/poolchoice.py): the home pool, or
for a virtual key with an allow-list the first pool it may use that holds objects."""

from __future__ import annotations

from typing import Any

import pytest

from azure_openai_proxy.config import load_settings
from azure_openai_proxy.gateway.affinity import ResourceAffinity
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
