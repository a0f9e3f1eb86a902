"""Make Azure OpenAI's responses read exactly like OpenAI's: pure functions over bytes."""

from __future__ import annotations

from azure_openai_proxy.normalize.stream import ChatStreamNormalizer, StreamPolicy

__all__ = ["ChatStreamNormalizer", "StreamPolicy"]
