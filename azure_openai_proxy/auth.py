"""Who is calling, and which key goes to Azure. Pure: headers in, decisions out.

Two modes, chosen by the settings:
- client keys configured: the caller must present one of the gateway's own keys
  (`Authorization: Bearer` or `api-key`), compared in constant time; Azure keys stay
  on the server.
- no client keys: the caller's key is passed through to Azure as `api-key` for
  deployments that have no key of their own (the Go tool's behaviour).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field

from azure_openai_proxy.balancing.callers import ANONYMOUS
from azure_openai_proxy.errors import AuthenticationFailed
from azure_openai_proxy.governance.buckets import UsualLimits
from azure_openai_proxy.governance.model import Team, VirtualKey

__all__ = ["ANONYMOUS", "Caller", "ClientKeyring", "Decided", "bearer_token", "caller_id",
           "presented_beside", "presented_key"]


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
    # Which static client key: "client:" and a hash of it, never the key (`caller_id`).
    client: str | None = None


def caller_id(caller: Caller | None) -> str:
    """Who a request is for the circuit breakers (`balancing/callers.py`): its virtual
    key's team, else its virtual key's id, else its static client key (`Caller.client`,
    a hash), else, when the gateway passes keys through, a hash of the Azure key the
    caller sent, else "anonymous". Made when a request fails, not for every request."""
    if caller is None:
        return ANONYMOUS
    if caller.key is not None:
        # A team is one tenant: its keys are one caller, or a tenant rotating its
        # failing requests over two of its keys would open the circuit for all.
        team = caller.key.team_id
        return "key:" + caller.key.id if team is None else "team:" + team
    if caller.client is not None:
        return caller.client
    if caller.passthrough_key:
        return "azure-key:" + _digest(caller.passthrough_key)
    return ANONYMOUS


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:16]


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


class ClientKeyring:
    def __init__(self, keys: tuple[str, ...]) -> None:
        # Each key with its own caller, told apart by the circuit breakers.
        self._keys = tuple(
            (key.encode(), Caller(None, client="client:" + _digest(key))) for key in keys
        )

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
        matched: Caller | None = None
        # Compare with every key so the time taken does not say which one was close.
        for candidate, caller in self._keys:
            if hmac.compare_digest(presented, candidate):
                matched = caller
        if matched is None:
            raise AuthenticationFailed("Incorrect API key provided for this gateway.")
        return matched
