"""A gpt-image-1 picture asked with `stream: true` (images/generations, images/edits),
answered as Azure does: server-sent events.

What is known, and from where (read 2026-12-06):

- Azure's image generation how-to ("How to use Azure OpenAI image generation models",
  learn.microsoft.com/azure/ai-foundry/openai/how-to/dall-e; its "Streaming" part was
  added by MicrosoftDocs/azure-ai-docs commit 887275b, "Image gen streaming + partial
  image support", 2025-09-12): `gpt-image-1` streams with `stream: true` and
  `partial_images` from 0 to 3; its example calls the v1 API
  (`/openai/v1/`, `api-version` `preview`) with the official SDK's
  `client.images.generate(..., stream=True, partial_images=2)` and reads
  `image_generation.partial_image` events. DALL-E 3 is not said to stream.
- OpenAI's API reference, "Image Streaming" (the events Azure relays, and the types the
  official SDK parses: openai 3.63's `ImageGenPartialImageEvent`,
  `ImageGenCompletedEvent`, `ImageEdit...`): `image_generation.partial_image` /
  `image_edit.partial_image` (`b64_json`, `created_at`, `size`, `quality`,
  `background`, `output_format`, `partial_image_index` from 0), then
  `image_generation.completed` / `image_edit.completed` (the same, without the index,
  with `usage`: `input_tokens`, `input_tokens_details` {`text_tokens`,
  `image_tokens`}, `output_tokens`, `total_tokens`). `partial_images: 0` sends the
  picture in one event; the final picture may come before all the partial ones.
- OpenAI's image generation guide: each partial picture adds 100 output tokens.

Not confirmed, and what the emulator does meanwhile:

- `n` > 1: the completed event names no picture (no index), and no source says whether
  Azure sends one completed event a picture or one for all. The emulator sends, for
  each picture, its partial events and a completed event whose usage is that
  picture's own: its output tokens (and partial pictures'), the prompt's input tokens
  on the first only, so that the usages summed equal the unstreamed answer's (plus
  the partial pictures). The gateway sums them (normalize/picture_meter.py).
- The api-versions: the docs show the v1 API only. On the dated paths the emulator
  takes `stream` from 2025-04-01-preview (gpt-image-1's and the edits' first version)
  and answers earlier versions as Azure answers a field they do not know.
- Whether the stream ends with `data: [DONE]`: no source shows one; the emulator
  sends none (the SDK ends on either).
- The error a dall-e model gets for `stream`, and for a `partial_images` out of range:
  worded here in OpenAI's way (400 `invalid_request_error`, `param` named).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Mapping
from typing import Any

import orjson

from azure_openai_proxy.emulator import wire_errors
from azure_openai_proxy.emulator.versions import ApiVersion

__all__ = ["PARTIAL_IMAGE_TOKENS", "asked", "frames", "partial_images"]

PARTIAL_IMAGE_TOKENS = 100  # a partial picture's output tokens (OpenAI's guide)
_MOST_PARTIAL_IMAGES = 3
_STREAMS_SINCE = "2025-04-01"


def asked(value: object) -> bool:
    """Whether a body's (JSON) or a form's (text) `stream` asks for events."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1")
    return value is True


def partial_images(params: Mapping[str, Any], model: str,
                   version: ApiVersion | None) -> int:
    """The partial pictures a streamed request asks for (0 when not said); Azure's 400
    for a model that does not stream, an api-version without `stream`, or a count out of
    0-3."""
    if version is not None and not version.is_v1 and not version.at_least(_STREAMS_SINCE):
        raise wire_errors.invalid_request(
            "Unrecognized request argument supplied: stream", "stream", "unknown_parameter")
    if not model.startswith("gpt-image"):
        raise wire_errors.invalid_request(
            "Streaming is only supported for the GPT image models.", "stream",
            "invalid_value")
    raw = params.get("partial_images")
    if raw is None:
        return 0
    count = int(raw) if isinstance(raw, str) and raw.isascii() and raw.isdigit() else raw
    if type(count) is not int or not 0 <= count <= _MOST_PARTIAL_IMAGES:
        raise wire_errors.invalid_request(
            "Invalid 'partial_images': expected an integer from 0 to 3.", "partial_images",
            "invalid_value")
    return count


def frames(kind: str, pictures: list[bytes], partial: int, usages: list[dict[str, Any]],
           params: Mapping[str, Any], created: int) -> Iterator[tuple[bytes, int]]:
    """The events (bytes, tokens they take to make) of `pictures` streamed as `kind`
    (`image_generation` or `image_edit`): for each, `partial` partial events and its
    completed event with its `usages` entry."""
    shown = {"created_at": created, "size": params.get("size") or "1024x1024",
             "quality": params.get("quality") or "high",
             "background": params.get("background") or "opaque",
             "output_format": params.get("output_format") or "png"}
    for picture, usage in zip(pictures, usages, strict=True):
        b64 = base64.b64encode(picture).decode("ascii")
        for index in range(partial):
            yield _event(f"{kind}.partial_image", {
                "type": f"{kind}.partial_image", "b64_json": b64, **shown,
                "partial_image_index": index}), PARTIAL_IMAGE_TOKENS
        yield _event(f"{kind}.completed", {
            "type": f"{kind}.completed", "b64_json": b64, **shown, "usage": usage,
        }), PARTIAL_IMAGE_TOKENS


def _event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"
