"""A Foundry deployment on a serverless API endpoint (one model an endpoint:
NAME.REGION.models.ai.azure.com): the model inference API at its root (`POST
{endpoint}/chat/completions?api-version=...`, Microsoft's Azure AI Model Inference API
reference), not under `/models` as on an AI Services resource; its key as a bearer token,
not `api-key` (which it answers with 400 "Missing Authorization header")."""

from __future__ import annotations

import pytest

from azure_openai_proxy.auth import Caller
from azure_openai_proxy.config import load_settings
from azure_openai_proxy.gateway.requestbody import RequestBody
from azure_openai_proxy.gateway.translation import RequestTranslator
from azure_openai_proxy.observability.record import RequestRecord
from azure_openai_proxy.routing import Target, classify
from azure_openai_proxy.settings import DeploymentSettings
from azure_openai_proxy.translate import api_version_for, azure_auth_headers, upstream_url
from tests.unit.test_governed_usual import _Request

CHAT = Target("deployment", "chat/completions")
EMBEDDINGS = Target("deployment", "embeddings")
QUERY = "?api-version=2024-05-01-preview"


def _foundry(endpoint: str) -> DeploymentSettings:
    return DeploymentSettings.model_validate({
        "model_name": "deepseek", "deployment_name": "DeepSeek-R1", "api": "foundry",
        "endpoint": endpoint, "api_key": "k"})


@pytest.mark.parametrize(("endpoint", "target", "expected"), [
    ("https://DeepSeek-R1-abcd.eastus2.models.ai.azure.com", CHAT,
     "https://DeepSeek-R1-abcd.eastus2.models.ai.azure.com/chat/completions" + QUERY),
    ("https://cohere-embed-v3-xyz.swedencentral.models.ai.azure.com/", EMBEDDINGS,
     "https://cohere-embed-v3-xyz.swedencentral.models.ai.azure.com/embeddings" + QUERY),
    ("https://Mistral-Large-2411-q.EastUS.Models.AI.Azure.com", CHAT,
     "https://Mistral-Large-2411-q.EastUS.Models.AI.Azure.com/chat/completions" + QUERY),
    # a fully qualified name (DNS's root, as Kubernetes users write to skip search
    # domains) is the same host: it was sent under /models, a 404
    ("https://DeepSeek-R1-abcd.eastus2.models.ai.azure.com.", CHAT,
     "https://DeepSeek-R1-abcd.eastus2.models.ai.azure.com./chat/completions" + QUERY),
    ("https://cohere-embed-v3-xyz.swedencentral.models.ai.azure.com.:443/", EMBEDDINGS,
     "https://cohere-embed-v3-xyz.swedencentral.models.ai.azure.com.:443/embeddings" + QUERY),
    # an AI Services resource, and a host that only looks like one, keep /models
    ("https://res.services.ai.azure.com", CHAT,
     "https://res.services.ai.azure.com/models/chat/completions" + QUERY),
    ("https://models.ai.azure.com.example.net", CHAT,
     "https://models.ai.azure.com.example.net/models/chat/completions" + QUERY),
])
def test_a_serverless_endpoint_serves_the_api_at_its_root(
    endpoint: str, target: Target, expected: str
) -> None:
    d = _foundry(endpoint)
    assert upstream_url(d, target, api_version_for(d, target, None, True)) == expected


SERVERLESS = "https://Llama-3-3-70B-xyz.eastus2.models.ai.azure.com"


def _sent_headers(endpoint: str, api: str = "foundry") -> dict[str, str]:
    settings = load_settings({"deployment_config": [{
        "model_name": "llama", "deployment_name": "Llama-3-3-70B-xyz", "endpoint": endpoint,
        "api_key": "azure-secret-0123456789", "api": api}]}, {})
    translator = RequestTranslator(settings)
    sent, _ = translator.translate(
        _Request("client-key", b"{}"), classify("POST", "/v1/chat/completions", settings.api_base),
        Caller(None), RequestBody(json={"model": "llama"}, raw=b"{}"),
        settings.deployments[0], "llama", RequestRecord("r", "POST"))
    return {k.lower(): v for k, v in sent.headers.items()}


def test_a_serverless_endpoint_is_given_its_key_as_a_bearer_token() -> None:
    headers = _sent_headers(SERVERLESS)
    assert headers["authorization"] == "Bearer azure-secret-0123456789"
    assert "api-key" not in headers
    # with a trailing dot too (it was sent api-key, which the endpoint answers with 400)
    dotted = _sent_headers(SERVERLESS + ".")
    assert dotted["authorization"] == "Bearer azure-secret-0123456789"
    assert "api-key" not in dotted
    resource = _sent_headers("https://res.services.ai.azure.com")
    assert resource["api-key"] == "azure-secret-0123456789"
    assert "authorization" not in resource
    # the client's own key, in passthrough mode, goes the same way
    passthrough = DeploymentSettings.model_validate({
        "model_name": "llama", "deployment_name": "d", "api": "foundry",
        "endpoint": SERVERLESS, "auth": "passthrough"})
    caller = Caller("client-azure-key")
    assert azure_auth_headers(passthrough, caller) == {
        "Authorization": "Bearer client-azure-key"}
