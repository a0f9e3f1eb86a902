"""A budget's hold for the Responses API's hosted image tool (governance/toolusage.py):
its pictures are billed at the image deployment's model's rates, apart from the text
model's, so a budgeted key's request that may make them holds them too.

Held: the tool's pictures at their quality and size (the dearest where not said: `auto`
is held as high, at the quality's largest size), their partial images when streamed, one
picture a call and as many calls as `max_tool_calls` allows, ten at most (one when not
said: a response that calls the tool again is settled at what it cost, not refused),
and the prompt's text at the image model's input rate. The image deployment is the one
the client's `x-ms-oai-image-generation-deployment` names, on the endpoint the request
goes to (Azure runs it on that resource): every endpoint of the request's pool must
configure it, and it is held at the dearest of its models there. One that an endpoint
the balancer may pick does not configure (it may run there, of a model not known), or
whose model has no price, is refused to a hard budget (`model_not_priced`): it would be
recorded at $0, or at a model it may not be. In env mode (a dynamic pool: no model is
configured) the deployment is priced by its name, as the ledger prices it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from azure_openai_proxy.errors import ModelNotPriced
from azure_openai_proxy.governance.budget import BudgetGuard
from azure_openai_proxy.governance.estimate import picture_tokens
from azure_openai_proxy.governance.mediatokens import LONGEST_PICTURE_PROMPT
from azure_openai_proxy.governance.toolusage import IMAGE_DEPLOYMENT_HEADER, image_tool
from azure_openai_proxy.routing import Pool

__all__ = ["image_tool_usage", "image_tool_usd"]

_MOST_CALLS = 10  # held at most: past it a response is settled at what it cost
# The longest prompt an image model takes, in tokens (four characters a token): the
# tool's prompt, which the text model writes, is no longer
_LONGEST_PROMPT_TOKENS = LONGEST_PICTURE_PROMPT // 4


def image_tool_usd(guard: BudgetGuard, body: Mapping[str, Any], headers: Mapping[str, str] | None,
                   prompt_tokens: int, pool: Pool | None, hard: bool) -> float:
    """What a Responses request's image tool may cost on `pool` (0.0: it asks for none);
    raises `ModelNotPriced` to a `hard` budget when it asks for one that cannot be priced
    (a soft budget's is held at what can be priced: it only warns)."""
    prices = guard.prices
    if prices is None:
        return 0.0
    usage = image_tool_usage(body, prompt_tokens)
    if usage is None:
        return 0.0
    deployment = headers.get(IMAGE_DEPLOYMENT_HEADER) if headers is not None else None
    endpoints = {member.endpoint for member in pool.deployments} if pool is not None else set()
    models = [guard.models.get((endpoint, deployment or "")) for endpoint in endpoints]
    dearest, priced = 0.0, bool(deployment) and bool(models)  # none: Azure refuses it
    for model in models:
        # a dynamic pool (env mode) configures no model: its deployments are named after
        # their models, and are priced by their names, as the ledger prices them
        usd, known = (prices.usage_cost((model, deployment), usage) if model or (
            pool is not None and pool.dynamic) else (0.0, False))
        dearest, priced = max(dearest, usd), priced and known
    if hard and not priced:
        raise ModelNotPriced(
            f"The image generation tool's deployment (the {IMAGE_DEPLOYMENT_HEADER} "
            "header) is not a deployment with a price on every endpoint this request may "
            "go to, so its pictures cannot count against this key's budget.",
            param=IMAGE_DEPLOYMENT_HEADER)
    return dearest


def image_tool_usage(body: Mapping[str, Any], prompt_tokens: int, held: bool = True
                     ) -> dict[str, Any] | None:
    """The usage (Responses' shape) the image tool of a request may be billed: its
    pictures and their prompt, at most (`held`: the budget's hold); None when it asks for
    no tool. Not `held` (a request sent and never answered, gateway/unanswered.py): a
    best estimate, one picture (`max_tool_calls` bounds every tool's calls, a function's
    too, not the pictures made) whose prompt, written by the text model, is at most the
    longest an image model takes (32,000 characters, ~8,000 tokens), not the whole
    conversation."""
    tool = image_tool(body)
    if tool is None:
        return None
    asked: dict[str, Any] = {"quality": tool.get("quality"), "size": tool.get("size")}
    if body.get("stream") is True:
        asked["partial_images"] = tool.get("partial_images", 0)
    calls = body.get("max_tool_calls")
    if not held:
        prompt = min(prompt_tokens, _LONGEST_PROMPT_TOKENS)
        output = picture_tokens(asked)
        return {"input_tokens": prompt, "output_tokens": output, "total_tokens": prompt + output}
    if calls is None:
        calls = 1
    elif type(calls) is not int or calls < 1:  # Azure's 400, or read as the gateway cannot
        calls = _MOST_CALLS
    calls = min(calls, _MOST_CALLS)
    output = picture_tokens(asked) * calls
    return {"input_tokens": prompt_tokens * calls, "output_tokens": output,
            "total_tokens": prompt_tokens * calls + output}
