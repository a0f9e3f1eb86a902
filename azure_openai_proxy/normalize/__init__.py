"""Make Azure OpenAI's answers read exactly like OpenAI's: pure functions over bytes.

- `stream`: `ChatStreamNormalizer` rewrites chat/completions SSE streams (`steady`: its
  fast path for frames of one shape, gpt-5's padded chunks among them; `choices`: what
  it reads in a frame's choices).
- `responses_meter`: `ResponsesStreamMeter` reads a Responses stream relayed unchanged.
- `picture_meter`: `PictureStreamMeter` reads a streamed gpt-image-1 picture's usage.
- `body`: `normalize_body` rewrites non-streamed JSON answers.
- `upstream_errors`: `translate_upstream_error` turns Azure's error answers into OpenAI's.
"""

from __future__ import annotations

from azure_openai_proxy.normalize.body import normalize_body
from azure_openai_proxy.normalize.stream import ChatStreamNormalizer, StreamPolicy
from azure_openai_proxy.normalize.upstream_errors import is_retryable, translate_upstream_error

__all__ = [
    "ChatStreamNormalizer",
    "StreamPolicy",
    "is_retryable",
    "normalize_body",
    "translate_upstream_error",
]
