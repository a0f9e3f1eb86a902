"""The Realtime endpoint's WebSocket: the I/O around `realtime.RealtimeSession`.

The app's pipeline has authenticated the request, checked its api-version (dated
previews from 2024-10-01; v1) and bound the deployment named in the query
(`deployment=` on the dated API, `model=` on v1) before `connect` upgrades it, so a bad
key, version or deployment is an HTTP error before the handshake, as Azure answers.
Queued faults: `429`/`500`/`503`/`drop`/`hang` act before the handshake as on HTTP;
`cut` closes the socket after `after_frames` events of the first response (a drop
mid-response).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from azure_openai_proxy.emulator import wire_errors
from azure_openai_proxy.emulator.exchange import ConnectionDropped, Exchange, new_id
from azure_openai_proxy.emulator.realtime import RealtimeSession, ResponseEvents

__all__ = ["connect", "realtime_deployment"]

_MAX_MESSAGE = 16 * 1024 * 1024


def realtime_deployment(ex: Exchange) -> str:
    """The deployment a realtime URL names: `deployment=` (dated) or `model=` (v1)."""
    name = "model" if ex.route.v1 else "deployment"
    value = ex.request.query.get(name)
    if not value:
        raise wire_errors.invalid_request(f"Missing required parameter: '{name}'.", name,
                                          "missing_required_parameter")
    return value


async def connect(ex: Exchange) -> web.StreamResponse:
    """Upgrade to a WebSocket and play the conversation until the client leaves. The
    client's events are read while a response is being sent, as Azure does: a close
    ends the session at once, mid-response too. An out-of-band response is sent beside
    the rest (its own task), as Azure runs it."""
    socket = web.WebSocketResponse(protocols=("realtime",), max_msg_size=_MAX_MESSAGE,
                                   autoping=True)
    if not socket.can_prepare(ex.request).ok:
        raise wire_errors.bad_request("This endpoint takes a WebSocket (Upgrade: websocket).")
    assert ex.deployment is not None
    socket.headers.update(ex.headers)
    session = RealtimeSession("ga" if ex.route.v1 else "preview", ex.deployment.model,
                              ex.config.completion_tokens, new_id)
    await socket.prepare(ex.request)
    ex.answered = 101
    await _send(socket, ex, [(event, 0) for event in session.opened()])
    # Each message's answer is sent after the previous one's (a chain of tasks); an
    # out-of-band response's at once, beside them.
    sending: asyncio.Future[None] | None = None
    beside: set[asyncio.Future[None]] = set()
    dropped: list[bool] = []

    def sent(task: asyncio.Future[None]) -> None:
        beside.discard(task)
        if not task.cancelled() and isinstance(task.exception(), ConnectionDropped):
            dropped.append(True)  # a `cut` fault: the socket is gone

    try:
        async for message in socket:
            if message.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                break
            events = session.receive(message.data)
            if isinstance(events, ResponseEvents) and events.beside:
                task = asyncio.ensure_future(_after(None, socket, ex, events))
                beside.add(task)
            else:
                task = sending = asyncio.ensure_future(_after(sending, socket, ex, events))
            task.add_done_callback(sent)
    finally:
        for running in (sending, *beside):
            if running is not None and not running.done():
                running.cancel()
    await asyncio.sleep(0)  # (the callbacks of tasks just done run)
    if dropped:
        raise ConnectionDropped()
    return socket


async def _after(previous: asyncio.Future[None] | None, socket: web.WebSocketResponse,
                 ex: Exchange, events: Iterable[tuple[dict[str, Any], int]]) -> None:
    if previous is not None:
        await previous  # (its failure, a `cut`, ends the chain; cancelling this cancels it)
    try:
        await _send(socket, ex, events)
    except ConnectionResetError:
        return  # the client left mid-response


async def _send(socket: web.WebSocketResponse, ex: Exchange,
                events: Iterable[tuple[dict[str, Any], int]]) -> None:
    """Send `events`; a response (a generator: `receive` answers anything else with a
    list) waits for its first token first, and a `cut` fault may end it."""
    response = not isinstance(events, list)
    if response:
        await ex.think(0)
    for written, (event, tokens) in enumerate(events):
        if response and ex.cut_after is not None and written >= ex.cut_after:
            raise ex.drop()
        await ex.pace(tokens)
        await socket.send_str(orjson.dumps(event).decode())
