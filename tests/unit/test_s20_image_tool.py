"""The Responses API's hosted image tool, the review's findings (session 20): the key's
allow-list applied to the image deployment (gateway/governed.py), a cut stream's
pictures and partial images priced (normalize/responses_meter.py, the ledger's row),
the hold on a pool of several endpoints and of up to ten calls (gateway/toolhold.py),
a request never answered estimated with its pictures (gateway/budgethold.py)."""

from __future__ import annotations

from typing import Any

import pytest

from azure_openai_proxy.config import load_settings
from azure_openai_proxy.errors import ModelNotAllowed
from azure_openai_proxy.gateway.governed import check_image_allowed
from azure_openai_proxy.routing import RoutingTable

HEADER = "x-ms-oai-image-generation-deployment"
TOOL_BODY: dict[str, Any] = {"model": "gpt-4o", "input": "draw",
                             "tools": [{"type": "image_generation", "quality": "low"}]}


def _table() -> RoutingTable:
    """gpt-4o on two endpoints; `pictures` (gpt-image-1) on the first, `dalle` (dall-e-3)
    on both, `odd` of another model on the second."""
    def on(endpoint: str, name: str) -> dict[str, Any]:
        return {"deployment_name": name, "endpoint": endpoint, "api_key": "k",
                "api_version": "2025-04-01-preview"}
    first, second = "https://a.openai.azure.com", "https://b.openai.azure.com"
    return RoutingTable(load_settings({"models": {
        "gpt-4o": [on(first, "gpt-4o"), on(second, "gpt-4o")],
        "gpt-4o-solo": [on(first, "solo")],
        "gpt-image-1": [on(first, "pictures"), on(second, "odd")],
        "dall-e-3": [on(first, "dalle"), on(second, "dalle")],
    }, "client_keys": ["c"]}, {}))


def test_the_image_deployment_is_judged_by_the_keys_allow_list() -> None:
    table = _table()
    solo, pool = table.resolve("gpt-4o-solo"), table.resolve("gpt-4o")
    header = {HEADER: "pictures"}
    check_image_allowed(("gpt-4o*", "gpt-image-1"), table, solo, TOOL_BODY, header)
    with pytest.raises(ModelNotAllowed) as refused:
        check_image_allowed(("gpt-4o*",), table, solo, TOOL_BODY, header)
    assert refused.value.status == 404 and refused.value.code == "model_not_found"
    assert refused.value.param == HEADER
    # by the model, never by the deployment's name
    with pytest.raises(ModelNotAllowed):
        check_image_allowed(("gpt-4o*", "pictures"), table, solo, TOOL_BODY, header)
    # on a pool of two endpoints: the deployment's model on each of them
    check_image_allowed(("gpt-4o", "dall-e-3"), table, pool, TOOL_BODY, {HEADER: "dalle"})
    with pytest.raises(ModelNotAllowed):  # not on the second endpoint: its model unknown
        check_image_allowed(("gpt-4o", "gpt-image-1"), table, pool, TOOL_BODY, header)
    with pytest.raises(ModelNotAllowed):  # configured nowhere
        check_image_allowed(("*",), table, solo, TOOL_BODY, {HEADER: "elsewhere"})
    # no image tool asked: the header is not relayed (translation.py), nothing to judge
    check_image_allowed(("gpt-4o",), table, solo, {"input": "hi"}, header)
    check_image_allowed(("gpt-4o",), table, solo, {**TOOL_BODY, "tool_choice": "none"}, header)
    check_image_allowed(("gpt-4o",), table, solo, TOOL_BODY, {})
