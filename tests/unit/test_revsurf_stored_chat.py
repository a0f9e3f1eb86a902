"""Stored chat completions' routes: a resource (its id checked as every resource id is),
sent to Azure's v1 API whatever the deployment's API, a list's metadata filters
relayed; the chat itself stays a deployment operation."""

from __future__ import annotations

import pytest

from azure_openai_proxy.errors import GatewayError, HostileInput, MethodNotAllowed, RouteNotFound
from azure_openai_proxy.routing import Target, classify
from azure_openai_proxy.settings import DeploymentSettings
from azure_openai_proxy.translate import api_version_for, upstream_url


@pytest.mark.parametrize(("method", "path", "operation"), [
    ("GET", "/v1/chat/completions", "chat/completions"),
    ("GET", "/v1/chat/completions/chatcmpl-1", "chat/completions/chatcmpl-1"),
    ("POST", "/v1/chat/completions/chatcmpl-1", "chat/completions/chatcmpl-1"),
    ("DELETE", "/v1/chat/completions/chatcmpl-1", "chat/completions/chatcmpl-1"),
    ("GET", "/v1/chat/completions/chatcmpl-1/messages", "chat/completions/chatcmpl-1/messages"),
    ("GET", "/openai/chat/completions", "chat/completions"),  # an AzureOpenAI client's
])
def test_stored_chat_completions_are_a_resource(method: str, path: str, operation: str) -> None:
    target = classify(method, path, "/v1")
    assert (target.kind, target.operation) == ("resource", operation)


def test_the_chat_itself_is_still_a_deployment_operation() -> None:
    assert classify("POST", "/v1/chat/completions", "/v1") == Target(
        "deployment", "chat/completions")


@pytest.mark.parametrize(("method", "path", "error"), [
    ("DELETE", "/v1/chat/completions", MethodNotAllowed),
    ("PUT", "/v1/chat/completions/chatcmpl-1", MethodNotAllowed),
    ("POST", "/v1/chat/completions/chatcmpl-1/messages", MethodNotAllowed),
    ("GET", "/v1/chat/completions/chatcmpl-1/other", RouteNotFound),
    ("GET", "/v1/chat/completions/a%3Fb", HostileInput),
    ("GET", "/v1/chat/completions/..", HostileInput),
])
def test_other_stored_chat_requests_are_refused(method: str, path: str,
                                                error: type[GatewayError]) -> None:
    with pytest.raises(error):
        classify(method, path, "/v1")


def test_they_go_to_the_v1_api_with_their_filters() -> None:
    dated = DeploymentSettings.model_validate(
        {"model_name": "gpt-4o", "deployment_name": "gpt-4o", "endpoint": "https://east.example",
         "api_key": "k", "api_version": "2024-10-21"})
    listed = classify("GET", "/v1/chat/completions", "/v1")
    assert api_version_for(dated, listed, None, True) is None
    url = upstream_url(dated, listed, None, [("metadata[topic]", "a&b"), ("model", "gpt-4o"),
                                             ("metadata[x", "dropped"), ("path", "dropped")])
    assert url == ("https://east.example/openai/v1/chat/completions"
                   "?metadata%5Btopic%5D=a%26b&model=gpt-4o")
    chat = classify("POST", "/v1/chat/completions", "/v1")
    assert api_version_for(dated, chat, None, True) == "2024-10-21"
