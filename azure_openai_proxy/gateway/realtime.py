"""The Realtime API: a client's WebSocket bridged to Azure's.

    GET /v1/realtime?model=NAME                     (OpenAI clients; also /realtime,
    GET /openai/v1/realtime?model=NAME               /openai/v1/realtime)
    GET /openai/realtime?api-version=V&deployment=D (AzureOpenAI clients)

Opening a session (everything that may refuse it, before the handshake) is
`realtime_open.py`; the wire rules are plain functions in `realtime_wire.py`.

The `RealtimeSession` (the engine's handler for the connection) then relays messages
both ways as they come, one at a time (each send waits until the other side takes it: a
slow side slows the other, nothing piles up). Close codes and reasons pass through; a
client that leaves closes the upstream at once; an upstream that drops becomes an
`error` event, then a 1011 close. Each `response.done` is one usage record
(`on_response`: the access log and the ledger) with the session's key, model and
deployment; its cost goes to the budget. For a virtual key each `response.create` is
one request of its RPM and TPM, in flight until its `response.done` settles its tokens
with the usage (`realtime_limits.py`); a refused one never reaches Azure: the client gets a
`rate_limit_exceeded` `error` event, and the session goes on. A virtual key's session
follows the key's current version (`realtime_limits.SessionKey`, looked up on each
`response.create` and every half second, traffic or not): a key revoked, blocked or
expired meanwhile (or no longer allowed the session's model) ends it: the client gets an
`invalid_api_key` (or `model_not_found`) `error` event and a 1008 close, and Azure's side
is closed. A server shutting down (`going_away`) closes a session (1001) at once, or,
mid-response, once its `response.done` has been relayed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from azure_openai_proxy.auth import Caller
from azure_openai_proxy.errors import BudgetExhausted, GatewayError, KeyRateLimited
from azure_openai_proxy.gateway.balancer import Lease
from azure_openai_proxy.gateway.budgethold import PoolNames, reserve_budget, settle_budget
from azure_openai_proxy.gateway.governed import used_tokens
from azure_openai_proxy.gateway.pipeline import Gateway
from azure_openai_proxy.gateway.realtime_limits import KEY_CHECK_SECONDS, ResponseLimits, SessionKey
from azure_openai_proxy.gateway.realtime_tally import ResponseTally
from azure_openai_proxy.gateway.realtime_wire import (
    ResponseRequested,
    error_event,
    response_ended,
    response_requested,
)
from azure_openai_proxy.governance.keys import has_budget
from azure_openai_proxy.http.interface import WebSocket, WebSocketClosed
from azure_openai_proxy.observability.record import RequestRecord
from azure_openai_proxy.upstream.websocket import (
    UpstreamSocket,
    UpstreamSocketClosed,
    sendable_close,
)

__all__ = ["OnResponse", "RealtimeSession"]

_UPSTREAM_LOST = 1011
_GOING_AWAY = 1001
_POLICY_VIOLATION = 1008  # the close code of a session its key may no longer hold open
_UNCLAIMED_SECONDS = 10.0
_DEFAULT_SUBPROTOCOLS = ("realtime",)  # chosen when offered and Azure chose none

OnResponse = Callable[[RequestRecord], None]

log = logging.getLogger("azure_openai_proxy")


# -- relaying ------------------------------------------------------------------------------


class RealtimeSession:
    """An opened session: the upstream socket and what the session holds (a balancer
    lease; for a virtual key, a rate-limit admission per response being generated, and
    the key's version it goes by, `key`) until it ends. Called with the client's
    WebSocket (an `interface.WebSocketHandler`), it relays until either side ends, or
    its key no longer lets it go on."""

    def __init__(self, gateway: Gateway, caller: Caller, upstream: UpstreamSocket,
                 lease: Lease, record: RequestRecord, names: PoolNames,
                 on_response: OnResponse, on_end: OnResponse,
                 key: SessionKey | None = None) -> None:
        self._gateway = gateway
        self._upstream = upstream
        self._lease = lease
        self.record = record
        self._names = names
        self._on_response = on_response
        self._on_end = on_end
        self._opened = time.perf_counter()
        self._ended = False
        # The client's handshake answers with the subprotocol Azure accepted; when it
        # accepted none, with `realtime` if the client offered it (the engine reads this:
        # `interface.WebSocketHandler`): a browser (Chrome) fails a handshake that
        # offered subprotocols, as it always does (its key), and got none back.
        self.subprotocols = ((upstream.subprotocol,) if upstream.subprotocol
                             else _DEFAULT_SUBPROTOCOLS)
        # The engine runs the session right after its handshake; if the handshake fails
        # or the client is gone by then, nothing runs it: this ends it instead.
        self._unclaimed: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(
            _UNCLAIMED_SECONDS, self._abandon)
        self._out_of_budget = False
        self._series = gateway.balancer.metrics.realtime
        self._series.open += 1
        # Whether each `response.create` goes through a virtual key's limits; the
        # responses admitted and not yet done (the limits' own list, read on each message
        # from Azure).
        self._limited = caller.key is not None and gateway.limiter is not None
        self._limits = ResponseLimits(gateway, caller)
        self._running = self._limits.running
        self._tally = ResponseTally()  # the responses in progress: recorded if cut
        # A virtual key's session follows its key (`_follow`); `_ending` is the refusal
        # that ends it (and the client event it answers), once the key no longer lets
        # it go on.
        self._key = key
        self._ending: tuple[GatewayError, str | None] | None = None
        self._watched = self._limited or key is not None  # read for `response.create`s
        # With limits, messages to the client come from both relay tasks (a refused
        # `response.create` is answered from the client's side): one at a time, as the
        # engine's `send` waits for the client with one waiter. (Without, a lock on each
        # message relayed would cost about a microsecond for nothing.)
        self._to_client_lock = asyncio.Lock() if self._limited else None
        # A shutdown (`going_away`): the session closes (1001) once no response is in
        # progress, `_leaving` set when it is not at once.
        self._going_away = False
        self._leaving: asyncio.Future[None] | None = None

    async def __call__(self, client: WebSocket) -> None:
        if self._unclaimed is not None:
            self._unclaimed.cancel()
            self._unclaimed = None
        if self._ended:
            return
        self._leaving = leaving = asyncio.get_running_loop().create_future()
        if self._going_away:
            self.going_away()
        to_client = asyncio.ensure_future(self._to_client(client))
        to_upstream = asyncio.ensure_future(self._to_upstream(client))
        tasks = [to_client, to_upstream]
        if self._key is not None:
            # Traffic checks the key as it passes; a silent session is checked all the same.
            tasks.append(asyncio.ensure_future(self._watch()))
        try:
            await asyncio.wait([*tasks, leaving], return_when=asyncio.FIRST_COMPLETED)
            if self._ending is not None or leaving.done():
                # The key no longer lets the session go on: both relays stopped, then
                # the client told why and both sides closed.
                for task in tasks:
                    task.cancel()
                await asyncio.wait(tasks)
                if self._ending is not None:
                    await self._cut(client, *self._ending)
                else:
                    await self._leave(client)
            elif to_upstream.done() and not to_upstream.cancelled() and to_upstream.result():
                # Azure's side ended first: `_to_client` says how, to the client.
                await to_client
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                if task.done() and not task.cancelled() and task.exception() is not None:
                    log.error("realtime relay failed", exc_info=task.exception())
            self._upstream.abort()  # nothing, after a closing handshake
            self._end()

    async def _to_upstream(self, client: WebSocket) -> bool:
        """Client -> Azure. True when Azure's side closed; False when the client left
        (Azure's socket is then closed at once, with the client's code and reason), or
        when the key no longer lets the session go on (`_ending`). A virtual key's
        `response.create` goes only when its key is still valid and its limits let it."""
        upstream, series, key, tally = self._upstream, self._series, self._key, self._tally
        while True:
            try:
                message = await client.receive()
            except WebSocketClosed as closed:
                await upstream.close(closed.code or 1000, closed.reason)
                return False
            if self._watched:
                asked = response_requested(message)
                if key is not None and (asked is not None or key.due()) and not self._follow(
                        asked.event_id if asked is not None else None):
                    return False
                if asked is not None and self._limited:
                    try:
                        admitted = await self._admit(client, asked, message)
                    except WebSocketClosed as closed:  # its refusal found the client gone
                        await upstream.close(closed.code or 1000, closed.reason)
                        return False
                    if admitted is None:
                        continue
                    message = admitted
            try:
                await upstream.send(message)
            except UpstreamSocketClosed:
                return True
            series.to_azure += 1
            tally.sent(message)  # (the next response's input, if it is cut)

    async def _admit(self, client: WebSocket, asked: ResponseRequested,
                     message: str | bytes) -> str | bytes | None:
        """The message to send Azure for a `response.create` the key's limits let
        through (`ResponseLimits.admit`); or None, when it was answered with a
        `rate_limit_exceeded` error event. The session goes on either way."""
        admitted = self._limits.admit(asked, message)
        if not isinstance(admitted, KeyRateLimited):
            return admitted
        assert self._to_client_lock is not None  # (limited)
        async with self._to_client_lock:
            await client.send(error_event(admitted.message, "rate_limit_exceeded",
                                          "rate_limit_exceeded", asked.event_id))
        return None

    async def _to_client(self, client: WebSocket) -> None:
        """Azure -> client, noting each response's usage; Azure's close passed on, or
        its drop reported as an `error` event and a 1011 close."""
        upstream, series, tally = self._upstream, self._series, self._tally
        locked = self._to_client_lock
        lock = locked or contextlib.nullcontext()  # (for what is sent once)
        try:
            while True:
                try:
                    message = await upstream.receive()
                except UpstreamSocketClosed as closed:
                    async with lock:
                        if closed.dropped:
                            await client.send(error_event(
                                "The connection to Azure OpenAI was lost.",
                                "upstream_disconnected"))
                            await client.close(_UPSTREAM_LOST, "upstream connection lost")
                        else:
                            await client.close(sendable_close(closed.code), closed.reason)
                    return
                done = response_ended(message)
                if done is None:
                    tally.feed(message)
                    if self._running:
                        self._limits.refused_upstream(message)
                else:  # recorded before the client has it: a client gone by then (its
                    # send fails, or is cancelled) does not unmake it
                    tally.finished(done.response_id)
                    self._responded(done.usage)
                if locked is None:
                    await client.send(message)
                else:
                    async with locked:
                        await client.send(message)
                series.to_client += 1
                if done is not None:
                    if self._out_of_budget:
                        async with lock:
                            await client.send(error_event(
                                "This key's budget is spent; the session ends.",
                                "insufficient_quota", "insufficient_quota"))
                            await client.close(_POLICY_VIOLATION, "budget exhausted")
                        await upstream.close(1000, "")
                        return
                    if self._going_away and not tally.started:
                        # (its responses all done: the server's shutdown goes on)
                        async with lock:
                            await self._leave(client)
                        return
                key = self._key
                if key is not None and key.due() and not self._follow(None):
                    return
        except WebSocketClosed:
            return  # the client left: `_to_upstream` closes Azure's side

    async def _watch(self) -> None:
        """Ends when the key no longer lets the session go on (`_ending`), looked at
        every `KEY_CHECK_SECONDS` that no message either way looked at it: a session
        that sends and receives nothing is ended as soon as one that streams."""
        key = self._key
        assert key is not None
        while True:
            await asyncio.sleep(KEY_CHECK_SECONDS)
            if key.due() and not self._follow(None):
                return

    def _follow(self, event_id: str | None) -> bool:
        """The key looked up again (`SessionKey.check`): True when the session goes on,
        its next response by the key's current limits and team; False when the key no
        longer lets it (`_ending` then says why, and answers the client event
        `event_id`)."""
        key = self._key
        assert key is not None
        refusal = key.check()
        if refusal is not None:
            if self._ending is None:
                self._ending = (refusal, event_id)
            return False
        caller = key.caller
        if caller is not self._limits.caller:
            self._limits.caller = caller
            if caller.key is not None:
                self.record.team_id = caller.key.team_id
        return True

    async def _cut(self, client: WebSocket, refusal: GatewayError,
                   event_id: str | None) -> None:
        """The session ended by its key: the client gets the refusal as an `error` event
        and a 1008 close while Azure's side is closed (at once: a client that does not
        read must not keep Azure's socket open until its send timeout). What was used so
        far is recorded as when a client leaves (each `response.done` already was)."""
        self.record.error = type(refusal).__name__

        async def tell() -> None:
            with contextlib.suppress(WebSocketClosed):
                await client.send(error_event(refusal.message, refusal.code or "invalid_api_key",
                                              refusal.type_, event_id))
                await client.close(_POLICY_VIOLATION, "key no longer valid")

        await asyncio.gather(tell(), self._upstream.close(1000, ""))

    def going_away(self) -> None:
        """The server is shutting down: the session is closed (1001, both sides) now when
        no response is in progress, else as soon as its `response.done` is relayed."""
        self._going_away = True
        leaving = self._leaving
        if leaving is not None and not leaving.done() and not self._tally.started:
            leaving.set_result(None)

    async def _leave(self, client: WebSocket) -> None:
        await asyncio.gather(client.close(_GOING_AWAY, "server shutting down"),
                             self._upstream.close(1000, ""))

    def _responded(self, usage: dict[str, Any]) -> None:
        """One response done: its admission settled with its tokens; when Azure counted
        them, its record and its cost against the budget."""
        # A `response.done` without usage (a response `failed`, or `incomplete`, after
        # deltas were relayed) is no record, not the tally's estimate: Azure's Realtime API
        # follows OpenAI's, whose `response.usage` "will correspond to billing", so a
        # response Azure ended and gave no usage for it did not bill (as it bills no 5xx
        # on HTTP). An `incomplete` one (`max_output_tokens`, `content_filter`) comes with
        # its usage, and is recorded by it. (A response cut before its `response.done`
        # is estimated: Azure's account of it never comes.)
        tokens = None
        if usage:
            tokens = self._record_response(usage)
            self._limits.last_tokens = tokens or 0
        if self._limited:
            self._limits.responded(tokens)

    def _record_response(self, usage: dict[str, Any]) -> int | None:
        """One response's record and its cost against the budget; its tokens."""
        session = self.record
        record = self._gateway.new_record("GET")
        record.route, record.model, record.status, record.attempts = (
            "realtime", session.model, 200, 1)
        record.deployment, record.endpoint = session.deployment, session.endpoint
        record.upstream_ms, record.azure_request_id = session.upstream_ms, session.azure_request_id
        record.key_id, record.team_id, record.usage = session.key_id, session.team_id, usage
        record.total_ms = (time.perf_counter() - self._opened) * 1000
        caller, budgets = self._limits.caller, self._gateway.budgets
        if (budgets is not None and caller.key is not None
                and has_budget(caller.key, caller.team)):
            # (Spent before this response: the ledger still records it.)
            with contextlib.suppress(BudgetExhausted):
                settle_budget(budgets, reserve_budget(budgets, caller, None, self._names),
                              record)
            self._out_of_budget = budgets.check(caller.key, caller.team).exhausted is not None
        self._on_response(record)
        return used_tokens(record)

    def _abandon(self) -> None:
        """Never run: Azure's socket is dropped, and what the session held released."""
        self._unclaimed = None
        if not self._ended:
            self._upstream.abort()
            self._end()

    def _end(self) -> None:
        if self._ended:
            return
        self._ended = True
        self._series.open -= 1
        self._lease.done()
        try:
            for cut in self._tally.usages(self._limits.last_tokens):
                self._responded(cut)  # a response never done: recorded, estimated
        finally:
            # (Whatever recording a cut response raised: the session still ends, its
            # line logged and no longer among the app's open ones.)
            try:
                self._limits.end()  # responses that never finished: their reservations back
            finally:
                self.record.total_ms = (time.perf_counter() - self._opened) * 1000
                self._on_end(self.record)
