"""A budget's hold for the Responses API's hosted image tool (governance/toolusage.py):
its pictures are billed at the image deployment's model's rates, apart from the text
model's, so a budgeted key's request that may make them holds them too.

Held: the tool's pictures at their quality and size (the dearest where not said: `auto`
is held as high, at the quality's largest size), their partial images when streamed, one
picture a call and as many calls as `max_tool_calls` allows (one when not said: a
response that calls the tool again is settled at what it cost, not refused), and the
prompt's text at the image model's input rate. The image deployment is the one the
client's `x-ms-oai-image-generation-deployment` names: one the configuration does not
have, or whose model has no price, is refused to a hard budget (`model_not_priced`):
it would be recorded at $0."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from azure_openai_proxy.governance.budget import BudgetGuard
from azure_openai_proxy.governance.estimate import picture_tokens
from azure_openai_proxy.governance.toolusage import IMAGE_DEPLOYMENT_HEADER

__all__ = ["ToolNotPriced", "image_tool_usd"]

_MOST_CALLS = 10  # held at most: past it a response is settled at what it cost


class ToolNotPriced(Exception):
    """The request's image tool cannot be priced (the deployment or its price unknown)."""


def image_tool_usd(guard: BudgetGuard, body: Mapping[str, Any],
                   headers: Mapping[str, str] | None, prompt_tokens: int) -> float:
    """What a Responses request's image tool may cost (0.0: it asks for none); raises
    `ToolNotPriced` when it asks for one that cannot be priced."""
    tool = _image_tool(body)
    if tool is None:
        return 0.0
    prices = guard.prices
    deployment = headers.get(IMAGE_DEPLOYMENT_HEADER) if headers is not None else None
    if prices is None:
        return 0.0
    if not deployment:
        raise ToolNotPriced(deployment)  # Azure refuses it: nothing the key may run
    models = {model for (_, name), model in guard.models.items() if name == deployment}
    if not models:
        raise ToolNotPriced(deployment)
    asked: dict[str, Any] = {"quality": tool.get("quality"), "size": tool.get("size")}
    if body.get("stream") is True:
        asked["partial_images"] = tool.get("partial_images", 0)
    calls = body.get("max_tool_calls")
    calls = calls if type(calls) is int and 1 <= calls <= _MOST_CALLS else 1
    usage = {"input_tokens": prompt_tokens * calls,
             "output_tokens": picture_tokens(asked) * calls}
    dearest = 0.0
    for model in models:
        usd, priced = prices.usage_cost((model, deployment), usage)
        if not priced:
            raise ToolNotPriced(deployment)
        dearest = max(dearest, usd)
    return dearest


def _image_tool(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    tools = body.get("tools")
    if not isinstance(tools, list) or body.get("tool_choice") == "none":
        return None
    for tool in tools:
        if isinstance(tool, Mapping) and tool.get("type") == "image_generation":
            return tool
    return None
