"""The Responses API's hosted image tool (`tools: [{"type": "image_generation", ...}]`),
as Azure runs it. Pure.

What Azure does (researched 2026-12-06; sources below):

- The tool runs on an image deployment of the same resource that the client names in
  the `x-ms-oai-image-generation-deployment` header. Without it Azure answers 400
  `{"error": {"message": "imagegen deployment must be provided through header:
  x-ms-oai-image-generation-deployment", "type": "image_generation_user_error",
  "param": "tools", "code": "invalid_request_error"}}` (reported in
  github.com/editor-code-assistant/eca issue 612, 2026-09). Microsoft's answer in the
  Tech Community thread "Azure OpenAI - GPT-4.1 + tools/image_generation doesn't work"
  (techcommunity.microsoft.com ... /4424643) sets it as a default header of an
  `AzureOpenAI` client on the v1 path (`/openai/v1/`, `api_version="preview"`). Azure's
  Responses how-to (learn.microsoft.com .../openai/how-to/responses) lists gpt-image-1
  as the tool's model. On streaming it contradicts itself: its revision of 2025-08-27
  (MicrosoftDocs/azure-ai-docs commit 087de37, articles/ai-foundry/openai/how-to/
  responses.md) lists "Image generation using multi-turn editing and streaming -
  coming soon" under "Not currently supported" (wording since commit ab208b5, June
  2025), while its "Image generation" section has a "Streaming" example with
  `"partial_images": 2` ("can be used to receive 1-3 partial images") and
  `response.image_generation_call.partial_image` events. A later commit (887275b,
  September 2025, "Image gen streaming + partial image support update") edits that
  page; its new text was not found. The emulator streams partial images as OpenAI does.
- A field of the tool of the wrong JSON type (a list `quality`, a string
  `partial_images`) is a 400 `invalid_type` with `param` `tools[i].<field>`, checked
  before the header, as Azure answers for any field of a request (OpenAI's schema
  check; not seen for this tool in any source). A string field's value outside its
  list (`quality: "ultra"`) is a 400 `invalid_value` ("Supported values are: ..."), a
  number out of its range (`partial_images` 0-3, `output_compression` 0-100) a 400
  `integer_above_max_value` / `integer_below_min_value`, as OpenAI's API answers its
  other fields' (the values from the openai SDK's `ImageGeneration` tool).
- The picture is an `image_generation_call` output item (`id`, `status`, `result`: the
  base64 picture; OpenAI's also say `size`, `quality`, `output_format`, `background`,
  `revised_prompt`). Streamed: `response.output_item.added`, then
  `response.image_generation_call.in_progress`, `.generating`, one
  `.partial_image` per `partial_images` asked (`partial_image_b64`,
  `partial_image_index`), `.completed`, `response.output_item.done`.
- Billing: the pictures at the image model's rates, apart from the text model's usage.
  OpenAI's Response says so in `tool_usage.image_gen` (input tokens with their text and
  image split, output tokens: the openai SDK's `ToolUsage`). Whether Azure's answer
  carries `tool_usage` was not confirmed by any source found; the emulator sends it as
  OpenAI does, and the gateway prices the output items when it is absent.

Not emulated: multi-turn edits (`previous_response_id` whose picture is edited), masks,
the tool's `input_image`.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from azure_openai_proxy.emulator import media, wire_errors
from azure_openai_proxy.emulator.config import EmulatorConfig
from azure_openai_proxy.emulator.textgen import count_tokens
from azure_openai_proxy.emulator.validation import invalid_type, invalid_value
from azure_openai_proxy.emulator.wire_errors import AzureError

__all__ = ["IMAGE_DEPLOYMENT_HEADER", "ImageCall", "image_call", "image_events",
           "image_item", "image_tool_usage"]

IMAGE_DEPLOYMENT_HEADER = "x-ms-oai-image-generation-deployment"

# gpt-image-1's output tokens a picture (as ops_media.py's): `auto` answered as high,
# a size not listed as 1024x1024.
_PICTURE_TOKENS = {
    "low": {"1024x1024": 272, "1024x1536": 408, "1536x1024": 400},
    "medium": {"1024x1024": 1056, "1024x1536": 1584, "1536x1024": 1568},
    "high": {"1024x1024": 4160, "1024x1536": 6240, "1536x1024": 6208},
}
_PARTIAL_IMAGE_TOKENS = 100  # each partial image streamed (OpenAI's image guide)
# The tool's fields and their JSON types (the openai SDK's `ImageGeneration` tool).
_FIELD_TYPES: dict[str, tuple[type, str]] = {
    **dict.fromkeys(("model", "quality", "size", "output_format", "background", "moderation",
                     "input_fidelity"), (str, "a string")),
    **dict.fromkeys(("partial_images", "output_compression"), (int, "an integer")),
    "input_image_mask": (dict, "an object"),
}
# The values a string field takes (OpenAI's image generation tool); past them, 400
# `invalid_value`. Numbers: `partial_images` 0-3, `output_compression` 0-100.
_FIELD_VALUES: dict[str, tuple[str, ...]] = {
    "quality": ("low", "medium", "high", "auto"),
    "size": ("1024x1024", "1024x1536", "1536x1024", "auto"),
    "output_format": ("png", "webp", "jpeg"),
    "background": ("transparent", "opaque", "auto"),
    "moderation": ("auto", "low"),
    "input_fidelity": ("high", "low"),
}
_FIELD_RANGES = {"partial_images": (0, 3), "output_compression": (0, 100)}


@dataclass(frozen=True)
class ImageCall:
    """One picture the tool makes: its size, quality, partial images and tokens."""

    deployment: str
    size: str
    quality: str
    partial_images: int
    text_tokens: int
    output_tokens: int


def image_call(body: Mapping[str, Any], headers: Mapping[str, str], config: EmulatorConfig,
               prompt: str) -> ImageCall | None:
    """The picture a request's image tool makes (None: no such tool, or `tool_choice`
    none), or Azure's 400: a field of the tool of the wrong type (`invalid_type`), or a
    header that names no image deployment of the resource."""
    tools = body.get("tools")
    found = next(((n, t) for n, t in enumerate(tools) if isinstance(t, Mapping)
                  and t.get("type") == "image_generation"), None) if isinstance(tools, list) else None
    if found is None:
        return None
    index, tool = found
    _check_types(tool, index)
    if body.get("tool_choice") == "none":
        return None
    name = headers.get(IMAGE_DEPLOYMENT_HEADER)
    if not name:
        raise _user_error("imagegen deployment must be provided through header: "
                          f"{IMAGE_DEPLOYMENT_HEADER}")
    deployment = config.deployment(name)
    if deployment is None or deployment.kind != "images" or not deployment.model.startswith(
            "gpt-image"):
        raise _user_error(f"The image generation deployment '{name}' does not exist or is "
                          "not a gpt-image model deployment.")
    quality = tool.get("quality") if tool.get("quality") in _PICTURE_TOKENS else "high"
    size = str(tool.get("size") or "auto")
    by_size = _PICTURE_TOKENS[str(quality)]
    tokens = by_size.get(size, by_size["1024x1024"])
    partial = tool.get("partial_images")
    partial = partial if type(partial) is int and 0 <= partial <= 3 else 0
    if body.get("stream") is True:
        tokens += partial * _PARTIAL_IMAGE_TOKENS
    else:
        partial = 0
    return ImageCall(name, size if size in by_size else "1024x1024", str(quality), partial,
                     count_tokens(prompt), tokens)


def _check_types(tool: Mapping[str, Any], index: int) -> None:
    """Azure's 400 `invalid_type` for a field of the tool of the wrong JSON type (its
    request's schema is checked before the tool runs; null is a field not said)."""
    for name, (kind, expected) in _FIELD_TYPES.items():
        value = tool.get(name)
        if value is not None and (type(value) is bool or not isinstance(value, kind)):
            raise invalid_type(f"tools[{index}].{name}", expected, value)
    for name, values in _FIELD_VALUES.items():
        value = tool.get(name)
        if value is not None and value not in values:
            raise invalid_value(f"tools[{index}].{name}", value, values)
    for name, (least, most) in _FIELD_RANGES.items():
        value = tool.get(name)
        if value is not None and not least <= value <= most:
            which = "below minimum" if value < least else "above maximum"
            raise wire_errors.invalid_request(
                f"Invalid 'tools[{index}].{name}': integer {which} value. Expected a value "
                f"{'>=' if value < least else '<='} {least if value < least else most}, "
                f"but got {value} instead.", f"tools[{index}].{name}",
                "integer_below_min_value" if value < least else "integer_above_max_value")


