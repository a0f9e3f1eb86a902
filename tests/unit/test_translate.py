"""Upstream URLs and headers built from a target and a deployment."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from azure_openai_proxy.auth import Caller, ClientKeyring, presented_key
from azure_openai_proxy.errors import AuthenticationFailed
from azure_openai_proxy.routing import Target
from azure_openai_proxy.settings import DeploymentSettings
from azure_openai_proxy.translate import (
    api_version_for,
    azure_auth_headers,
    forwarded_headers,
    names_deployment_in_body,
    relayed_response_headers,
    upstream_url,
)


def deployment(**overrides: object) -> DeploymentSettings:
    fields: dict[str, object] = {
        "model_name": "gpt-4o", "deployment_name": "my-4o",
        "endpoint": "https://res.openai.azure.com/", "api_key": "azure-secret",
        "api_version": "2024-10-21",
    }
    fields.update(overrides)
    return DeploymentSettings.model_validate(fields)


CHAT = Target("deployment", "chat/completions")


def test_dated_deployment_url_has_exactly_one_api_version() -> None:
    d = deployment()
    url = upstream_url(d, CHAT, api_version_for(d, CHAT, None, True))
    assert url == "https://res.openai.azure.com/openai/deployments/my-4o/chat/completions?api-version=2024-10-21"


def test_endpoint_path_prefix_is_kept() -> None:
    d = deployment(endpoint="https://apim.example.com/team-a/aoai/")
    url = upstream_url(d, CHAT, "2024-10-21")
    assert url.startswith("https://apim.example.com/team-a/aoai/openai/deployments/my-4o/")


def test_v1_deployment_url_has_no_dated_version() -> None:
    d = deployment(api="v1", api_version="v1")
    assert api_version_for(d, CHAT, "2024-02-01", True) is None
    assert upstream_url(d, CHAT, None) == "https://res.openai.azure.com/openai/v1/chat/completions"
    preview = deployment(api="v1", api_version="preview")
    version = api_version_for(preview, CHAT, None, True)
    assert upstream_url(preview, CHAT, version).endswith("/openai/v1/chat/completions?api-version=preview")


def test_native_client_version_is_honoured_only_when_valid() -> None:
    d = deployment()
    native = Target("deployment", "chat/completions", "my-4o", native=True)
    assert api_version_for(d, native, "2025-01-01-preview", True) == "2025-01-01-preview"
    assert api_version_for(d, native, "2025-01-01-preview", False) == "2024-10-21"
    assert api_version_for(d, native, "x&y=1", True) == "2024-10-21"
    # An OpenAI-style path never takes a client's api-version.
    assert api_version_for(d, CHAT, "2025-01-01-preview", True) == "2024-10-21"


def test_resource_url_keeps_only_allowed_query() -> None:
    d = deployment()
    target = Target("resource", "files")
    url = upstream_url(d, target, "2024-10-21", [("purpose", "batch"), ("path", "v1"),
                                                  ("api-version", "evil"), ("limit", "5")])
    parts = urlsplit(url)
    assert parts.path == "/openai/files"
    assert parse_qs(parts.query) == {"api-version": ["2024-10-21"], "purpose": ["batch"], "limit": ["5"]}


def test_deployment_stray_query_is_dropped() -> None:
    d = deployment()
    url = upstream_url(d, CHAT, "2024-10-21", [("path", "v1"), ("path", "chat")])
    assert "path=" not in url and url.count("api-version") == 1


def test_deployment_name_is_percent_encoded() -> None:
    # A configured name is already restricted; encoding is a second guard.
    d = deployment(deployment_name="a.b_c-d")
    assert "/deployments/a.b_c-d/" in upstream_url(d, CHAT, "v")


def test_auth_headers_by_mode() -> None:
    keyed = deployment()
    assert azure_auth_headers(keyed, Caller("client")) == {"api-key": "azure-secret"}
    passthrough = deployment(api_key=None)
    assert azure_auth_headers(passthrough, Caller("client-azure-key")) == {
        "api-key": "client-azure-key"
    }
    with pytest.raises(AuthenticationFailed):
        azure_auth_headers(passthrough, Caller(None))
    entra = deployment(api_key=None, auth="entra")
    assert azure_auth_headers(entra, Caller(None), "tok") == {"Authorization": "Bearer tok"}


def test_forwarded_headers_never_carry_client_credentials() -> None:
    headers = forwarded_headers({
        "Authorization": "Bearer sk-client", "api-key": "x", "Cookie": "c=1",
        "content-type": "application/json", "OpenAI-Organization": "org", "openai-beta": "assistants=v2",
    })
    lowered = {k.lower() for k in headers}
    assert "authorization" not in lowered and "api-key" not in lowered and "cookie" not in lowered
    assert headers["content-type"] == "application/json"
    assert headers["openai-beta"] == "assistants=v2"


def test_relayed_response_headers() -> None:
    relayed = relayed_response_headers({
        "Content-Type": "application/json", "x-ratelimit-remaining-tokens": "10",
        "retry-after-ms": "20", "Set-Cookie": "s", "Transfer-Encoding": "chunked",
        "apim-request-id": "a", "Content-Length": "5",
    })
    assert relayed == {"content-type": "application/json", "x-ratelimit-remaining-tokens": "10",
                       "retry-after-ms": "20", "apim-request-id": "a"}


def test_relayed_response_headers_per_sequence_of_names() -> None:
    """The plan made for one sequence of names serves the next answer with the same
    names and its own values; one relayed name, none, and a name sent twice (its last
    value, as before) each come out as a dict would make them."""
    from multidict import CIMultiDict

    first = {"Content-Type": "application/json", "Server": "x", "x-request-id": "a"}
    assert relayed_response_headers(first) == {"content-type": "application/json",
                                               "x-request-id": "a"}
    again = {"Content-Type": "text/plain", "Server": "y", "x-request-id": "b"}
    assert relayed_response_headers(again) == {"content-type": "text/plain",
                                               "x-request-id": "b"}
    assert relayed_response_headers({"Server": "x", "Retry-After": "3"}) == {"retry-after": "3"}
    assert relayed_response_headers({"Server": "x", "Date": "d"}) == {}
    assert relayed_response_headers({}) == {}
    twice = CIMultiDict([("x-ms-region", "a"), ("Server", "s"), ("X-MS-Region", "b")])
    assert relayed_response_headers(twice) == {"x-ms-region": "b"}


def test_presented_key_and_keyring() -> None:
    assert presented_key({"Authorization": "Bearer  abc "}) == "abc"
    assert presented_key({"api-key": "k"}) == "k"
    assert presented_key({"Authorization": "Basic zzz"}) is None
    ring = ClientKeyring(("one", "two"))
    assert ring.authenticate({"Authorization": "Bearer two"}).passthrough_key is None  # never sent on
    assert ring.authenticate({"api-key": "one"}).passthrough_key is None
    with pytest.raises(AuthenticationFailed, match="didn't provide"):
        ring.authenticate({})
    with pytest.raises(AuthenticationFailed, match="Incorrect"):
        ring.authenticate({"Authorization": "Bearer three"})
    open_ring = ClientKeyring(())
    assert open_ring.authenticate({"Authorization": "Bearer az"}).passthrough_key == "az"


# -- Foundry model deployments (Azure AI model inference) -----------------------------

EMBEDDINGS = Target("deployment", "embeddings")


def foundry(**overrides: object) -> DeploymentSettings:
    return deployment(**{"model_name": "deepseek", "deployment_name": "DeepSeek-R1",
                         "endpoint": "https://res.services.ai.azure.com/", "api": "foundry",
                         "api_version": None, **overrides})


@pytest.mark.parametrize(
    ("endpoint", "target", "expected"),
    [
        ("https://res.services.ai.azure.com/", CHAT,
         "https://res.services.ai.azure.com/models/chat/completions?api-version=2024-05-01-preview"),
        ("https://res.services.ai.azure.com", EMBEDDINGS,
         "https://res.services.ai.azure.com/models/embeddings?api-version=2024-05-01-preview"),
        # the portal shows the endpoint with /models: not doubled
        ("https://res.services.ai.azure.com/models/", CHAT,
         "https://res.services.ai.azure.com/models/chat/completions?api-version=2024-05-01-preview"),
        # ... in whatever case it was written (review: `/Models` became `/Models/models`)
        ("https://f.services.ai.azure.com/Models", CHAT,
         "https://f.services.ai.azure.com/Models/chat/completions?api-version=2024-05-01-preview"),
        ("https://f.services.ai.azure.com/MODELS/", EMBEDDINGS,
         "https://f.services.ai.azure.com/MODELS/embeddings?api-version=2024-05-01-preview"),
        # any endpoint is accepted, its path (an APIM prefix) kept
        ("http://127.0.0.1:8001/apim/ai", CHAT,
         "http://127.0.0.1:8001/apim/ai/models/chat/completions?api-version=2024-05-01-preview"),
    ],
)
def test_foundry_urls_are_the_model_inference_family(
    endpoint: str, target: Target, expected: str
) -> None:
    d = foundry(endpoint=endpoint)
    assert upstream_url(d, target, api_version_for(d, target, None, True)) == expected


def test_foundry_keeps_its_own_api_version_and_ignores_a_native_clients() -> None:
    native = Target("deployment", "chat/completions", path_model="deepseek", native=True)
    assert api_version_for(foundry(), native, "2025-04-01-preview", True) == "2024-05-01-preview"
    explicit = foundry(api_version="2024-12-01-preview")
    assert api_version_for(explicit, native, "2024-10-21", True) == "2024-12-01-preview"


def test_the_body_names_the_deployment_on_foundry_and_v1_but_not_on_dated_paths() -> None:
    assert names_deployment_in_body(foundry(), CHAT)
    assert names_deployment_in_body(foundry(), EMBEDDINGS)
    assert names_deployment_in_body(deployment(api="v1"), CHAT)
    assert not names_deployment_in_body(deployment(), CHAT)
    assert names_deployment_in_body(deployment(), Target("resource", "files"))


def test_foundry_takes_the_same_keys_as_azure_openai() -> None:
    caller = ClientKeyring(()).authenticate({})
    assert azure_auth_headers(foundry(), caller) == {"api-key": "azure-secret"}
    entra = foundry(auth="entra", api_key=None)
    assert azure_auth_headers(entra, caller, "tok") == {"Authorization": "Bearer tok"}
