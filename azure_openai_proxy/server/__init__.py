"""The aiohttp edge: the only server-side code that touches sockets."""

from __future__ import annotations

from azure_openai_proxy.server.app import create_app

__all__ = ["create_app"]
