"""Classifying client paths and resolving model names to pools."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from azure_openai_proxy.config import load_settings
from azure_openai_proxy.errors import (
    GatewayError,
    HostileInput,
    InvalidRequest,
    MethodNotAllowed,
    ModelNotFound,
    RouteNotFound,
)
from azure_openai_proxy.routing import RoutingTable, Target, classify, servable


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("POST", "/v1/chat/completions", Target("deployment", "chat/completions")),
        ("POST", "/chat/completions", Target("deployment", "chat/completions")),
        ("POST", "/v1/embeddings", Target("deployment", "embeddings")),
        ("POST", "/v1/engines/ada/embeddings", Target("deployment", "embeddings", "ada")),
        ("POST", "/v1/audio/transcriptions", Target("deployment", "audio/transcriptions")),
        ("POST", "/v1/images/edits", Target("deployment", "images/edits")),
        ("GET", "/v1/models", Target("models", "models")),
        ("GET", "/v1/models/gpt-4o", Target("model", "models", "gpt-4o")),
        ("POST", "/v1/responses", Target("resource", "responses")),
        ("GET", "/v1/files/file-abc/content", Target("resource", "files/file-abc/content")),
        ("POST", "/v1/batches/batch_1/cancel", Target("resource", "batches/batch_1/cancel")),
        ("POST", "/openai/deployments/my-4o/chat/completions",
         Target("deployment", "chat/completions", "my-4o", native=True)),
        ("POST", "/openai/responses", Target("resource", "responses", native=True)),
        ("POST", "/openai/v1/chat/completions", Target("deployment", "chat/completions")),
    ],
)
def test_classify(method: str, path: str, expected: Target) -> None:
    assert classify(method, path, "/v1") == expected


def test_classify_custom_api_base() -> None:
    assert classify("POST", "/api/openai/chat/completions", "/api/openai") == Target(
        "deployment", "chat/completions"
    )


@pytest.mark.parametrize(
    ("method", "path", "error"),
    [
        ("POST", "/v1/nothing/here", RouteNotFound),
        ("DELETE", "/v1/chat/completions", MethodNotAllowed),  # GET lists stored ones
        ("POST", "/v1/models", MethodNotAllowed),
        ("GET", "/v1/files/a%2Fb", HostileInput),
        ("GET", "/v1/files/%2e%2e", HostileInput),
        ("GET", "/v1/files/..", HostileInput),
        ("GET", "/v1/files/a%3Fb", HostileInput),
        ("GET", "/v1/files/a%23b", HostileInput),
        ("GET", "/v1/files/a%0d%0ab", HostileInput),
        ("POST", "/openai/deployments/x/not-an-op", RouteNotFound),
        ("GET", "/v1/files/1/2/3/4/5/6/7/8", RouteNotFound),
    ],
)
def test_classify_rejects(method: str, path: str, error: type[GatewayError]) -> None:
    with pytest.raises(error):
        classify(method, path, "/v1")


@given(st.text(max_size=300))
def test_classify_never_lets_a_resource_segment_escape(path: str) -> None:
    try:
        target = classify("GET", "/v1/files/" + path, "/v1")
    except GatewayError:
        return
    if target.kind == "resource":
        for segment in target.operation.split("/"):
            assert segment not in ("", ".", "..")
            assert all(c.isascii() and (c.isalnum() or c in "-_.") for c in segment)


def _table(**extra: object) -> RoutingTable:
    config = {
        "deployment_config": [
            {"model_name": "gpt-3.5-turbo", "deployment_name": "gpt35", "endpoint": "https://a.example"},
            {"model_name": "gpt-4o", "deployment_name": "east", "endpoint": "https://a.example"},
            {"model_name": "gpt-4o", "deployment_name": "west", "endpoint": "https://b.example"},
        ],
        **extra,
    }
    return RoutingTable(load_settings(config, {}))


def test_resolve_explicit_pool_and_by_deployment_name() -> None:
    table = _table()
    pool = table.resolve("gpt-4o")
    assert [d.deployment_name for d in pool.deployments] == ["east", "west"]
    assert table.resolve("gpt35").model == "gpt35"  # a deployment name resolves too


def test_fallback_strips_dots_and_colons() -> None:
    table = _table(deployment_config=[
        {"model_name": "gpt-35-turbo", "deployment_name": "d", "endpoint": "https://a.example"}
    ])
    assert table.resolve("gpt-3.5-turbo").deployments[0].deployment_name == "d"
    no_fallback = _table(model_fallback=False, deployment_config=[
        {"model_name": "gpt-35-turbo", "deployment_name": "d", "endpoint": "https://a.example"}
    ])
    with pytest.raises(ModelNotFound) as caught:
        no_fallback.resolve("gpt-3.5-turbo")
    body = caught.value.body()["error"]
    assert body["code"] == "model_not_found"
    assert "gpt-3.5-turbo" in body["message"] and "gpt-35-turbo" in body["message"]


def test_default_endpoint_serves_unmapped_models_as_deployments() -> None:
    settings = load_settings(None, {"AZURE_OPENAI_ENDPOINT": "https://r.example",
                                    "AZURE_OPENAI_MODEL_MAPPER": "gpt-4o=my-4o"})
    table = RoutingTable(settings)
    pool = table.resolve("gpt-4.1-mini")
    assert pool.dynamic
    assert pool.deployments[0].deployment_name == "gpt-41-mini"
    assert pool.deployments[0].endpoint == "https://r.example"


@pytest.mark.parametrize(
    "model", ["../x", "a/b", "a?b", "a#b", "a b", "a\r\nb", "%2e%2e", "x" * 300, ""]
)
def test_hostile_model_names_are_refused(model: str) -> None:
    settings = load_settings(None, {"AZURE_OPENAI_ENDPOINT": "https://r.example",
                                    "AZURE_OPENAI_MODEL_MAPPER": "gpt-4o=my-4o"})
    with pytest.raises(HostileInput):
        RoutingTable(settings).resolve(model)


def test_dot_only_names_never_become_a_deployment() -> None:
    settings = load_settings(None, {"AZURE_OPENAI_ENDPOINT": "https://r.example",
                                    "AZURE_OPENAI_MODEL_MAPPER": "gpt-4o=my-4o"})
    with pytest.raises(ModelNotFound):
        RoutingTable(settings).resolve("..")


def test_env_mode_home_pool_is_valid_and_built_once() -> None:
    # The Go tool's env mode: only the endpoint and a key. A resource call that names no
    # model (GET /v1/files) is served by the default endpoint's home pool.
    settings = load_settings(None, {"AZURE_OPENAI_ENDPOINT": "https://r.example",
                                    "AZURE_OPENAI_API_KEY": "k"})
    table = RoutingTable(settings)
    home = table.resolve_home()
    assert home is table.resolve_home()
    (deployment,) = home.deployments
    assert deployment.endpoint == "https://r.example"
    assert deployment.auth == "key"
    assert deployment.model_name  # a valid DeploymentSettings, not model_name=""


def test_no_default_endpoint_has_no_home_pool() -> None:
    with pytest.raises(ModelNotFound):
        RoutingTable(load_settings({}, {})).resolve_home()


def test_env_mode_pools_are_made_once_per_model_name() -> None:
    settings = load_settings(None, {"AZURE_OPENAI_ENDPOINT": "https://r.example"})
    table = RoutingTable(settings)
    first = table.resolve("gpt-4.1-mini")
    assert table.resolve("gpt-4.1-mini") is first  # not a new DeploymentSettings per request
    assert table.resolve("gpt-4o") is not first
    with pytest.raises(HostileInput):
        table.resolve("a/b")  # a refused name is never remembered
    with pytest.raises(HostileInput):
        table.resolve("a/b")


@pytest.mark.parametrize("path", ["/v1/files/file-1\n", "/v1/files/file-1/content\n"])
def test_a_trailing_line_feed_is_not_a_segment(path: str) -> None:
    """`$` matches before a final line feed; the checks use `\\Z`, so a name that ends in
    one is hostile, never part of an upstream URL (found by the property test above)."""
    with pytest.raises(GatewayError):
        classify("GET", path, "/v1")


def test_names_and_versions_ending_in_a_line_feed_are_refused() -> None:
    from azure_openai_proxy.settings import API_VERSION, DEPLOYMENT_NAME

    assert DEPLOYMENT_NAME.match("gpt-4o") and not DEPLOYMENT_NAME.match("gpt-4o\n")
    assert API_VERSION.match("2024-10-21") and not API_VERSION.match("2024-10-21\n")


# -- Foundry model deployments in pools ------------------------------------------------

def _mixed_table(*, with_openai: bool = True) -> RoutingTable:
    members = [{"deployment_name": "Llama-3-70B", "endpoint": "https://f.services.ai.azure.com",
                "api": "foundry", "api_key": "k"}]
    if with_openai:
        members.append({"deployment_name": "gpt-4o", "endpoint": "https://a.openai.azure.com",
                        "api_key": "k"})
    return RoutingTable(load_settings({"models": {"llama": members}, "client_keys": ["c"]}, {}))


@pytest.mark.parametrize("operation", ["chat/completions", "embeddings"])
def test_a_foundry_member_serves_chat_and_embeddings_in_its_pool(operation: str) -> None:
    pool = _mixed_table().resolve("llama")
    assert servable(pool, Target("deployment", operation)) is pool


@pytest.mark.parametrize(
    "target",
    [Target("deployment", "images/generations"), Target("deployment", "audio/speech"),
     Target("deployment", "completions"), Target("resource", "responses"),
     Target("resource", "files/file-1")],
)
def test_other_operations_go_to_the_pools_azure_openai_members(target: Target) -> None:
    pool = servable(_mixed_table().resolve("llama"), target)
    assert [d.deployment_name for d in pool.deployments] == ["gpt-4o"]
    assert pool.model == "llama" and pool.transient  # a subset: not a pool the balancer keeps


def test_a_foundry_only_pool_refuses_what_foundry_cannot_serve() -> None:
    pool = _mixed_table(with_openai=False).resolve("llama")
    with pytest.raises(InvalidRequest) as caught:
        servable(pool, Target("deployment", "images/generations"))
    assert caught.value.http_status == 400
    assert caught.value.code == "operation_not_supported"
    assert "llama" in caught.value.message and "images/generations" in caught.value.message


def test_env_mode_chooses_a_reasoning_models_api_version_once() -> None:
    # Only AZURE_OPENAI_ENDPOINT: o3-mini gets a version Azure serves it on, chosen when
    # its pool is made (once per name), gpt-4o the default.
    table = RoutingTable(load_settings(None, {"AZURE_OPENAI_ENDPOINT": "https://r.example"}))
    (o3,) = table.resolve("o3-mini").deployments
    assert o3.api_version == "2025-04-01-preview"
    assert o3.api_version_reason.startswith("chosen for o3-mini")
    (gpt4o,) = table.resolve("gpt-4o").deployments
    assert (gpt4o.api_version, gpt4o.api_version_reason) == ("2024-10-21", "default")


def test_env_mode_with_azure_openai_api_ver_keeps_it_for_every_model() -> None:
    table = RoutingTable(load_settings(None, {"AZURE_OPENAI_ENDPOINT": "https://r.example",
                                              "AZURE_OPENAI_API_VER": "2024-10-21"}))
    (o3,) = table.resolve("o3-mini").deployments
    assert (o3.api_version, o3.api_version_reason) == ("2024-10-21", "explicit")
