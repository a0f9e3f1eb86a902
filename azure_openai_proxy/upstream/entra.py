"""Entra ID (Azure AD) bearer tokens for deployments with `auth: entra`.

`EntraTokens.token_for(deployment)` returns a token for the deployment's `entra_scope`
(`https://cognitiveservices.azure.com/.default` commercial,
`https://cognitiveservices.azure.us/.default` US Government, ...). Tokens are cached per
scope and refreshed `refresh_margin` seconds before they expire; concurrent requests
share one refresh (one `get_token` call in flight per scope). If a refresh fails while
the cached token is still valid, the cached one is used.

The credential is azure-identity's async `DefaultAzureCredential` (managed identity,
workload identity, service principal from `AZURE_CLIENT_ID`/`AZURE_TENANT_ID`/
`AZURE_CLIENT_SECRET`, Azure CLI, ...), imported lazily: azure-identity is the optional
`entra` extra. Tests pass any object with an async `get_token(scope)`.
"""

from __future__ import annotations

import asyncio
import importlib.util
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from azure_openai_proxy.errors import EntraUnavailable
from azure_openai_proxy.settings import DeploymentSettings, Settings

__all__ = [
    "EntraTokens",
    "EntraUnavailable",
    "TokenCredential",
    "entra_installed",
    "missing_entra_support",
]

REFRESH_MARGIN = 300.0  # seconds before expiry


class TokenCredential(Protocol):
    """What azure-identity's async credentials offer (`AccessToken` has `token`, `expires_on`)."""

    async def get_token(self, *scopes: str) -> Any: ...


def entra_installed() -> bool:
    return importlib.util.find_spec("azure.identity") is not None


def missing_entra_support(settings: Settings, installed: Callable[[], bool] = entra_installed) -> str | None:
    """A config error message when a deployment uses `auth: entra` and azure-identity
    is not installed; None when all is well."""
    names = [d.model_name for d in settings.deployments if d.auth == "entra"]
    if not names or installed():
        return None
    return (
        f"auth: entra is set for {', '.join(sorted(set(names)))}, but azure-identity is not "
        "installed; install it with: pip install 'azure-openai-proxy[entra]'"
    )


def _default_credential() -> TokenCredential:
    from azure.identity.aio import DefaultAzureCredential

    credential: TokenCredential = DefaultAzureCredential()
    return credential


@dataclass(slots=True)
class _Cached:
    token: str
    expires_on: float


class EntraTokens:
    """Per-worker token cache; one credential for every scope."""

    def __init__(
        self,
        credential: TokenCredential | None = None,
        *,
        clock: Callable[[], float] = time.time,
        refresh_margin: float = REFRESH_MARGIN,
    ) -> None:
        self._credential = credential
        self._clock = clock
        self._margin = refresh_margin
        self._cache: dict[str, _Cached] = {}
        self._refreshing: dict[str, asyncio.Future[_Cached]] = {}

    async def token_for(self, deployment: DeploymentSettings) -> str:
        return await self.token(deployment.entra_scope)

    async def token(self, scope: str) -> str:
        cached = self._cache.get(scope)
        now = self._clock()
        if cached is not None and now < cached.expires_on - self._margin:
            return cached.token
        pending = self._refreshing.get(scope)
        if pending is None:
            pending = asyncio.ensure_future(self._refresh(scope))
            self._refreshing[scope] = pending
            pending.add_done_callback(lambda _f: self._refreshing.pop(scope, None))
        try:
            # shield: a client that leaves must not cancel the refresh others wait on.
            fresh = await asyncio.shield(pending)
        except EntraUnavailable:
            if cached is not None and self._clock() < cached.expires_on:
                return cached.token
            raise
        return fresh.token

    async def _refresh(self, scope: str) -> _Cached:
        if self._credential is None:
            self._credential = _default_credential()
        try:
            access = await self._credential.get_token(scope)
        except Exception as exc:
            # azure-identity's messages name the sources it tried; they hold no secrets,
            # but we keep the client's message generic and the detail for the log.
            raise EntraUnavailable(
                f"The gateway could not get an Entra ID token for {scope} "
                f"({type(exc).__name__}); check its managed identity or service principal."
            ) from exc
        cached = _Cached(str(access.token), float(access.expires_on))
        self._cache[scope] = cached
        return cached

    async def close(self) -> None:
        close = getattr(self._credential, "close", None)
        if close is not None:
            await close()
