"""A Realtime session's rate limits, for a virtual key: the opening is one request of
its RPM (`limit_plan`); then each `response.create` is one request of its RPM and TPM
(its tokens estimated as the conversation so far plus its most output), in flight until
its `response.done` settles it with the tokens Azure counted, or Azure's `error` naming
it gives its reservation back. A response Azure starts by itself (server VAD) is charged
as one request, already made. Plain bookkeeping over the limiter: the session does the
socket work (`realtime.py`).

A session follows its key's current version (`SessionKey`): on each `response.create`,
and every `KEY_CHECK_SECONDS`, traffic or not, the key is looked up again in the key
directory (in memory, by the hash of the secret the session opened with): its current
limits, allow-list and team are the next response's, and a key no longer valid (revoked,
blocked, expired, its team blocked, its old secret's grace over) or no longer allowed the
session's model is the refusal that ends the session.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from azure_openai_proxy.auth import Caller
from azure_openai_proxy.errors import (
    AuthenticationFailed,
    GatewayError,
    KeyRateLimited,
    ModelNotAllowed,
)
from azure_openai_proxy.gateway.governed import limit_refusal, pool_allowed
from azure_openai_proxy.gateway.keydirectory import KeyDirectory
from azure_openai_proxy.gateway.pipeline import Gateway
from azure_openai_proxy.gateway.realtime_wire import (
    ResponseRequested,
    upstream_error_id,
    with_event_id,
)
from azure_openai_proxy.governance.ratelimit import Admission, LimitPlan, Refusal
from azure_openai_proxy.routing import Pool

__all__ = ["KEY_CHECK_SECONDS", "ResponseLimits", "SessionKey", "limit_plan"]

_MAX_RUNNING = 32  # a session's responses admitted and not done, at most
# How often a session looks its key up again (besides each `response.create`), on its
# traffic or, silent, by its watcher: with the directory's 0.5 s poll, a key revoked
# elsewhere stops a session, streaming or silent, within about one to one and a half seconds.
KEY_CHECK_SECONDS = 0.5


def limit_plan(gateway: Gateway, caller: Caller) -> LimitPlan | None:
    """The limits a virtual key's session and its responses go through (None: none)."""
    key, team, limiter = caller.key, caller.team, gateway.limiter
    if key is None or limiter is None:
        return None
    if team is None:
        return limiter.plan(key.id, key.limits, None, None)
    return limiter.plan(key.id, key.limits, team.id, team.limits)


class SessionKey:
    """The version of its virtual key a session goes by (`caller`), looked up again by
    `check`: no database call (the key directory is in memory, refreshed on change; a
    database outage leaves the keys known as they were). `due` says when the session's
    traffic should check again."""

    def __init__(self, directory: KeyDirectory, presented: str, caller: Caller, model: str,
                 pool: Pool, clock: Callable[[], float] = time.monotonic) -> None:
        self.caller = caller
        self._directory = directory
        self._presented = presented  # the sha256 of the secret the session opened with
        self._model = model
        self._pool = pool
        self._clock = clock
        self._next = clock() + KEY_CHECK_SECONDS

    def due(self) -> bool:
        """Whether `KEY_CHECK_SECONDS` have passed since the last check."""
        return self._clock() >= self._next

    def check(self) -> GatewayError | None:
        """The key's current version made `caller` (kept as it is while the key and its
        team are the same objects); or the refusal that ends the session: the key's own
        401 (`invalid_api_key`), or `model_not_found` when its allow-list no longer
        holds the session's model."""
        self._next = self._clock() + KEY_CHECK_SECONDS
        try:
            caller, _ = self._directory.caller_by_hash(self._presented, self.caller)
        except AuthenticationFailed as refused:
            return refused
        if caller is self.caller:  # the same version of the key
            return None
        key = caller.key
        if key is not None and key.models and not pool_allowed(key.models, self._model,
                                                                self._pool):
            return ModelNotAllowed(self._model)
        self.caller = caller
        return None


