"""`may_pass_over`: which pool members a request the gateway refused for one member (a
parameter or route its API or api-version does not serve) may still go to."""

from __future__ import annotations

from typing import Any

import pytest

from azure_openai_proxy.balancing.passover import may_pass_over
from azure_openai_proxy.settings import DeploymentSettings


def _deployment(name: str = "gpt-4o-east", **extra: Any) -> DeploymentSettings:
    return DeploymentSettings.model_validate({
        "model_name": "gpt-4o", "deployment_name": name,
        "endpoint": f"https://{name}.openai.azure.com", "api_key": "k", **extra})


OLD = _deployment("old", api_version="2024-02-01")


@pytest.mark.parametrize("other", [
    _deployment("new", api_version="2025-04-01-preview"),  # another api-version
    _deployment("v1", api="v1"),  # the v1 API
    _deployment("chosen"),  # a version the gateway chose, raised for a route that needs it
    _deployment("llama", api="foundry", model_name="Llama-3-70B"),
    # the same version, but a reasoning model: refused where gpt-4o is not, and v.v.
    _deployment("o3-mini", api_version="2024-02-01", model_name="o3-mini"),
    _deployment("marked", api_version="2024-02-01", model_family="reasoning"),
])
def test_a_member_not_alike_may_take_it(other: DeploymentSettings) -> None:
    assert may_pass_over((OLD, other), OLD)
    assert may_pass_over((other, OLD), other)


def test_members_alike_would_refuse_it_the_same_way() -> None:
    # Another region, another name, the same version and model: asking it is no use.
    twin = _deployment("old-west", api_version="2024-02-01")
    assert not may_pass_over((OLD, twin), OLD)
    assert not may_pass_over((OLD,), OLD)
    # Foundry members (a Llama, a Mistral) refuse what their API does not define alike.
    llama = _deployment("Llama-3-70B", api="foundry")
    mistral = _deployment("Mistral-large", api="foundry")
    assert not may_pass_over((llama, mistral), llama)
    assert may_pass_over((llama, mistral, OLD), llama)
