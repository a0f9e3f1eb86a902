"""Who is calling, and which key goes to Azure. Pure: headers in, decisions out.

Two modes, chosen by the settings:
- client keys configured: the caller must present one of the gateway's own keys
  (`Authorization: Bearer` or `api-key`), compared in constant time; Azure keys stay
  on the server.
- no client keys: the caller's key is passed through to Azure as `api-key` for
  deployments that have no key of their own (the Go tool's behaviour).
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field

from azure_openai_proxy.errors import AuthenticationFailed
from azure_openai_proxy.governance.buckets import UsualLimits
from azure_openai_proxy.governance.model import Team, VirtualKey

__all__ = ["Caller", "ClientKeyring", "Decided", "bearer_token", "presented_beside",
           "presented_key"]


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key a client sent: `Authorization: Bearer K` (OpenAI clients) or `api-key: K`
    (Azure clients)."""
    return presented_beside(headers, headers.get("Authorization"))


def presented_beside(headers: Mapping[str, str], authorization: str | None) -> str | None:
    """`presented_key` of `headers` whose `Authorization` (`authorization`) was read
    already: the header is looked up, and its value parsed, once per request."""
    if authorization:
        token = bearer_token(authorization)
        if token is not None:
            return token
    api_key = headers.get("api-key")
    if api_key and api_key.strip():
        return api_key.strip()
    return None


def bearer_token(authorization: str) -> str | None:
    """The key in an `Authorization: Bearer K` header's value (None: another scheme)."""
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated caller. `passthrough_key` is only set when no client keys are
    configured; it is the caller's own Azure key and is never logged. `key` and `team`
    are set for a virtual key (governance); a static client key has neither.
    `budgeted`: whether the key or its team has a budget, decided once per key version
    by the key directory so that a key without one skips the budget checks; None: not
    decided (`gateway/budgethold.budgeted` reads the limits)."""

    passthrough_key: str | None
    key: VirtualKey | None = None
    team: Team | None = None
    budgeted: bool | None = None
    # What the request path decided about this version of the key (`Decided`); None:
    # nothing is kept (a caller made elsewhere than the key directory).
    decided: Decided | None = field(default=None, compare=False)


class Decided:
    """What the request path decides once per version of a virtual key, kept on its
    `Caller` (made with it by the key directory, dropped with it at the next reload):
    `usual`, the key's `UsualLimits` when its requests take the limiter's short path
    (None: the general one), as of the limiter's `epoch` (gateway/pipeline.py
    `Gateway._usual`). Plain slots: the request path reads two attributes."""

    __slots__ = ("epoch", "usual")

    def __init__(self) -> None:
        self.epoch: object = None
        self.usual: UsualLimits | None = None


# Every caller with a gateway key: none of them sends its own key on to Azure.
_KEYED = Caller(passthrough_key=None)


class ClientKeyring:
    def __init__(self, keys: tuple[str, ...]) -> None:
        self._keys = tuple(key.encode() for key in keys)

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def authenticate(self, headers: Mapping[str, str]) -> Caller:
        return self.authenticate_key(presented_key(headers))

    def authenticate_key(self, key: str | None) -> Caller:
        """`authenticate` of the key the headers present (`presented_key`)."""
        if not self._keys:
            return Caller(key)
        if key is None:
            raise AuthenticationFailed(
                "You didn't provide an API key. Send your gateway key as "
                "'Authorization: Bearer YOUR_KEY'."
            )
        presented = key.encode()
        matched = False
        # Compare with every key so the time taken does not say which one was close.
        for candidate in self._keys:
            matched |= hmac.compare_digest(presented, candidate)
        if not matched:
            raise AuthenticationFailed("Incorrect API key provided for this gateway.")
        return _KEYED