def _user_error(message: str) -> AzureError:
    return AzureError(400, {"error": {"message": message, "type": "image_generation_user_error",
                                      "param": "tools", "code": "invalid_request_error"}})


def _picture(call: ImageCall, seed: str) -> str:
    digest = hashlib.sha256(seed.encode()).digest()
    return base64.b64encode(media.png(8, 8, (digest[0], digest[1], digest[2]))).decode()


def image_item(call: ImageCall, item_id: str, *, done: bool) -> dict[str, Any]:
    """The `image_generation_call` output item (its picture once done)."""
    return {"id": item_id, "type": "image_generation_call",
            "status": "completed" if done else "in_progress",
            "result": _picture(call, item_id) if done else None,
            "size": call.size, "quality": call.quality, "output_format": "png",
            "background": "opaque", "revised_prompt": None}


def image_tool_usage(call: ImageCall) -> dict[str, Any]:
    """The response's `tool_usage` (OpenAI's shape: `image_gen`)."""
    return {"image_gen": {
        "input_tokens": call.text_tokens,
        "input_tokens_details": {"text_tokens": call.text_tokens, "image_tokens": 0},
        "output_tokens": call.output_tokens,
        "output_tokens_details": {"image_tokens": call.output_tokens, "text_tokens": 0},
        "total_tokens": call.text_tokens + call.output_tokens}}


def image_events(call: ImageCall, item_id: str, index: int) -> list[tuple[str, dict[str, Any]]]:
    """The events between the item's `output_item.added` and `.done`, in order."""
    where = {"output_index": index, "item_id": item_id}
    events: list[tuple[str, dict[str, Any]]] = [
        ("response.image_generation_call.in_progress", where),
        ("response.image_generation_call.generating", where)]
    for n in range(call.partial_images):
        events.append(("response.image_generation_call.partial_image",
                       {**where, "partial_image_index": n,
                        "partial_image_b64": _picture(call, f"{item_id}/{n}")}))
    events.append(("response.image_generation_call.completed", where))
    return events
