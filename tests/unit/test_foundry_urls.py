"""translate.py's URL for a Foundry deployment on a serverless API endpoint: one model an
endpoint (NAME.REGION.models.ai.azure.com), the model inference API at its root
(`POST {endpoint}/chat/completions?api-version=...`, Microsoft's Azure AI Model Inference
API reference), not under `/models` as on an AI Services resource."""

from __future__ import annotations

import pytest

from azure_openai_proxy.routing import Target
from azure_openai_proxy.settings import DeploymentSettings
from azure_openai_proxy.translate import api_version_for, upstream_url

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