class ResponseLimits:
    """One session's responses through its key's (and team's) limits: those admitted
    and not yet done (`running`, oldest first, each with the client event that asked
    for it), the tokens owed, and the last response's tokens (the next one's context).
    `caller` is the key's version the next response goes by (the session sets it when
    its `SessionKey` finds a newer one)."""

    def __init__(self, gateway: Gateway, caller: Caller) -> None:
        self._gateway = gateway
        self.caller = caller
        self.running: deque[tuple[str, Admission]] = deque()
        self._named = 0  # the `event_id`s given to `response.create`s without one
        self._owed = 0  # tokens of responses Azure started by itself, not yet charged
        self.last_tokens = 0  # the last response's input and output: the next one's context

    def admit(self, asked: ResponseRequested,
              message: str | bytes) -> str | bytes | KeyRateLimited:
        """Let a `response.create` through the key's and team's RPM and TPM: the message
        to send Azure; or the refusal to answer it with (as a `rate_limit_exceeded` error
        event). One without an `event_id` (the SDKs send none) is given one, so that
        Azure's `error` refusing it names it and its admission is settled."""
        # Planned anew (the limiter keeps a key's plan): a reload of the keys drops plans,
        # and `caller` is the key's current version (its limits and team).
        plan, limiter = limit_plan(self._gateway, self.caller), self._gateway.limiter
        assert plan is not None and limiter is not None
        tokens = 0
        if plan.counts_tokens:
            most = asked.max_output
            if most is None:
                most = self._gateway.settings.default_completion_tokens
            tokens = self.last_tokens + most
        admitted = limiter.take(plan, tokens)
        if isinstance(admitted, Refusal):
            return limit_refusal(admitted)
        event_id = asked.event_id
        if event_id is None:
            self._named += 1
            event_id = f"gw_rc_{self._named}"
            message = with_event_id(message, event_id)
        running = self.running
        running.append((event_id, admitted))
        if len(running) > _MAX_RUNNING:
            # Refused by Azure without naming themselves (no `event_id`), not limited by
            # `max_parallel`: the oldest is given up on, so the list stays bounded.
            self._settle(running.popleft()[1], None)
        return message

    def refused_upstream(self, message: str | bytes) -> None:
        """Azure's `error` event about a `response.create` it refused: no response comes
        of it, so its admission is settled (its reservation given back)."""
        event_id = upstream_error_id(message)
        if event_id is None:
            return
        for running in self.running:
            if running[0] == event_id:
                self.running.remove(running)
                self._settle(running[1], None)
                return

    def responded(self, tokens: int | None) -> None:
        """One response done: its admission settled with its tokens (None: Azure did not
        count them); one Azure started by itself charged."""
        if self.running:
            self._settle(self.running.popleft()[1], tokens)
        elif tokens:
            # A response Azure started by itself (server VAD: no `response.create`): one
            # request of the key's limits, already made; its tokens count all the same.
            self._owed += tokens
            self._charge_owed()

    def end(self) -> None:
        """The session ended: responses that never finished give their reservations
        back, and the tokens still owed are charged."""
        while self.running:
            self._settle(self.running.popleft()[1], None)
        if self._owed:
            self._charge_owed()

    def _settle(self, admission: Admission, tokens: int | None) -> None:
        """`admission` settled with `tokens`, and with the tokens owed (`_charge_owed`)."""
        limiter = self._gateway.limiter
        if limiter is not None:
            if self._owed:
                tokens, self._owed = (tokens or 0) + self._owed, 0
            limiter.settle(admission, tokens)

    def _charge_owed(self) -> None:
        """The tokens of responses no `response.create` asked for, charged to the key's
        (and team's) limits as one request; when the limits refuse it (it happened
        anyway), they stay owed until the session's next settlement."""
        plan, limiter = limit_plan(self._gateway, self.caller), self._gateway.limiter
        if plan is None or limiter is None:
            return
        admitted = limiter.take(plan, 0)
        if not isinstance(admitted, Refusal):
            self._settle(admitted, 0)
