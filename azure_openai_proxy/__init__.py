"""azure-openai-proxy: every OpenAI client talks to Azure OpenAI through it, unchanged."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
