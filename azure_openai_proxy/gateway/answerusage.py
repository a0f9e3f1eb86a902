"""The usage an answer is priced by beside its tokens, read when the relay has the
answer: a unit-billed JSON answer's units (pictures, a transcription's seconds), and the
Responses API's hosted image tool's part (governance/toolusage.py), which names the
image deployment the client's header chose. Plain bytes and mappings in: no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from azure_openai_proxy.governance.toolusage import (
    IMAGE_DEPLOYMENT_HEADER,
    IMAGE_GEN,
    image_gen_usage,
)

__all__ = ["answer_image_gen", "unit_usage", "with_image_gen"]


def unit_usage(operation: str, raw: bytes, prompt: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The units a unit-billed JSON answer without token usage is priced by: the images
    returned (with the request's size and quality; a multipart edit's are not read:
    "unknown", left unpriced), or a verbose transcription's duration."""
    try:
        answer = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(answer, dict):
        return None
    if operation.startswith("images/"):
        data = answer.get("data")
        if not isinstance(data, list) or not data:
            return None
        size, quality = (prompt.get("size"), prompt.get("quality")) if prompt else ("unknown", None)
        return {"images": len(data), "size": size, "quality": quality}
    duration = answer.get("duration")
    if isinstance(duration, int | float) and not isinstance(duration, bool) and duration > 0:
        return {"audio_seconds": float(duration)}
    return None


def answer_image_gen(raw: bytes) -> dict[str, Any] | None:
    """The hosted image tool's part of a Responses JSON answer (governance/toolusage.py)."""
    try:
        answer = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return image_gen_usage(answer, None) if type(answer) is dict else None


def with_image_gen(usage: dict[str, Any] | None, image_gen: dict[str, Any] | None,
                   headers: Mapping[str, str]) -> dict[str, Any] | None:
    """The record's usage with the image tool's part, which names the image deployment
    the client's header chose (checked before it went upstream: gateway/translation.py)."""
    if image_gen is None:
        return usage
    deployment = headers.get(IMAGE_DEPLOYMENT_HEADER)
    return {**(usage or {}), IMAGE_GEN: {**image_gen, "deployment": deployment}}
