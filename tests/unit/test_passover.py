"""`may_pass_over`: which pool members a request the gateway refused for one member (a
parameter or route its API or api-version does not serve) may still go to; and when a
native client's own api-version is the one every dated member is sent."""

from __future__ import annotations

from typing import Any

import pytest

from azure_openai_proxy.balancing.passover import may_pass_over
from azure_openai_proxy.routing import classify
from azure_openai_proxy.settings import DeploymentSettings
from azure_openai_proxy.translate import honoured_client_version


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


def test_a_native_clients_own_version_is_every_dated_members() -> None:
    # An Azure SDK client's api-version, honoured, is what each dated member is sent: their
    # own versions decide nothing, so another version's member would refuse it alike (and
    # passing it over could only wait for that member); the v1 API's and Foundry's differ.
    new = _deployment("new", api_version="2025-04-01-preview")
    assert not may_pass_over((OLD, new), OLD, client_version=True)
    assert may_pass_over((OLD, _deployment("v1", api="v1")), OLD, client_version=True)
    o3 = _deployment("o3-mini", api_version="2025-04-01-preview", model_name="o3-mini")
    assert may_pass_over((OLD, o3), OLD, client_version=True)


@pytest.mark.parametrize(("path", "version", "honour", "sent"), [
    ("/openai/deployments/gpt-4o/chat/completions", "2024-02-01", True, True),
    ("/openai/deployments/gpt-4o/chat/completions", "2024-02-01", False, False),
    ("/openai/deployments/gpt-4o/chat/completions", "preview", True, False),
    ("/openai/deployments/gpt-4o/chat/completions", None, True, False),
    ("/v1/chat/completions", "2024-02-01", True, False),  # OpenAI-style: no version of its own
])
def test_when_the_client_version_is_sent(path: str, version: str | None, honour: bool,
                                         sent: bool) -> None:
    target = classify("POST", path, "/v1")
    assert honoured_client_version(target, version, honour) is sent
