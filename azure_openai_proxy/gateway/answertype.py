"""What Azure's answer on a JSON route (chat, completions, embeddings, responses) is
when its head does not say: `implied_type`, from the client's request; and the error for
a 2xx answer there that is not a JSON object (`not_json`)."""

from __future__ import annotations

from azure_openai_proxy.errors import UpstreamInvalidAnswer
from azure_openai_proxy.gateway.requestbody import RequestBody

__all__ = ["implied_type", "not_json"]


def implied_type(body: RequestBody | None) -> str:
    """The content-type of an answer whose head names none: the stream the client asked
    for (`stream: true`), else JSON."""
    prompt = body.json if body is not None else None
    streamed = prompt is not None and prompt.get("stream") is True
    return "text/event-stream" if streamed else "application/json"


def not_json(status: int, content_type: str) -> UpstreamInvalidAnswer:
    return UpstreamInvalidAnswer(
        f"Azure OpenAI answered {status} with a body that is not a JSON object "
        f"(content-type {content_type or 'none'!r}).")
