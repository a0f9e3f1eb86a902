"""The Responses API's hosted image tool (`tools: [{"type": "image_generation"}]`),
metered apart from the text model's usage.

Azure runs the tool on an image deployment of the same resource that the client names
in the `x-ms-oai-image-generation-deployment` header (without it Azure answers 400
`imagegen deployment must be provided through header: ...`), and bills its pictures at
that deployment's model's rates (gpt-image-1's), not the text model's. A response says
what the tool used in `tool_usage.image_gen` (OpenAI's `Response.tool_usage`: input
tokens with their text/image split, output tokens) and lists each picture as an
`image_generation_call` output item (with its `size` and `quality`).

`image_gen_usage(response, deployment)` is what a finished request's record keeps of it
(under the usage's `image_gen` key): the tool's usage as sent, with the deployment that
ran it; or, when the response carries no tool usage, the pictures' output tokens by
their quality and size (governance/estimate.py's table, the dearest where not said),
flagged `estimated`. `image_gen_cost` prices it, as the ledger and the budgets do.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from azure_openai_proxy.governance.estimate import picture_tokens
from azure_openai_proxy.governance.mediatokens import PARTIAL_IMAGE_TOKENS
from azure_openai_proxy.governance.prices import PriceTable

__all__ = ["IMAGE_DEPLOYMENT_HEADER", "IMAGE_GEN", "image_gen_cost", "image_gen_elsewhere",
           "image_gen_usage", "image_tool", "valid_deployment_name"]

IMAGE_DEPLOYMENT_HEADER = "x-ms-oai-image-generation-deployment"
IMAGE_GEN = "image_gen"  # the record usage's key for the tool's part
_MAX_NAME = 64  # Azure's deployment names: 2-64 letters, digits, `-`, `_`, `.`
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
_MAX_CALLS = 100  # items read per response: what one response may make, and more


def image_tool(body: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """A Responses request body's hosted image tool (None: it asks for none, or its
    `tool_choice` is none). The one reading: the header is relayed (gateway/
    translation.py), allowed (gateway/governed.py) and held (gateway/toolhold.py) by it."""
    tools = body.get("tools") if body is not None else None
    if type(tools) is not list or body is None or body.get("tool_choice") == "none":
        return None
    for tool in tools:
        if isinstance(tool, Mapping) and tool.get("type") == "image_generation":
            return tool
    return None


def valid_deployment_name(name: str) -> bool:
    """Whether a client's header value can be a deployment's name (and so safe to relay)."""
    return 0 < len(name) <= _MAX_NAME and _NAME_CHARS.issuperset(name) and name.strip(".") != ""


def image_gen_usage(response: Mapping[str, Any], deployment: str | None,
                    partial_images: int = 0) -> dict[str, Any] | None:
    """The image tool's part of a finished `response` object (a JSON answer, or a
    stream's final event's `response`), or None when it made no picture. Estimated from
    its items, it counts the `partial_images` a stream sent too (each billed as 100 image
    output tokens: governance/mediatokens.py), even beside no finished picture (a stream
    cut before its item was done)."""
    tool_usage = response.get("tool_usage")
    said = tool_usage.get(IMAGE_GEN) if isinstance(tool_usage, dict) else None
    if isinstance(said, dict) and (said.get("input_tokens") or said.get("output_tokens")):
        return {**said, "deployment": deployment}
    output = response.get("output")
    tokens = calls = 0
    for item in output[:_MAX_CALLS] if isinstance(output, list) else ():
        if isinstance(item, dict) and item.get("type") == "image_generation_call" and (
                item.get("status") != "failed"):
            calls += 1
            tokens += picture_tokens({"quality": item.get("quality"), "size": item.get("size")})
    if not calls and partial_images <= 0:
        return None
    tokens += max(partial_images, 0) * PARTIAL_IMAGE_TOKENS
    return {"input_tokens": 0, "output_tokens": tokens, "total_tokens": tokens,
            "deployment": deployment, "estimated": True}


def image_gen_cost(prices: PriceTable, models: Mapping[tuple[str, str], str],
                   endpoint: str | None, usage: Mapping[str, Any]) -> tuple[float, bool]:
    """(USD, priced) of the tool's part (`image_gen_usage`), at the rates of the image
    deployment's model on `endpoint` (then of its name): its input's image tokens at the
    image rate, the rest as the model's text and output. A deployment configured on
    other endpoints only (`image_gen_elsewhere`: the request's has it, unknown to the
    configuration) at the dearest of its models there, priced if all of them are."""
    deployment = usage.get("deployment")
    if not isinstance(deployment, str):
        return 0.0, False
    model = models.get((endpoint or "", deployment))
    elsewhere = [] if model is not None else _models_named(models, deployment)
    if not elsewhere:
        return prices.usage_cost((model, deployment), usage)
    costs = [prices.usage_cost((other, deployment), usage) for other in elsewhere]
    return max(usd for usd, _ in costs), all(priced for _, priced in costs)


def image_gen_elsewhere(models: Mapping[tuple[str, str], str], endpoint: str | None,
                        usage: Mapping[str, Any]) -> bool:
    """Whether the tool's part is priced by another endpoint's deployment of its name
    (`image_gen_cost`): an estimate, which the ledger's row flags."""
    deployment = usage.get("deployment")
    return (isinstance(deployment, str) and (endpoint or "", deployment) not in models
            and bool(_models_named(models, deployment)))


def _models_named(models: Mapping[tuple[str, str], str], deployment: str) -> list[str]:
    return sorted({model for (_, name), model in models.items() if name == deployment})
