"""A small `http.interface.Application` for testing the HTTP engine on its own: a few
routes that echo, stream, fail and refuse, and what the handlers saw."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl

import orjson

from azure_openai_proxy.http.interface import Answer, HttpRequest, Reply

Route = Callable[[HttpRequest], Awaitable[Reply]]


class Events:
    """What the handlers saw, for the tests to check."""

    def __init__(self) -> None:
        self.cancelled = asyncio.Event()
        self.release = asyncio.Event()
        self.reads: list[bytes] = []
        self.body_read = asyncio.Event()  # `/chunks` has a piece of its body
        self.requests: list[tuple[str, str, bytes]] = []  # method, target, body
        self.calls: list[str] = []


def _error(status: int, message: str, code: str | None = None) -> Answer:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": None,
                      "code": code}}
    return Answer(status, {"content-type": "application/json"}, orjson.dumps(body))


class EngineTestApp:
    """Routes: `/echo` (GET, POST: the body back, with the path and `q` query value in
    headers), `/chunks` (the sizes of the body's pieces), `/reject` (401), `/stream`
    (a frame, then waits for `events.release`), `/crash` (an exception),
    `/prepare-then-fail` (starts a stream, then fails), anything else 404/405."""

    def __init__(self, events: Events, max_body: int = 1000) -> None:
        self.events = events
        self.max_body = max_body
        self.routes: dict[tuple[str, str], Route] = {
            ("POST", "/echo"): self.echo, ("GET", "/echo"): self.echo,
            ("POST", "/chunks"): self.chunks, ("POST", "/reject"): self.reject,
            ("GET", "/stream"): self.stream, ("GET", "/crash"): self.crash,
            ("GET", "/prepare-then-fail"): self.prepare_then_fail,
        }

    def __call__(self, request: HttpRequest) -> Awaitable[Reply]:
        return self._serve(request)

    async def _serve(self, request: HttpRequest) -> Reply:
        route = self.routes.get((request.method, request.path))
        if route is None:
            if any(path == request.path for _, path in self.routes):
                return _error(405, f"Method {request.method} is not allowed.", "method_not_allowed")
            return _error(404, f"Unknown request URL: {request.path}", "unknown_url")
        try:
            return await route(request)
        except RuntimeError as exc:
            if str(exc) == "upstream failed":
                return _error(502, "The upstream failed.")
            raise

    def refusal(self, status: int, message: str, code: str | None = None) -> Answer:
        return _error(status, message, code)

    async def startup(self) -> None:
        self.events.calls.append("startup")

    async def shutdown(self) -> None:
        self.events.calls.append("shutdown")

    async def cleanup(self) -> None:
        self.events.calls.append("cleanup")

    # -- routes -----------------------------------------------------------------------

    async def echo(self, request: HttpRequest) -> Reply:
        body = await request.read(self.max_body)
        self.events.reads.append(body)
        self.events.requests.append((request.method, request.target, body))
        query = dict(parse_qsl(request.query_string))
        return Answer(200, {"content-type": "application/octet-stream", "x-path": request.path,
                            "x-query": query.get("q", "")}, body)

    async def chunks(self, request: HttpRequest) -> Reply:
        sizes = []
        async for piece in request.body_chunks():
            self.events.reads.append(piece)  # as it arrives: tests wait on it
            self.events.body_read.set()
            sizes.append(len(piece))
        return Answer(200, {"content-type": "application/json"}, orjson.dumps(sizes))

    async def reject(self, request: HttpRequest) -> Reply:
        return Answer(401, {"content-type": "application/json"}, b'{"error":{}}')

    async def stream(self, request: HttpRequest) -> Reply:
        out = request.stream(200, {"content-type": "text/event-stream"})
        await out.write(b"data: first\n\n")
        try:
            await self.events.release.wait()
        except asyncio.CancelledError:
            self.events.cancelled.set()
            raise
        await out.write(b"data: second\n\n")
        await out.end()
        return out

    async def crash(self, request: HttpRequest) -> Reply:
        raise ValueError("secret detail")

    async def prepare_then_fail(self, request: HttpRequest) -> Reply:
        out = request.stream(200, {"content-type": "text/event-stream"})
        if "after=frame" in request.query_string:
            await out.write(b"data: first\n\n")
            await asyncio.sleep(0)
        raise RuntimeError("upstream failed")
