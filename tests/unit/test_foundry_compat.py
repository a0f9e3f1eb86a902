"""compat.py on a Foundry deployment's own api-version (`DeploymentProfile.model_inference`):
Azure AI model inference's 2024-05-01-preview takes `response_format: json_schema`, the
rest is judged on the dated table as for Azure OpenAI's version of that date."""

from __future__ import annotations

import pytest

from azure_openai_proxy.compat import DeploymentProfile, adapt_chat_request
from azure_openai_proxy.errors import UnsupportedParameter

SCHEMA = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
MESSAGES = [{"role": "user", "content": "hi"}]


def _profile(model_inference: bool) -> DeploymentProfile:
    return DeploymentProfile(api="dated", api_version="2024-05-01-preview", family="standard",
                             model_inference=model_inference)


def test_a_schema_goes_as_it_came_on_the_model_inference_version() -> None:
    body = {"messages": MESSAGES, "response_format": SCHEMA}
    adapted = adapt_chat_request(body, _profile(True))
    assert adapted.body is body and not adapted.changed
    streamed = adapt_chat_request({**body, "stream": True, "max_completion_tokens": 9},
                                  _profile(True))
    assert streamed.body["response_format"] == SCHEMA
    assert streamed.notes == ("max_completion_tokens->max_tokens",)


def test_the_same_date_on_azure_openai_still_refuses_it() -> None:
    with pytest.raises(UnsupportedParameter) as caught:
        adapt_chat_request({"messages": MESSAGES, "response_format": SCHEMA}, _profile(False))
    assert caught.value.param == "response_format"
