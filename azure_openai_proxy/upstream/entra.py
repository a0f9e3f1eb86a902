"""Entra ID (Azure AD) bearer tokens for deployments with `auth: entra`.

`EntraTokens.token_for(deployment)` returns a token for the deployment's `entra_scope`
(`https://cognitiveservices.azure.com/.default` commercial,
`https://cognitiveservices.azure.us/.default` US Government, ...). Tokens are cached per
scope and refreshed `refresh_margin` seconds before they expire; concurrent requests
share one refresh (one `get_token` call in flight per scope). While the cached token is
still valid, requests use it and the refresh runs beside them: none waits for it, and if
it fails the cached one serves on. After a failed refresh none is tried for
`retry_after_failure` seconds: requests without a valid token get the 502 at once instead
of each waiting for the credential to fail again (a DefaultAzureCredential probing its
sources takes seconds).

The credential is azure-identity's async `DefaultAzureCredential` (managed identity,
workload identity, service principal from `AZURE_CLIENT_ID`/`AZURE_TENANT_ID`/
`AZURE_CLIENT_SECRET`, Azure CLI, ...), imported lazily: azure-identity is the optional
`entra` extra. Tests pass any object with an async `get_token(scope)`.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
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

log = logging.getLogger("azure_openai_proxy")

REFRESH_MARGIN = 300.0  # seconds before expiry
RETRY_AFTER_FAILURE = 10.0  # seconds without a new get_token after one failed
# A get_token that never ends (an IMDS endpoint that drops packets) failed no request:
# each waited for ever. DefaultAzureCredential's own chain takes seconds at most.
TOKEN_TIMEOUT = 30.0


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
    refresh_at: float  # the margin before expiry, or half the lifetime if that is less


class EntraTokens:
    """Per-worker token cache; one credential for every scope."""

    def __init__(
        self,
        credential: TokenCredential | None = None,
        *,
        clock: Callable[[], float] = time.time,
        refresh_margin: float = REFRESH_MARGIN,
        retry_after_failure: float = RETRY_AFTER_FAILURE,
    ) -> None:
        self._credential = credential
        self._clock = clock
        self._margin = refresh_margin
        self._retry_after = retry_after_failure
        self._cache: dict[str, _Cached] = {}
        self._refreshing: dict[str, asyncio.Future[_Cached]] = {}
        # scope -> (until when no refresh is tried, the failure's message)
        self._failed: dict[str, tuple[float, str]] = {}

    async def token_for(self, deployment: DeploymentSettings) -> str:
        return await self.token(deployment.entra_scope)

    async def token(self, scope: str) -> str:
        cached = self._cache.get(scope)
        now = self._clock()
        if cached is not None and now < cached.refresh_at:
            return cached.token
        valid = cached is not None and now < cached.expires_on
        failed = self._failed.get(scope)
        if failed is not None and now < failed[0]:
            if cached is not None and valid:
                return cached.token
            raise EntraUnavailable(failed[1])
        pending = self._refreshing.get(scope)
        if pending is None:
            pending = asyncio.ensure_future(self._refresh(scope))
            self._refreshing[scope] = pending
            pending.add_done_callback(lambda f: self._refresh_ended(scope, f))
        if cached is not None and valid:
            return cached.token  # the refresh goes on without this request
        # shield: a client that leaves must not cancel the refresh others wait on.
        fresh = await asyncio.shield(pending)
        return fresh.token

    def _refresh_ended(self, scope: str, refresh: asyncio.Future[_Cached]) -> None:
        self._refreshing.pop(scope, None)
        if not refresh.cancelled():
            refresh.exception()  # read: one no request awaited is not "never retrieved"

    async def _refresh(self, scope: str) -> _Cached:
        if self._credential is None:
            self._credential = _default_credential()
        try:
            async with asyncio.timeout(TOKEN_TIMEOUT):
                access = await self._credential.get_token(scope)
        except Exception as exc:
            # azure-identity's messages name the sources it tried; they hold no secrets,
            # but we keep the client's message generic and the detail for the log (once
            # per failed refresh: at most one each `retry_after_failure` seconds).
            # (our own bound's TimeoutError says nothing of itself)
            reason = str(exc) or (f"no answer within {TOKEN_TIMEOUT:g} s"
                                  if isinstance(exc, TimeoutError) else "")
            log.warning("Entra ID: no token for %s: %s: %s", scope, type(exc).__name__, reason)
            message = (f"The gateway could not get an Entra ID token for {scope} "
                       f"({type(exc).__name__}); check its managed identity or service "
                       "principal.")
            self._failed[scope] = (self._clock() + self._retry_after, message)
            raise EntraUnavailable(message) from exc
        # A token living less than the margin (a short-lived federated one) was due for
        # refresh as soon as it came: a get_token for every request.
        expires_on = float(access.expires_on)
        lifetime = max(expires_on - self._clock(), 0.0)
        cached = _Cached(str(access.token), expires_on,
                         expires_on - min(self._margin, lifetime / 2))
        self._cache[scope] = cached
        self._failed.pop(scope, None)
        return cached

    async def close(self) -> None:
        # A refresh beside the requests, which none awaits, outlived the worker's loop
        # ("Task was destroyed but it is pending!") or failed on the closed credential.
        refreshes = list(self._refreshing.values())
        for refresh in refreshes:
            refresh.cancel()
        await asyncio.gather(*refreshes, return_exceptions=True)
        close = getattr(self._credential, "close", None)
        if close is not None:
            await close()
