"""What `RequestTranslator` remembers per deployment and OpenAI-style operation (the URL,
api-version, profile, the `api-key` header): one entry whatever path names the
deployment, never a key in its repr, and the same request as a translator that
remembers nothing."""

from __future__ import annotations

from typing import Any

from azure_openai_proxy.auth import Caller
from azure_openai_proxy.config import load_settings
from azure_openai_proxy.gateway.requestbody import RequestBody
from azure_openai_proxy.gateway.translation import RequestTranslator
from azure_openai_proxy.observability.record import RequestRecord
from azure_openai_proxy.routing import classify
from azure_openai_proxy.settings import Settings
from tests.unit.test_governed_usual import _Request

_SECRET = "azure-secret-0123456789"


def _settings(key: str = _SECRET) -> Settings:
    return load_settings({"deployment_config": [{
        "model_name": "gpt-4o", "deployment_name": "east-4o",
        "endpoint": "https://east.example/", "api_key": key, "api_version": "2024-10-21",
    }]}, {})


def _translate(translator: RequestTranslator, path: str, body: dict[str, Any]) -> Any:
    settings = translator.settings
    target = classify("POST", path, settings.api_base)
    record = RequestRecord("r", "POST")
    request, _ = translator.translate(
        _Request("client-key", b"{}"), target, Caller(None), RequestBody(json=body, raw=b"{}"),
        settings.deployments[0], "gpt-4o", record,
    )
    return request


def test_one_route_whatever_path_names_the_deployment() -> None:
    """`/v1/deployments/{any}/chat/completions` and `/v1/engines/{any}/...` name the
    deployment in the path the client chose; the route is the deployment's and the
    operation's, so a client inventing names neither grows the cache nor clears it."""
    translator = RequestTranslator(_settings())
    first = _translate(translator, "/v1/chat/completions", {"model": "gpt-4o"})
    for n in range(50):
        sent = _translate(translator, f"/v1/deployments/made-up-{n}/chat/completions",
                          {"model": "gpt-4o"})
        assert (sent.url, sent.headers) == (first.url, first.headers)
    assert len(translator._routes) == 1


def test_a_route_never_shows_the_key() -> None:
    translator = RequestTranslator(_settings())
    _translate(translator, "/v1/chat/completions", {"model": "gpt-4o"})
    (route,) = translator._routes._data.values()
    assert _SECRET not in repr(route)
    assert _SECRET not in str(route)


def test_a_reloads_translator_sends_the_rotated_key() -> None:
    """A reload makes a new translator from the new settings (`app.py`): the old key's
    header is not remembered past it."""
    old = RequestTranslator(_settings())
    assert _translate(old, "/v1/chat/completions", {"model": "gpt-4o"}).headers["api-key"] == _SECRET
    new = RequestTranslator(_settings("rotated-key-987"))
    assert _translate(new, "/v1/chat/completions", {"model": "gpt-4o"}).headers["api-key"] == (
        "rotated-key-987")
