"""One request/response exchange: what the pipeline learned, and how to answer.

This is I/O edge code: it writes JSON bodies and SSE streams to aiohttp responses,
pacing them with the latency model and honouring a queued `cut` fault.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from azure_openai_proxy.emulator import wire_errors
from azure_openai_proxy.emulator.config import EmulatedDeployment, EmulatorConfig
from azure_openai_proxy.emulator.faults import Fault, FaultBook
from azure_openai_proxy.emulator.multipart import Part
from azure_openai_proxy.emulator.ratelimit import RateLimiter
from azure_openai_proxy.emulator.requestlog import RequestLog
from azure_openai_proxy.emulator.routing import Route
from azure_openai_proxy.emulator.storage import Stores
from azure_openai_proxy.emulator.versions import ApiVersion

_IMAGE_CAPACITY = 64


class ConnectionDropped(Exception):
    """The exchange ended by closing the socket; nothing more may be written."""


def new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


@dataclass
class EmulatorState:
    """Everything mutable in one emulator app, created by `create_emulator_app`."""

    config: EmulatorConfig
    limiter: RateLimiter
    faults: FaultBook = field(default_factory=FaultBook)
    log: RequestLog = field(default_factory=RequestLog)
    stores: Stores = field(default_factory=lambda: Stores(new_id, lambda: int(time.time())))
    images: dict[str, bytes] = field(default_factory=dict)

    def keep_image(self, data: bytes) -> str:
        image_id = new_id("img")
        self.images[image_id] = data
        while len(self.images) > _IMAGE_CAPACITY:
            del self.images[next(iter(self.images))]
        return image_id


@dataclass
class Exchange:
    """A data-plane request as the pipeline resolved it."""

    request: web.Request
    state: EmulatorState
    route: Route
    raw_body: bytes
    request_id: str
    headers: dict[str, str]
    version: ApiVersion | None = None
    deployment: EmulatedDeployment | None = None
    body: dict[str, Any] = field(default_factory=dict)
    form: dict[str, list[Part]] = field(default_factory=dict)
    cut_after: int | None = None
    usage_fault: str | None = None  # `empty_usage` / `null_usage` (faults.py)
    answered: int | None = None

    @property
    def config(self) -> EmulatorConfig:
        return self.state.config

    @property
    def created(self) -> int:
        return int(time.time())

    @property
    def token_delay(self) -> float:
        return self.config.token_delay_for(self.deployment)

    async def think(self, tokens: int) -> None:
        """Wait as long as the model would take for its first token and `tokens` more."""
        delay = self.config.ttft_for(self.deployment) + self.token_delay * tokens
        if delay > 0:
            await self._sleep(delay)

    async def pace(self, tokens: int) -> None:
        """Wait as long as the model takes for `tokens` more tokens."""
        if tokens and self.token_delay > 0:
            await self._sleep(self.token_delay * tokens)

    async def _sleep(self, seconds: float) -> None:
        if self.deployment is not None and self.deployment.precise_timing:
            await precise_sleep(seconds)
        else:
            await asyncio.sleep(seconds)

    def drop(self) -> ConnectionDropped:
        transport = self.request.transport
        if transport is not None:
            transport.abort()
        return ConnectionDropped()

    def json(self, body: Mapping[str, Any] | list[Any], status: int = 200) -> web.Response:
        if self.cut_after is not None:
            raise self.drop()
        if self.usage_fault is not None and isinstance(body, Mapping):
            body = _faulty_usage(body, self.usage_fault)
        return web.Response(
            body=orjson.dumps(body), status=status, headers=self.headers,
            content_type="application/json",
        )

    def raw(self, data: bytes | str, content_type: str, status: int = 200) -> web.Response:
        if self.cut_after is not None:
            raise self.drop()
        payload = data.encode() if isinstance(data, str) else data
        response = web.Response(body=payload, status=status, headers=self.headers)
        response.headers["Content-Type"] = content_type
        return response

    async def stream(self, frames: Iterable[tuple[bytes, int]]) -> web.StreamResponse:
        """Write SSE `frames` (bytes, tokens), after the time to first token, each
        after its tokens' delay; a `cut` fault closes the socket after K frames."""
        await self.think(0)
        response = web.StreamResponse(status=200, headers=self.headers)
        response.headers["Content-Type"] = "text/event-stream; charset=utf-8"
        response.headers["Cache-Control"] = "no-cache"
        await response.prepare(self.request)
        self.answered = 200
        for written, (frame, tokens) in enumerate(frames):
            if self.cut_after is not None and written >= self.cut_after:
                raise self.drop()
            if self.usage_fault is not None and frame.find(b'"usage"') != -1:
                frame = _faulty_frame(frame, self.usage_fault)
            if tokens and self.token_delay > 0:
                await self._sleep(self.token_delay * tokens)
            await response.write(frame)
        await response.write_eof()
        return response


# How long before a precise deadline the loop's own (1 ms-grained) timer hands over to
# polling the clock.
_SPIN_SECONDS = 0.002


async def precise_sleep(seconds: float) -> None:
    """Sleep `seconds` to within ~0.1 ms: the loop's timer for all but the last 2 ms,
    then yield to the loop until the clock says so (other requests still run)."""
    deadline = time.perf_counter() + seconds
    if seconds > _SPIN_SECONDS:
        await asyncio.sleep(seconds - _SPIN_SECONDS)
    while time.perf_counter() < deadline:
        await asyncio.sleep(0)


async def apply_fault(
    ex: Exchange, fault: Fault, too_many: Callable[[float], BaseException]
) -> None:
    """Act out an injected fault on this exchange. `too_many(retry_after)` is the 429 the
    surface answers (Azure OpenAI's and Foundry's differ in body and headers)."""
    if fault.kind == "429":
        raise too_many(fault.retry_after)
    if fault.kind == "500":
        raise wire_errors.server_error(ex.request_id)
    if fault.kind == "503":
        raise wire_errors.service_unavailable()
    if fault.kind == "hang":
        await asyncio.sleep(fault.seconds)
    elif fault.kind == "drop":
        raise ex.drop()
    elif fault.kind == "cut":
        ex.cut_after = fault.after_frames
    elif fault.kind in ("empty_usage", "null_usage"):
        ex.usage_fault = fault.kind


def _faulty_frame(frame: bytes, kind: str) -> bytes:
    """An SSE frame's usage (chat's usage frame; a Responses event's `response.usage`)
    as `_faulty_usage` makes it."""
    lines = []
    for line in frame.split(b"\n"):
        if line.startswith(b"data: {"):
            event = orjson.loads(line[6:])
            if isinstance(event.get("response"), dict):
                event["response"] = _faulty_usage(event["response"], kind)
            line = b"data: " + orjson.dumps(_faulty_usage(event, kind))
        lines.append(line)
    return b"\n".join(lines)


def _faulty_usage(body: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    """A JSON answer's `usage` as `{}` (`empty_usage`) or with each count null
    (`null_usage`); an answer without a usage object, as it is."""
    usage = body.get("usage")
    if not isinstance(usage, dict):
        return body
    return {**body, "usage": {} if kind == "empty_usage" else dict.fromkeys(usage)}
