"""Deterministic stand-ins for a model: text, token counts and embedding vectors.

Pure: the same prompt and seed always give the same tokens, and the same input the
same vector, so tests can assert on them and benchmarks are repeatable.
"""

from __future__ import annotations

import base64
import hashlib
import math
import random
import re
import struct
from collections.abc import Iterable, Mapping
from typing import Any

TRIGGER_PROMPT_FILTER = "TRIGGER_PROMPT_FILTER"
TRIGGER_COMPLETION_FILTER = "TRIGGER_COMPLETION_FILTER"

_TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)
_WORDS = (
    "the", "azure", "model", "answers", "every", "request", "with", "a", "calm", "and",
    "careful", "sentence", "about", "clouds", "rivers", "mountains", "data", "tokens",
    "streams", "gateways", "latency", "quotas", "regions", "deployments", "engineers", "build",
    "reliable", "systems", "that", "keep", "working", "when", "networks", "fail", "and",
    "retries", "succeed", "while", "users", "wait", "patiently", "for", "bright", "useful",
    "results", "in", "the", "quiet", "evening", "light",
)


def count_tokens(text: str) -> int:
    """A stable token estimate: words and punctuation marks each count one."""
    return len(_TOKEN.findall(text))


def _rng(*parts: object) -> random.Random:
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode("utf-8", "replace")).digest()
    return random.Random(int.from_bytes(digest[:16], "big"))


def generate_tokens(prompt: str, seed: int | None, count: int, salt: int = 0) -> list[str]:
    """`count` tokens of plausible English; equal inputs give equal tokens.

    Each token is one word or one full stop, words after the first carrying their
    leading space, so `"".join(tokens)` is the text and `len(tokens)` its token count.
    """
    rng = _rng(prompt, seed, salt)
    tokens: list[str] = []
    sentence_start = True
    since_stop = 0
    while len(tokens) < count:
        if since_stop >= 6 and rng.random() < 0.25:
            tokens.append(".")
            sentence_start, since_stop = True, 0
            continue
        word = rng.choice(_WORDS)
        if sentence_start:
            word = word.capitalize()
        tokens.append(word if not tokens else f" {word}")
        sentence_start, since_stop = False, since_stop + 1
    return tokens


def content_text(content: object) -> str:
    """The text of a message's `content`: a string, or the text parts of a list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, Mapping) and isinstance(part.get("text"), str):
                parts.append(part["text"])
        return "\n".join(parts)
    return ""


def messages_text(messages: Iterable[Mapping[str, Any]]) -> str:
    """All prompt text of chat messages, including tool-call arguments, one per line."""
    lines = []
    for message in messages:
        lines.append(content_text(message.get("content")))
        calls = message.get("tool_calls")
        for call in calls if isinstance(calls, list) else ():
            if isinstance(call, Mapping) and isinstance(call.get("function"), Mapping):
                lines.append(str(call["function"].get("arguments", "")))
    return "\n".join(lines)


def chat_prompt_tokens(messages: Iterable[Mapping[str, Any]]) -> int:
    """Prompt tokens as OpenAI counts chat: 3 per message, its text, 3 for the reply."""
    total = 3
    for message in messages:
        total += 3 + count_tokens(content_text(message.get("content")))
        if message.get("name"):
            total += 1
    return total


def embedding_vector(text: str, dims: int) -> list[float]:
    """A unit vector of `dims` floats derived from `text` alone."""
    rng = _rng("embedding", text)
    raw = [rng.gauss(0.0, 1.0) for _ in range(dims)]
    return normalized(raw)


def normalized(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return [x / norm for x in vector]


def shortened(vector: list[float], dims: int) -> list[float]:
    """What `dimensions` does on text-embedding-3: keep the first `dims`, renormalize."""
    return normalized(vector[:dims])


def float32_base64(vector: list[float]) -> str:
    """The `encoding_format: base64` form: little-endian float32s, base64-encoded."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def stable_hex(*parts: object, length: int = 12) -> str:
    """A short hex digest of `parts`, for fingerprints and derived names."""
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:length]
